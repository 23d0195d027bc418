"""config -> data -> model -> fit -> metric: the only place data meets model.

Engines call `evaluate(config, spec, ctx)`; it never sees a trial object (Keras Tuner style: the thing
that trains never chooses). Each epoch it reports the validation mIoU through `ctx.report`, which
answers whether to stop early (pruning); the value is the best validation mIoU over the epochs.
"""

from __future__ import annotations

import gc
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from marstune.tuning.errors import TuneError, translate
from marstune.tuning.spec import Spec

Report = Callable[[int, float], bool]  # (epoch, val mIoU) -> prune now?


class Pruned(Exception):
    """The engine's pruner asked to stop this trial; engines turn it into their own pruned state."""


class TrialFailed(Exception):
    """This trial failed (NaN loss, a config that cannot be built); the study goes on."""


@dataclass
class TrialContext:
    number: int
    report: Report
    first_attempt: bool = True  # False when re-running a dead worker's trial
    threads: int = 0
    attrs: dict[str, Any] = field(default_factory=dict)  # filled by evaluate: stored as user attributes
    tensorboard_dir: str | None = None  # `tune run --tensorboard`: this trial logs to <dir>/trial-<n>/


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


_cache: dict[tuple[Any, ...], Prepared] = {}


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
    from marstune.data.clean import remove_contamination
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
            removed = len(report.removed)
        train_idx, val_idx = split_indices(len(data.images), spec.train.val_fraction, spec.train.seed)
    except Exception as exc:
        raise (translate(exc) or exc) from None
    prepared = Prepared(
        data.images[train_idx],
        data.labels[train_idx],
        data.images[val_idx],
        data.labels[val_idx],
        data.source,
        data.fingerprint,
        spec.data.path is None,
        removed,
    )
    _cache[key] = prepared
    return prepared


def evaluate(config: dict[str, Any], spec: Spec, ctx: TrialContext) -> float:
    """Run one trial; return the best validation mIoU. Raises Pruned, TrialFailed, or a TuneError."""
    if spec.objective.kind == "analytic":
        return _analytic(config, spec, ctx)
    return _train_unet(config, spec, ctx)


def _analytic(config: dict[str, Any], spec: Spec, ctx: TrialContext) -> float:
    """A closed-form stand-in for training, with the same reporting: tests and benchmarks of the service."""
    if ctx.number in spec.objective.fail_trials and ctx.first_attempt:
        raise RuntimeError(f"injected failure of trial {ctx.number} (objective.fail_trials)")
    act = {"relu": 0.0, "elu": 0.01, "gelu": 0.02, "swish": 0.03}.get(str(config.get("activation")), 0.05)
    target = (
        0.8
        - 0.05 * abs(math.log2(config["base_filters"] / 16))
        - 0.05 * abs(config["levels"] - 4)
        - 0.02 * (config["kernel"] != 3)
        - 0.2 * abs(config["dropout"] - 0.2)
        - act
    )
    tau, noise = 2.0, spec.objective.noise
    epoch_rng = random.Random(f"{spec.train.seed}:{ctx.number}")  # str seeds are stable across processes
    if noise:
        # A fixed task (independent of the seed): each cell of the discrete params deviates from the
        # closed form, and bigger models learn slower, so early epochs rank configs imperfectly.
        cell = (config["base_filters"], config["levels"], config["kernel"], config["activation"])
        cell_rng = random.Random(repr(cell))
        target += 2 * noise * cell_rng.gauss(0.0, 1.0)
        tau = 1.5 + 0.2 * (config["levels"] - 2) + 0.1 * math.log2(config["base_filters"] / 8)
        tau += 0.5 * cell_rng.random()
    best, flat, epoch = -math.inf, 0, -1
    for epoch in range(spec.train.epochs):  # after the loop, epoch + 1 = epochs run (patience may stop it)
        if spec.objective.sleep:
            time.sleep(spec.objective.sleep)
        value = target * (1 - math.exp(-(epoch + 1) / tau))
        if noise:
            value = min(1.0, max(0.0, value + epoch_rng.gauss(0.0, noise)))
        best, flat = (value, 0) if value > best else (best, flat + 1)
        if ctx.report(epoch, value):
            raise Pruned(f"pruned at epoch {epoch + 1}")
        if spec.train.patience and flat >= spec.train.patience:
            break  # early stopping, as the U-Net objective does
    ctx.attrs.update({"epochs_run": epoch + 1, "device": "none (analytic)"})
    return best


def _optimizer(name: str, lr: float) -> Any:
    import keras

    return {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }[name](learning_rate=lr)


def _tensorboard(ctx: TrialContext) -> list[Any]:
    """Per-epoch scalars (loss, mIoU, validation) for TensorBoard; no graph or profile: small and fast."""
    if not ctx.tensorboard_dir:
        return []
    import keras

    log_dir = f"{ctx.tensorboard_dir}/trial-{ctx.number}"
    return [keras.callbacks.TensorBoard(log_dir, write_graph=False, profile_batch=0, update_freq="epoch")]


def _train_unet(config: dict[str, Any], spec: Spec, ctx: TrialContext) -> float:
    from marstune.tuning.callbacks import EpochTracker
    from marstune.tuning.devices import configure

    setup = configure(ctx.threads or spec.train.threads, spec.train.mixed_precision)
    import keras
    from marstune.data.augment import make_dataset
    from marstune.models.metrics import MeanIoU
    from marstune.models.unet import build_unet

    data = prepare_data(spec)
    keras.backend.clear_session()  # no graph/state growth from one trial to the next
    keras.mixed_precision.set_global_policy(setup.precision)  # clear_session reset it to float32
    gc.collect()
    keras.utils.set_random_seed(spec.train.seed + ctx.number)
    batch = int(config.get("batch_size", spec.train.batch_size))
    try:
        model = build_unet(
            {k: config[k] for k in ("base_filters", "levels", "kernel", "dropout", "activation")}
        )
    except Exception as exc:
        raise (translate(exc) or exc) from None
    miou = MeanIoU()
    model.compile(
        optimizer=_optimizer(
            spec.train.optimizer, float(config.get("learning_rate", spec.train.learning_rate))
        ),
        loss="sparse_categorical_crossentropy",
        metrics=[miou],
        jit_compile=setup.jit_compile,
    )
    train = make_dataset(
        data.x_train, data.y_train, batch, training=True, seed=spec.train.seed, augment=spec.train.augment
    )
    val = make_dataset(data.x_val, data.y_val, batch, training=False, seed=spec.train.seed)
    tracker = EpochTracker(ctx.report, miou, spec.train.patience, items=len(data.x_train))
    started = time.perf_counter()
    history = model.fit(
        train,
        validation_data=val,
        epochs=spec.train.epochs,
        verbose=0,
        shuffle=False,  # the tf.data pipeline shuffles (seeded); fit cannot shuffle a Dataset
        callbacks=[tracker, *_tensorboard(ctx)],  # no per-batch callback: see EpochTracker
    )
    seconds = time.perf_counter() - started
    epochs_run = len(history.history.get("loss", []))
    losses = history.history.get("loss", [])
    ctx.attrs.update(
        {
            "epochs_run": epochs_run,
            "train_seconds": round(seconds, 3),
            "images_per_second": round(epochs_run * len(data.x_train) / seconds, 2) if seconds else 0.0,
            "device": setup.device,
            "precision": setup.precision,
            "params": int(model.count_params()),
            "epoch_log": tracker.log,
        }
    )
    if tracker.best_per_class is not None:
        ctx.attrs["per_class_iou"] = {
            name: (None if math.isnan(v) else round(float(v), 4))
            for name, v in zip(
                ("background", "soil", "bedrock", "sand", "big_rock"), tracker.best_per_class, strict=True
            )
        }
    del model
    if any(not math.isfinite(v) for v in losses):
        raise TrialFailed(f"loss became NaN at epoch {len(losses)}; try a lower learning_rate")
    if tracker.pruned_at is not None:
        raise Pruned(f"pruned at epoch {tracker.pruned_at + 1}")
    if tracker.best is None:
        raise TuneError("training produced no validation mIoU; check train.val_fraction and the data size")
    return tracker.best
