"""Keras callbacks of the objective (a module of its own so that only training imports Keras)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

if TYPE_CHECKING:
    from marstune.models.metrics import MeanIoU


class EpochTracker(keras.callbacks.Callback):
    """Reports val mIoU each epoch, keeps the best and its per-class IoU, stops on pruning, patience or
    divergence. `log` holds one row per epoch (val mIoU, per-class IoU, seconds): the learning curve that
    the study stores and bench/curves/ replays.

    Divergence (`diverged` names what) is a non-finite training loss, validation loss, or model output
    on the `probe` images: the training loss alone misses weights that blow up in an epoch's last
    update (its loss was computed before it), whose NaN outputs argmax to background and score 0.0."""

    def __init__(
        self,
        report: Callable[[int, float], bool],
        miou: MeanIoU,
        patience: int,
        items: int = 0,
        keep_best: bool = False,
        probe: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.probe = probe  # a few validation images (B, H, W, 1) in 0..1: outputs checked each epoch
        self.diverged: str | None = None  # "loss", "validation loss" or "outputs", with how
        self.keep_best = keep_best  # hold the best epoch's weights (host copies) for a kept model
        self.best_weights: list[np.ndarray] | None = None
        self.report, self.miou, self.patience, self.items = report, miou, patience, items
        self.best: float | None = None
        self.best_per_class: np.ndarray | None = None
        self.pruned_at: int | None = None
        self.flat = 0
        self.log: list[dict[str, Any]] = []
        self._clock = (0.0, 0.0)
        self._train_seconds = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._clock = (time.perf_counter(), time.process_time())
        self._train_seconds = 0.0

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        # fit() validates after the training part of an epoch: what came before is training time.
        self._train_seconds = time.perf_counter() - self._clock[0]

    def _log_epoch(self, value: float, logs: dict[str, Any]) -> None:
        wall, cpu = time.perf_counter() - self._clock[0], time.process_time() - self._clock[1]
        train = self._train_seconds or wall
        per_class = np.asarray(self.miou.per_class(), dtype=float)
        self.log.append(
            {
                "val_miou": round(value, 5) if math.isfinite(value) else None,
                "loss": round(float(logs["loss"]), 5) if "loss" in logs else None,  # MLflow's per-epoch loss
                "val_loss": round(float(logs["val_loss"]), 5) if "val_loss" in logs else None,
                "per_class_iou": [None if math.isnan(v) else round(float(v), 5) for v in per_class],
                "seconds": round(wall, 3),  # training and validation of this epoch
                "cpu_seconds": round(cpu, 3),  # every thread of this process: stable under load
                "train_seconds": round(train, 3),
                "images_per_second": round(self.items / train, 2) if train and self.items else None,
            }
        )

    def _divergence(self, logs: dict[str, Any]) -> str | None:
        for key, what in (("loss", "loss"), ("val_loss", "validation loss")):
            value = float(logs.get(key, 0.0))
            if not math.isfinite(value):
                return f"{what} became {'NaN' if math.isnan(value) else 'infinite'}"
        if self.probe is not None:
            outputs = np.asarray(self.model(self.probe, training=False))
            if not np.isfinite(outputs).all():
                return "the model's outputs became NaN or infinite"
        return None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.diverged = self._divergence(logs or {})
        if self.diverged is not None:
            # Diverged: stop here. Checked per epoch, not per batch as keras.callbacks.TerminateOnNaN
            # does: any per-batch hook makes Keras copy every batch's logs to the host synchronously.
            self.model.stop_training = True
            return
        value = float((logs or {}).get("val_miou", float("nan")))
        self._log_epoch(value, logs or {})
        if not math.isfinite(value):
            return
        if self.best is None or value > self.best:
            self.best, self.flat = value, 0
            # After validation the metric holds the validation confusion matrix of this epoch.
            self.best_per_class = np.asarray(self.miou.per_class(), dtype=float)
            if self.keep_best:
                self.best_weights = self.model.get_weights()
        else:
            self.flat += 1
        if self.report(epoch, value):
            self.pruned_at = epoch
            self.model.stop_training = True
        elif self.patience and self.flat >= self.patience:
            self.model.stop_training = True  # early stopping on validation mIoU
