"""Training phases of the final run: Pix2Pix, then the plain U-Net, each resumable from its checkpoint.

A phase restores its checkpoint (weights, optimizer state, epoch count, history), trains the remaining
epochs with a checkpoint after each, saves its model as a .keras file and returns the predicted labels
of the validation split. Imported only when a run starts (it loads Keras).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from rich.console import Console

from marstune.models.metrics import iou_per_class, mean_scored
from marstune.tuning.config.spec import Spec
from marstune.tuning.constants import MODEL_KEYS
from marstune.tuning.errors import TuneError
from marstune.tuning.final.callbacks import EpochCheckpoint, EpochProgress
from marstune.tuning.final.files import Checkpoint, load_optimizers, save_optimizers
from marstune.tuning.outputs import replace_atomically
from marstune.tuning.train import recipe as training
from marstune.tuning.train.data import Prepared
from marstune.tuning.train.devices import DeviceSetup
from marstune.tuning.train.recipe import Recipe

PIX_LOGS = ("d_loss", "g_loss", "seg_loss", "adv_loss")


@dataclass(frozen=True)
class Phase:
    """What both phases share: the same data, config and recipe (epochs, batch size: the same budget)."""

    out: Path
    data: Prepared
    spec: Spec
    config: dict[str, Any]
    recipe: Recipe  # the search's training recipe, with the final run's epochs and batch size
    setup: DeviceSetup
    console: Console
    quiet: bool
    initial_weights: list[np.ndarray] | None = None  # --warm-start: the best trial's kept model


@dataclass(frozen=True)
class PhaseResult:
    key: str  # "pix2pix" or "unet" (metrics.json section)
    file: str  # the saved model, relative to the run folder
    history: list[dict[str, Any]]
    val_labels: np.ndarray  # (N_val, 64, 128) uint8 predictions of the saved model
    seconds: float


def _save_model(model: keras.Model, path: Path) -> None:
    replace_atomically(path, model.save)  # the temporary name keeps .keras: Keras insists on it


def evaluate_labels(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, np.ndarray]:
    """Validation mIoU over classes 1..4 (nan-safe: 0.0 when nothing is scored) and per-class IoU."""
    per_class = iou_per_class(truth, predicted)
    score = mean_scored(per_class)
    return (0.0 if math.isnan(score) else score), per_class


def _fit(p: Phase, model: keras.Model, label: str, keys: tuple[str, ...], ck: Checkpoint, **kw: Any) -> Any:
    """Train from the checkpoint's epoch to p.epochs; returns the history (restored + new epochs).

    `kw`: save(folder) writes the model files of a checkpoint; per_class() (optional) reads the
    validation per-class IoU of the epoch just finished.
    """
    state = ck.state()
    done, history = int(state["epoch"]), list(state["history"])
    if done >= p.recipe.epochs:
        return history
    # NaN is caught per epoch by EpochCheckpoint (never checkpointed), not by the per-batch
    # TerminateOnNaN, and progress is a line per epoch, not a per-batch bar: a per-batch hook makes Keras
    # copy every batch's logs to the host.
    checkpoint = EpochCheckpoint(ck, history, kw["save"], kw.get("per_class"))
    # The checkpoint first: an epoch's line is printed only once that epoch is saved, so an interrupt
    # right after the line still resumes after it.
    callbacks = [checkpoint, EpochProgress(p.console, label, p.recipe.epochs, keys, quiet=p.quiet)]
    if done:
        p.console.print(f"{label}: resuming after epoch {done} of {p.recipe.epochs}")
    training.fit(model, p.data, p.recipe, callbacks, initial_epoch=done)
    if checkpoint.failed_at is not None:
        raise TuneError(
            f"{label}: the loss became NaN at epoch {checkpoint.failed_at} (not checkpointed); lower the "
            "learning rate or --lambda and start a new --out"
        )
    return history


def _restore(ck: Checkpoint, model: keras.Model, optimizers: dict[str, Any]) -> None:
    folder = ck.folder()
    if folder is None:
        return
    model.load_weights(folder / "model.weights.h5")
    load_optimizers(folder / "optimizers.npz", optimizers)


def train_pix2pix(p: Phase, seg_weight: float) -> PhaseResult:
    from marstune.models.pix2pix import build_pix2pix

    ck = Checkpoint(p.out, "pix2pix")
    training.fresh_graph(p.setup, p.spec.train.seed + ck.state()["epoch"])  # a resumed run draws anew
    seg_loss = training.make_loss(p.recipe, p.data)  # the search's loss: one definition for every run
    model = build_pix2pix({k: p.config[k] for k in MODEL_KEYS}, seg_weight=seg_weight, seg_loss=seg_loss)
    model.compile(jit_compile=p.recipe.jit_compile)  # Adam 2e-4, beta1 0.5 for both players
    if p.initial_weights is not None and ck.folder() is None:  # a fresh run: the generator starts there
        model.generator.set_weights(p.initial_weights)
    optimizers = {"generator": model.g_optimizer, "discriminator": model.d_optimizer}
    _restore(ck, model, optimizers)

    def save(folder: Path) -> None:
        model.save_weights(folder / "model.weights.h5")
        save_optimizers(folder / "optimizers.npz", optimizers)

    started = time.perf_counter()
    history = _fit(p, model, "pix2pix", PIX_LOGS, ck, save=save, per_class=model.miou.per_class)
    seconds = time.perf_counter() - started
    _save_model(model.generator, p.out / "generator.keras")
    labels = training.predict_labels(model.generator, p.data.x_val, p.recipe.batch_size)
    return PhaseResult("pix2pix", "generator.keras", history, labels, seconds)


def train_unet(p: Phase) -> PhaseResult:
    """The plain U-Net as the search trained it (the same recipe), for the same epochs."""
    ck = Checkpoint(p.out, "unet")
    training.fresh_graph(p.setup, p.spec.train.seed + ck.state()["epoch"])
    model, miou = training.compile_unet(p.config, p.recipe, p.data)
    if p.initial_weights is not None and ck.folder() is None:  # the same start as the generator
        model.set_weights(p.initial_weights)
    model.optimizer.build(model.trainable_variables)  # slots must exist before saved state is loaded
    optimizers = {"unet": model.optimizer}
    _restore(ck, model, optimizers)

    def save(folder: Path) -> None:
        model.save_weights(folder / "model.weights.h5")
        save_optimizers(folder / "optimizers.npz", optimizers)

    started = time.perf_counter()
    history = _fit(p, model, "u-net", ("loss", "miou"), ck, save=save, per_class=miou.per_class)
    seconds = time.perf_counter() - started
    _save_model(model, p.out / "unet.keras")
    labels = training.predict_labels(model, p.data.x_val, p.recipe.batch_size)
    return PhaseResult("unet", "unet.keras", history, labels, seconds)
