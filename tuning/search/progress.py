"""Progress lines for long runs: trial k of N, epoch, current and best mIoU, elapsed and ETA."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from rich.console import Console

from marstune.tuning.search.eta import EVENTS_ENV, Eta, LiveBar, event_line
from marstune.tuning.train.progress import clock as _clock
from marstune.tuning.train.progress import epoch_line


class Progress:
    """The clock is the run's, not the process's: `run_started` (epoch seconds) and the study's finished
    trials then (`done_at_start`) come from the command the user started, so elapsed time and ETA carry
    over recycled worker processes, and the pace counts every worker of the run.

    On a terminal (and not --quiet) a live bar with the ETA stays below the lines; in a worker process
    of the local pool ($TUNE_PROGRESS_EVENTS) each event also goes to the parent, which draws the bar.
    Call close() when the run ends (the bar is removed before the summary is printed)."""

    def __init__(
        self,
        study: str,
        target: int,
        *,
        quiet: bool = False,
        epochs: int = 0,
        run_started: float | None = None,
        done_at_start: int | None = None,
        console: Console | None = None,
    ) -> None:
        # logs: one line per event
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.study, self.target, self.quiet, self.epochs = study, target, quiet, epochs
        self.run_started = time.time() if run_started is None else run_started
        self.eta = Eta(target, epochs, self.run_started, done_at_start)
        self.trial_started_at = time.monotonic()
        self.best: float | None = None
        self._events = os.environ.get(EVENTS_ENV) == "1"
        self._bar: LiveBar | None = None

    @property
    def done_in_study(self) -> int:
        return self.eta.done_in_study

    def note(self, text: str) -> None:
        """One line the user should see even with --quiet (a changed target, a stop)."""
        self.console.print(text)

    def _elapsed(self) -> float:
        return time.time() - self.run_started

    def _send(self, **event: Any) -> None:
        if self._events:
            print(event_line(**event), file=sys.stderr, flush=True)

    def _redraw(self) -> None:
        if self._bar is None and LiveBar.wanted(self.console, self.quiet):
            self._bar = LiveBar(self.console, self.eta, self.study).__enter__()
        if self._bar is not None:
            self._bar.update()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None

    def trial_started(self, number: int, done: int, params: dict[str, Any], best: float | None) -> None:
        self.eta.trial_started(number, done)
        self._send(kind="start", trial=number, done=done)
        self._redraw()  # before the line: a line printed under a live bar redraws the bar as it was
        self.best = best
        self.trial_started_at = time.monotonic()
        if not self.quiet:
            shown = " ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
            )
            self.console.print(f"[bold]trial {number}[/] ({done + 1} of {self.target}) {shown}")

    def epoch(self, number: int, epoch: int, value: float) -> None:
        self.eta.epoch(number, epoch)
        self._send(kind="epoch", trial=number, epoch=epoch)
        self._redraw()
        if self.quiet:
            return
        if self.best is None or value > self.best:
            self.best = value
        fields = {"val mIoU": f"{value:.4f}", "best so far": f"{self.best:.4f}"}
        line = epoch_line(
            f"trial {number}", epoch + 1, self.epochs, fields, self._elapsed(), self.eta.shown()
        )
        self.console.print(line)

    def trial_finished(self, number: int, state: str, value: float | None, reason: str = "") -> None:
        self.eta.trial_finished(number, counted=state != "failed")
        self._send(kind="end", trial=number, counted=state != "failed")
        self._redraw()
        if value is not None and (self.best is None or value > self.best):
            self.best = value
        if self.quiet:
            return
        took = _clock(time.monotonic() - self.trial_started_at)
        shown = f"value {value:.4f}" if value is not None else reason or ""
        style = {"complete": "green", "pruned": "yellow", "failed": "red"}[state]
        self.console.print(f"  [{style}]trial {number} {state}[/] {shown} in {took}")
