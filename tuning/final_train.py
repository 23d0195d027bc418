"""Training phases of the final run: Pix2Pix, then the plain U-Net, each resumable from its checkpoint.

A phase restores its checkpoint (weights, optimizer state, epoch count, history), trains the remaining
epochs with a checkpoint after each, saves its model as a .keras file and returns the predicted labels
of the validation split. Imported only when a run starts (it loads Keras).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from marstune.models.metrics import MeanIoU, iou_per_class, mean_scored
from marstune.tuning.errors import TuneError
from marstune.tuning.final_callbacks import EpochCheckpoint, EpochProgress
from marstune.tuning.final_io import Checkpoint, load_optimizers, save_optimizers
from rich.console import Console

MODEL_KEYS = ("base_filters", "levels", "kernel", "dropout", "activation")
PIX_LOGS = ("d_loss", "g_loss", "seg_loss", "adv_loss")


@dataclass(frozen=True)
class Phase:
    """What both phases share: the same data, config, epochs and batch size (the same budget)."""

    out: Path
    data: Any  # tuning.objective.Prepared
    spec: Any  # tuning.spec.Spec
    config: dict[str, Any]
    batch: int
    epochs: int
    setup: Any  # tuning.devices.DeviceSetup
    console: Console
    quiet: bool


@dataclass(frozen=True)
class PhaseResult:
    key: str  # "pix2pix" or "unet" (metrics.json section)
    file: str  # the saved model, relative to the run folder
    history: list[dict[str, Any]]
    val_labels: np.ndarray  # (N_val, 64, 128) uint8 predictions of the saved model
    seconds: float


def _datasets(p: Phase) -> tuple[Any, Any, int]:
    from marstune.data.augment import make_dataset

    seed, d = p.spec.train.seed, p.data
    train = make_dataset(
        d.x_train, d.y_train, p.batch, training=True, seed=seed, augment=p.spec.train.augment
    )
    val = make_dataset(d.x_val, d.y_val, p.batch, training=False, seed=seed)
    return train, val, math.ceil(len(d.x_train) / p.batch)


def _save_model(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.keras")  # Keras insists on the .keras suffix
    model.save(tmp)
    os.replace(tmp, path)


def _predict_labels(model: keras.Model, images: np.ndarray, batch: int) -> np.ndarray:
    probs = model.predict(images[..., None] / np.float32(255.0), batch_size=batch, verbose=0)
    return np.argmax(probs, axis=-1).astype(np.uint8)


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
    if done >= p.epochs:
        return history
    train, val, steps = _datasets(p)
    checkpoint = EpochCheckpoint(ck, history, kw["save"], kw.get("per_class"))
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        EpochProgress(p.console, label, p.epochs, steps, keys, quiet=p.quiet),
        checkpoint,
    ]
    if done:
        p.console.print(f"{label}: resuming after epoch {done} of {p.epochs}")
    model.fit(
        train,
        validation_data=val,
        initial_epoch=done,
        epochs=p.epochs,
        verbose=0,
        shuffle=False,  # the tf.data pipeline shuffles (seeded); fit cannot shuffle a Dataset
        callbacks=callbacks,
    )
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
    keras.utils.set_random_seed(p.spec.train.seed + ck.state()["epoch"])  # a resumed run draws anew
    model = build_pix2pix({k: p.config[k] for k in MODEL_KEYS}, seg_weight=seg_weight)
    model.compile(jit_compile=p.setup.jit_compile)  # Adam 2e-4, beta1 0.5 for both players
    optimizers = {"generator": model.g_optimizer, "discriminator": model.d_optimizer}
    _restore(ck, model, optimizers)

    def save(folder: Path) -> None:
        model.save_weights(folder / "model.weights.h5")
        save_optimizers(folder / "optimizers.npz", optimizers)

    started = time.perf_counter()
    history = _fit(p, model, "pix2pix", PIX_LOGS, ck, save=save, per_class=model.miou.per_class)
    seconds = time.perf_counter() - started
    _save_model(model.generator, p.out / "generator.keras")
    labels = _predict_labels(model.generator, p.data.x_val, p.batch)
    keras.backend.clear_session()  # the next phase starts from a clean graph
    return PhaseResult("pix2pix", "generator.keras", history, labels, seconds)


def train_unet(p: Phase) -> PhaseResult:
    """The plain U-Net as the search trained it (its optimizer and learning rate), for the same epochs."""
    from marstune.models.unet import build_unet

    ck = Checkpoint(p.out, "unet")
    keras.utils.set_random_seed(p.spec.train.seed + ck.state()["epoch"])
    model = build_unet({k: p.config[k] for k in MODEL_KEYS})
    lr = float(p.config.get("learning_rate", p.spec.train.learning_rate))
    optimizer = keras.optimizers.get({"class_name": p.spec.train.optimizer, "config": {"learning_rate": lr}})
    miou = MeanIoU()
    model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=[miou],
        jit_compile=p.setup.jit_compile,
    )
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
    labels = _predict_labels(model, p.data.x_val, p.batch)
    keras.backend.clear_session()  # the next phase starts from a clean graph
    return PhaseResult("unet", "unet.keras", history, labels, seconds)
