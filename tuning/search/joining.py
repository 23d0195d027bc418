"""Joining a running study (`tune worker`): its spec comes from the study, its data must be the same.

A search-room module, not a study-room one: checking the data means loading it (train/), and the study
room sits below training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from marstune.tuning.config.spec import Spec, study_spec
from marstune.tuning.constants import METRIC_NAME
from marstune.tuning.errors import DataError
from marstune.tuning.study import lifecycle
from marstune.tuning.study.claim import StudyClaim
from marstune.tuning.study.storage import load_study

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage


def join(storage: RDBStorage, url: str, name: str, data_path: str | None = None) -> tuple[optuna.Study, Spec]:
    """Load a running study and its spec from the stored attributes (workers need no spec file).

    `data_path` points this worker at its own copy of the data; its fingerprint must match the study's.
    """
    study = load_study(storage, name)
    spec = study_spec(name, lifecycle.stored_spec_raw(storage, study._study_id), data_path)  # noqa: SLF001
    check_same_data(spec, study.user_attrs.get("data_fingerprint"))
    with StudyClaim(storage, url, name):
        study.set_metric_names([METRIC_NAME])  # studies made before the metric was named
        lifecycle.requeue_lost(study)
    return study, spec


def check_same_data(spec: Spec, fingerprint: str | None) -> None:
    """A worker training on other data than the study's would mix incomparable scores into it."""
    if spec.objective.kind != "unet" or not fingerprint:
        return
    from marstune.tuning.train.data import prepare_data

    found = prepare_data(spec).fingerprint
    if found != fingerprint:
        where = spec.data.path or "the built-in synthetic set"
        raise DataError(
            f"this worker's data ({where}, fingerprint {found}) is not the study's (fingerprint "
            f"{fingerprint}); pass --data with the file the study was started on"
        )
