"""config -> data -> model -> fit -> metric: the only place data meets model.

Engines call `evaluate(config, spec, ctx)`; it never sees a trial object (Keras Tuner style: the thing
that trains never chooses). Each epoch it reports the validation mIoU through `ctx.report`, which
answers whether to stop early (pruning); the value is the best validation mIoU over the epochs.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marstune.tuning.config.spec import Spec
from marstune.tuning.constants import per_class_dict
from marstune.tuning.errors import Pruned, TrialFailed, TuneError

if TYPE_CHECKING:
    import keras

    from marstune.tuning.search.replay import Replay
    from marstune.tuning.search.table import TableReplay

Report = Callable[[int, float], bool]  # (epoch, val mIoU) -> prune now?
Keep = Callable[[float], Path | None]  # (best val mIoU) -> where to save the model, or None: not kept


@dataclass
class TrialContext:
    number: int
    report: Report
    first_attempt: bool = True  # False when re-running a dead worker's trial
    threads: int = 0
    attrs: dict[str, Any] = field(default_factory=dict)  # filled by evaluate: stored as user attributes
    tensorboard_dir: str | None = None  # `tune run --tensorboard`: this trial logs to <dir>/trial-<n>/
    keep: Keep | None = None  # asked once a trial completes: save its best-epoch model there?


def evaluate(config: dict[str, Any], spec: Spec, ctx: TrialContext) -> float:
    """Run one trial; return the best validation mIoU. Raises Pruned, TrialFailed, or a TuneError."""
    if spec.objective.kind == "analytic":
        return _analytic(config, spec, ctx)
    if spec.objective.kind == "replay":
        return _replay(config, spec, ctx)
    return _train_unet(config, spec, ctx)


def _analytic(config: dict[str, Any], spec: Spec, ctx: TrialContext) -> float:
    """A closed-form stand-in for training, with the same reporting: tests and benchmarks of the service."""
    injected = spec.objective.fail_trials
    if ctx.number in injected and (ctx.first_attempt or spec.objective.fail_every_attempt):
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

    def values() -> Iterator[float]:
        for epoch in range(spec.train.epochs):
            if spec.objective.sleep:
                time.sleep(spec.objective.sleep)
            value = target * (1 - math.exp(-(epoch + 1) / tau))
            yield min(1.0, max(0.0, value + epoch_rng.gauss(0.0, noise))) if noise else value

    best, epochs = _epochs(values(), spec, ctx)
    ctx.attrs.update({"epochs_run": epochs, "device": "none (analytic)"})
    return best


def _epochs(values: Iterable[float], spec: Spec, ctx: TrialContext) -> tuple[float, int]:
    """Report each epoch's value as training would: pruning and early stopping included.
    Returns the best value and the epochs run."""
    best, flat, epoch = -math.inf, 0, -1
    for epoch, value in enumerate(values):
        best, flat = (value, 0) if value > best else (best, flat + 1)
        if ctx.report(epoch, value):
            raise Pruned(f"pruned at epoch {epoch + 1}")
        if spec.train.patience and flat >= spec.train.patience:
            break  # early stopping, as the U-Net objective does
    return best, epoch + 1


@functools.cache
def _surrogate(path: str) -> Replay | TableReplay:
    from marstune.tuning.search.replay import Replay
    from marstune.tuning.search.table import TableReplay

    try:
        # A .csv is a recorded table, replayed as it is (no model in between); else a fitted surrogate.
        return TableReplay.from_csv(path) if path.lower().endswith(".csv") else Replay.from_json(path)
    except FileNotFoundError:
        raise TuneError(
            f"objective.surrogate: no file {path}; run `python -m bench surrogate` (or `python -m bench "
            "record` for a runs table) in the repository, or point objective.surrogate at a fitted "
            "surrogate's JSON or a recorded runs.csv"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:  # not JSON, ...
        if isinstance(exc, KeyError):
            reason = f"it has no {exc.args[0]!r} entry"
        else:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc).splitlines()[0]
        raise TuneError(f"objective.surrogate: {path} is not a replay surrogate ({reason})") from None


def check_replay(spec: Spec) -> Replay | TableReplay:
    """The surrogate of a replay spec, once everything the spec asks of it was checked: its file, the
    epochs, and every bound of the space (a value the curves never saw would be an extrapolation).
    `tune run` calls it before the study exists, so a bad spec writes nothing."""
    from marstune.tuning.search.replay import encode

    replay = _surrogate(spec.objective.surrogate)
    if spec.train.epochs > replay.epochs:
        raise TuneError(
            f"train.epochs is {spec.train.epochs} but the curves in {spec.objective.surrogate} were "
            f"recorded for {replay.epochs}; set train.epochs <= {replay.epochs}"
        )
    recorded = [f["param"] for f in replay.features]
    unknown = sorted(set(spec.space.params) - set(recorded))
    if unknown:
        raise TuneError(
            f"the space searches {unknown}, which the curves in {spec.objective.surrogate} were not "
            f"recorded over; a replayed space may search only {recorded}"
        )
    base = {name: spec.baseline.get(name) for name in recorded}
    try:
        encode(replay.features, base)
    except ValueError as exc:
        raise TuneError(f"baseline: {exc}") from None
    for name, param in spec.space.params.items():
        for value in param.extremes():
            try:
                encode(replay.features, {**base, name: value})
            except ValueError as exc:
                raise TuneError(f"space.{name}: {exc}") from None
    return replay


def _replay(config: dict[str, Any], spec: Spec, ctx: TrialContext) -> float:
    """Replay the recorded learning curves: the epochs a trained trial would have reported, each
    charged the CPU seconds it took when recorded (attribute `compute_seconds`); it takes microseconds."""
    replay = check_replay(spec)
    # Fixed settings outside the recording (the loss keys a configuration carries) are not replayed.
    params = {f["param"]: config[f["param"]] for f in replay.features if f["param"] in config}
    # A retrained configuration draws a fresh run, as training it again would.
    seed = spec.train.seed * 100_003 + ctx.number
    curve = replay.curve(params, seed=seed)
    from marstune.tuning.search.table import TableReplay

    if isinstance(replay, TableReplay):  # which recorded run was played: a benchmark scores what ran
        ctx.attrs["replayed"] = replay.identify(params, seed)
    log: list[dict[str, float]] = []

    def values() -> Iterator[float]:
        for value, seconds in curve[: spec.train.epochs]:
            log.append({"val_miou": round(value, 5), "cpu_seconds": round(seconds, 3)})
            # charged before the report: a pruned trial keeps what it cost
            ctx.attrs.update(
                {"epochs_run": len(log), "compute_seconds": round(sum(r["cpu_seconds"] for r in log), 3)}
            )
            yield value

    best, _ = _epochs(values(), spec, ctx)
    ctx.attrs.update({"device": "none (replay)", "epoch_log": log})
    return best


def _tensorboard(ctx: TrialContext) -> list[keras.callbacks.Callback]:
    """Per-epoch scalars (loss, mIoU, validation) for TensorBoard; no graph or profile: small and fast."""
    if not ctx.tensorboard_dir:
        return []
    import keras

    log_dir = f"{ctx.tensorboard_dir}/trial-{ctx.number}"
    return [keras.callbacks.TensorBoard(log_dir, write_graph=False, profile_batch=0, update_freq="epoch")]


PROBE_IMAGES = 4  # validation images whose model outputs are checked for NaN each epoch (a few ms)


def _train_unet(config: dict[str, Any], spec: Spec, ctx: TrialContext) -> float:
    import numpy as np

    from marstune.tuning.train.devices import configure

    setup = configure(ctx.threads or spec.train.threads, spec.train.mixed_precision)
    from marstune.tuning.train import recipe as training
    from marstune.tuning.train.callbacks import EpochTracker
    from marstune.tuning.train.data import prepare_data

    data = prepare_data(spec)
    recipe = training.Recipe.of(spec, config, setup)
    training.fresh_graph(setup, spec.train.seed + ctx.number)
    model, miou = training.compile_unet(config, recipe, data)
    probe = np.asarray(data.x_val[:PROBE_IMAGES], dtype="float32")[..., None] / np.float32(255.0)
    tracker = EpochTracker(
        ctx.report, miou, recipe.patience, items=len(data.x_train), keep_best=bool(ctx.keep), probe=probe
    )
    started = time.perf_counter()
    # No per-batch callback: see EpochTracker.
    history = training.fit(model, data, recipe, [tracker, *_tensorboard(ctx)])
    seconds = time.perf_counter() - started
    losses = history.history.get("loss", [])
    epochs_run = len(losses)
    ctx.attrs.update(
        {
            "epochs_run": epochs_run,
            "train_seconds": round(seconds, 3),
            "images_per_second": round(epochs_run * len(data.x_train) / seconds, 2) if seconds else 0.0,
            "device": setup.device,
            "precision": setup.precision,
            "params": int(model.count_params()),
            "loss": recipe.loss,
            "class_weights": training.class_weights_for(recipe, data),
            "epoch_log": tracker.log,
        }
    )
    if tracker.best_per_class is not None:
        ctx.attrs["per_class_iou"] = per_class_dict(tracker.best_per_class)
    finite = tracker.diverged is None
    if (
        ctx.keep
        and finite
        and tracker.pruned_at is None
        and tracker.best is not None
        and tracker.best_weights
    ):
        path = ctx.keep(tracker.best)
        if path is not None:  # among the study's top K: the best epoch's weights, as a .keras file
            training.save_inference_model(config, tracker.best_weights, path)
    del model
    if not finite:
        raise TrialFailed(f"{tracker.diverged} at epoch {len(losses)}; try a lower learning_rate")
    if tracker.pruned_at is not None:
        raise Pruned(f"pruned at epoch {tracker.pruned_at + 1}")
    if tracker.best is None:
        raise TuneError("training produced no validation mIoU; check train.val_fraction and the data size")
    return tracker.best
