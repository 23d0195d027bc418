"""Keras callbacks of the final run: a per-epoch progress bar with the current losses, and checkpoints.

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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from marstune.tuning.constants import per_class_dict
from marstune.tuning.final.files import Checkpoint


def _fmt(logs: dict[str, Any], keys: Sequence[str]) -> str:
    return "  ".join(f"{k} {float(logs[k]):.4g}" for k in keys if k in logs)


class EpochProgress(keras.callbacks.Callback):
    """One progress bar per epoch showing the running losses; a summary line when the epoch ends."""

    def __init__(
        self, console: Console, label: str, epochs: int, steps: int, keys: Sequence[str], quiet: bool = False
    ) -> None:
        super().__init__()
        self.console, self.label, self.epochs, self.steps, self.keys = console, label, epochs, steps, keys
        self.quiet = quiet
        self._bar: Progress | None = None
        self._task: Any = None
        self._started = 0.0
        self._epoch = ""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.monotonic()
        self._epoch = f"{epoch + 1}/{self.epochs}"
        if self.quiet or not self.console.is_terminal:
            return  # a bar in a log file is noise: the summary line below is enough
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(f"{self.label} epoch {self._epoch}", total=self.steps)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._bar is not None:
            self._bar.update(
                self._task,
                advance=1,
                description=f"{self.label} epoch {self._epoch}  {_fmt(logs or {}, self.keys)}",
            )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self.quiet:
            return
        logs = logs or {}
        shown = _fmt(logs, self.keys)
        val = logs.get("val_miou")
        self.console.print(
            f"{self.label} epoch {self._epoch}  {shown}"
            + (f"  [bold]val mIoU {float(val):.4f}[/]" if val is not None else "")
            + f"  {time.monotonic() - self._started:.1f}s"
        )

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


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
