"""Progress lines for long runs: trial k of N, epoch, current and best mIoU, elapsed and ETA."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from marstune.tuning.train.progress import clock as _clock
from marstune.tuning.train.progress import epoch_line


class Progress:
    """The clock is the run's, not the process's: `run_started` (epoch seconds) and the study's finished
    trials then (`done_at_start`) come from the command the user started, so elapsed time and ETA carry
    over recycled worker processes, and the pace counts every worker of the run."""

    def __init__(
        self,
        study: str,
        target: int,
        *,
        quiet: bool = False,
        epochs: int = 0,
        run_started: float | None = None,
        done_at_start: int | None = None,
    ) -> None:
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)  # logs: one line per event
        self.study, self.target, self.quiet, self.epochs = study, target, quiet, epochs
        self.run_started = time.time() if run_started is None else run_started
        self.done_at_start = done_at_start
        self.trial_started_at = time.monotonic()
        self.done_in_study = 0
        self.best: float | None = None

    def note(self, text: str) -> None:
        """One line the user should see even with --quiet (a changed target, a stop)."""
        self.console.print(text)

    def _elapsed(self) -> float:
        return time.time() - self.run_started

    def _eta(self) -> str:
        """The run's pace so far (finished trials of the study since the run started, by every worker)
        applied to the trials still missing; "?" until the run has finished one."""
        finished = self.done_in_study - (self.done_at_start or 0)
        if finished <= 0:
            return "?"
        return _clock(self._elapsed() / finished * max(0, self.target - self.done_in_study))

    def trial_started(self, number: int, done: int, params: dict[str, Any], best: float | None) -> None:
        if self.done_at_start is None:
            self.done_at_start = done  # the first trial of an in-process run: the study as it found it
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
        line = epoch_line(f"trial {number}", epoch + 1, self.epochs, fields, self._elapsed(), self._eta())
        self.console.print(line)

    def trial_finished(self, number: int, state: str, value: float | None, reason: str = "") -> None:
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
