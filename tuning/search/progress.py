"""Progress lines for long runs: trial k of N, epoch, current and best mIoU, elapsed and ETA."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from marstune.tuning.train.progress import clock as _clock
from marstune.tuning.train.progress import epoch_line


class Progress:
    def __init__(self, study: str, target: int, *, quiet: bool = False, epochs: int = 0) -> None:
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)  # logs: one line per event
        self.study, self.target, self.quiet, self.epochs = study, target, quiet, epochs
        self.started = time.monotonic()
        self.trial_started_at = self.started
        self.trials_done_here = 0
        self.done_in_study = 0
        self.best: float | None = None

    def note(self, text: str) -> None:
        """One line the user should see even with --quiet (a changed target, a stop)."""
        self.console.print(text)

    def _eta(self) -> str:
        if not self.trials_done_here:
            return "?"
        per_trial = (time.monotonic() - self.started) / self.trials_done_here
        return _clock(per_trial * max(0, self.target - self.done_in_study))

    def trial_started(self, number: int, done: int, params: dict[str, Any], best: float | None) -> None:
        self.done_in_study, self.best = done, best
        self.trial_started_at = time.monotonic()
        if not self.quiet:
            shown = " ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
            )
            self.console.print(f"[bold]trial {number}[/] ({done + 1} of {self.target}) {shown}")

    def epoch(self, number: int, epoch: int, value: float) -> None:
        if self.quiet:
            return
        if self.best is None or value > self.best:
            self.best = value
        fields = {"val mIoU": f"{value:.4f}", "best so far": f"{self.best:.4f}"}
        elapsed = time.monotonic() - self.started
        line = epoch_line(f"trial {number}", epoch + 1, self.epochs, fields, elapsed, self._eta())
        self.console.print(line)

    def trial_finished(self, number: int, state: str, value: float | None, reason: str = "") -> None:
        self.trials_done_here += 1
        if state != "failed":
            self.done_in_study += 1
        if value is not None and (self.best is None or value > self.best):
            self.best = value
        if self.quiet:
            return
        took = _clock(time.monotonic() - self.trial_started_at)
        shown = f"value {value:.4f}" if value is not None else reason or ""
        style = {"complete": "green", "pruned": "yellow", "failed": "red"}[state]
        self.console.print(f"  [{style}]trial {number} {state}[/] {shown} in {took}")
