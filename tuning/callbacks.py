"""Keras callbacks of the objective (a module of its own so that only training imports Keras)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np


class EpochTracker(keras.callbacks.Callback):
    """Reports val mIoU each epoch, keeps the best and its per-class IoU, stops on pruning, patience or a
    NaN loss."""

    def __init__(self, report: Callable[[int, float], bool], miou: Any, patience: int) -> None:
        super().__init__()
        self.report, self.miou, self.patience = report, miou, patience
        self.best: float | None = None
        self.best_per_class: np.ndarray | None = None
        self.pruned_at: int | None = None
        self.flat = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not math.isfinite(float((logs or {}).get("loss", 0.0))):
            # Diverged: stop here. Checked per epoch, not per batch as keras.callbacks.TerminateOnNaN
            # does: any per-batch hook makes Keras copy every batch's logs to the host synchronously.
            self.model.stop_training = True
            return
        value = float((logs or {}).get("val_miou", float("nan")))
        if not math.isfinite(value):
            return
        if self.best is None or value > self.best:
            self.best, self.flat = value, 0
            # After validation the metric holds the validation confusion matrix of this epoch.
            self.best_per_class = np.asarray(self.miou.per_class(), dtype=float)
        else:
            self.flat += 1
        if self.report(epoch, value):
            self.pruned_at = epoch
            self.model.stop_training = True
        elif self.patience and self.flat >= self.patience:
            self.model.stop_training = True  # early stopping on validation mIoU
