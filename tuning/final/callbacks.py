"""Keras callbacks of the final run: a progress line per epoch (the kind `tune run` prints), and checkpoints.

A module of its own so that only training imports Keras (`tune --help` stays instant).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
from rich.console import Console

from marstune.tuning.constants import per_class_dict
from marstune.tuning.final.files import Checkpoint
from marstune.tuning.train.progress import epoch_line, eta


class EpochProgress(keras.callbacks.Callback):
    """After each epoch one line: the model, epoch k/N, that epoch's `keys` (losses), val mIoU, and the
    elapsed time and ETA of this model's training, in train/progress.py's format, the one `tune run`
    prints for its trials. Epoch hooks only: a per-batch hook would make Keras copy each batch's logs to
    the host (measured slower), so there is no live bar."""

    def __init__(
        self, console: Console, label: str, epochs: int, keys: Sequence[str], quiet: bool = False
    ) -> None:
        super().__init__()
        self.console, self.label, self.epochs, self.keys, self.quiet = console, label, epochs, keys, quiet
        self._started = 0.0
        self._first: int | None = None  # the first epoch of this process: a resumed run starts later

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._started, self._first = time.monotonic(), None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._first is None:
            self._first = epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.quiet:
            return
        logs = logs or {}
        fields = {k: f"{float(logs[k]):.4g}" for k in self.keys if k in logs}
        if "val_miou" in logs:
            fields["val mIoU"] = f"{float(logs['val_miou']):.4f}"
        elapsed = time.monotonic() - self._started
        done = epoch + 1 - (self._first if self._first is not None else epoch)  # epochs trained here
        left = eta(elapsed, done, self.epochs - epoch - 1)
        line = epoch_line(self.label, epoch + 1, self.epochs, fields, elapsed, left)
        self.console.print(line, soft_wrap=True, markup=False, highlight=False)  # one line, as in a log


class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch: append the logs to the history and save a complete checkpoint (see final/files.py).

    `save(folder)` writes the model files (weights and optimizer state); the history and the epoch count
    go into state.json, so a resumed run continues both the training and its curves.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        history: list[dict[str, Any]],
        save: Callable[[Path], None],
        per_class: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__()
        self.checkpoint, self.history, self.save, self.per_class = checkpoint, history, save, per_class
        self.failed_at: int | None = None  # the epoch whose losses were not finite
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        entry: dict[str, Any] = {"epoch": epoch + 1}
        for key, value in sorted((logs or {}).items()):
            entry[key] = float(value)
        if not all(math.isfinite(v) for v in entry.values()):
            # Never checkpoint NaN weights: --resume must restart from the last healthy epoch.
            self.failed_at = epoch + 1
            self.model.stop_training = True
            return
        if self.per_class is not None:
            # After validation the mIoU metric holds this epoch's validation confusion matrix.
            entry["val_per_class_iou"] = per_class_dict(self.per_class())
        # The optimizer's own step count: a resumed run continues it rather than starting again at 0.
        entry["optimizer_steps"] = int(self.model.optimizer.iterations)
        entry["seconds"] = round(time.monotonic() - self._started, 2)
        self.history.append(entry)
        folder = self.checkpoint.begin()
        self.save(folder)
        self.checkpoint.commit({"epoch": epoch + 1, "history": self.history})
