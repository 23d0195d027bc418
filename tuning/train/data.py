"""The data a study trains on: loaded (or generated), cleaned and split once per process.

Every trial, the final run and the report call `prepare_data(spec)`; the arrays are held once per
process and reused by every trial (no reload, no copy per trial).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marstune.tuning.config.spec import Spec
from marstune.tuning.errors import translate


@dataclass(frozen=True)
class Prepared:
    """Arrays held once per process and reused by every trial (no reload, no copy per trial)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    source: str
    fingerprint: str
    synthetic: bool
    removed: int
    class_frequencies: np.ndarray  # (5,) pixel shares of the training split: the loss's class weights


_cache: dict[tuple[object, ...], Prepared] = {}


def prepare_data(spec: Spec) -> Prepared:
    """Load (or generate), clean and split the data set of `spec`; cached per process."""
    key = (
        spec.data.path,
        spec.data.clean,
        spec.data.synthetic_items,
        spec.train.max_items,
        spec.train.val_fraction,
        spec.train.seed,
    )
    if key in _cache:
        return _cache[key]
    from marstune.data.clean import check_enough_left, remove_contamination
    from marstune.data.mars import load_npz, split_indices

    try:
        if spec.data.path:
            data = load_npz(spec.data.path, max_items=spec.train.max_items)
        else:
            from marstune.data.synthetic import synthetic_data

            n = spec.data.synthetic_items
            data = synthetic_data(n_train=min(n, spec.train.max_items or n), n_test=0, seed=0)
        removed = 0
        if spec.data.clean:
            data, report = remove_contamination(data)
            check_enough_left(report, data.source)
            removed = len(report.removed)
        train_idx, val_idx = split_indices(len(data.images), spec.train.val_fraction, spec.train.seed)
    except Exception as exc:
        raise (translate(exc) or exc) from None
    from marstune.data.frequencies import class_frequencies

    prepared = Prepared(
        data.images[train_idx],
        data.labels[train_idx],
        data.images[val_idx],
        data.labels[val_idx],
        data.source,
        data.fingerprint,
        spec.data.path is None,
        removed,
        class_frequencies(data.labels[train_idx]),
    )
    _cache[key] = prepared
    return prepared
