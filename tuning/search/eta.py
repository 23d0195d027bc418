"""The run's ETA and its live bar, shared by the in-process engines (search/progress.py) and the parent
of local worker processes (workers/pool.py), which feeds it the events its children send.

The estimate is made when something happens (a trial starts, an epoch ends, a trial ends): the epochs
still to train at the pace of the run so far (seconds per epoch trained, by every worker together). It
exists from the first epoch on. Between events it only counts down, so it never grows while nothing
changes; an event may correct it either way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from marstune.tuning.train.progress import clock

EVENT_MARK = "\x1etune-progress "  # a child's event line for its parent: never shown to a person
EVENTS_ENV = "TUNE_PROGRESS_EVENTS"  # set by the pool: its children send events besides their lines


@dataclass
class Eta:
    """Epochs trained and trials finished in this run, and the estimate made at the last event."""

    target: int
    epochs: int  # per trial, at most (pruning and early stopping end some sooner)
    run_started: float  # time.time() of the run's start
    done_at_start: int | None = None  # the study's finished trials when the run started
    now: Callable[[], float] = time.time
    done_in_study: int = 0
    epochs_trained: int = 0  # in this run, by every worker
    finished_epochs: int = 0  # epochs of the trials this run finished
    finished: int = 0  # trials this run finished (complete or pruned)
    running: dict[int, int] = field(default_factory=dict)  # trial -> epochs trained so far
    _estimate: tuple[float, float] | None = None  # (seconds left, when estimated)

    def trial_started(self, number: int, done: int) -> None:
        if self.done_at_start is None:
            self.done_at_start = done
        self.done_in_study = max(self.done_in_study, done)
        self.running[number] = 0
        self._estimate_now()

    def epoch(self, number: int, epoch: int) -> None:
        """Epoch `epoch` (0-based) of trial `number` ended."""
        before = self.running.get(number, 0)
        self.running[number] = max(before, epoch + 1)
        self.epochs_trained += self.running[number] - before
        self._estimate_now()

    def trial_finished(self, number: int, counted: bool) -> None:
        """`counted`: complete or pruned (a failed trial does not bring the target closer)."""
        trained = self.running.pop(number, 0)
        if counted:
            self.done_in_study += 1
            self.finished += 1
            self.finished_epochs += trained
        self._estimate_now()

    def _estimate_now(self) -> None:
        if self.epochs_trained <= 0:
            return
        per_trial = self.finished_epochs / self.finished if self.finished else self.epochs
        left_trials = max(0, self.target - self.done_in_study)
        in_flight = sum(min(per_trial, e) for e in self.running.values())
        epochs_left = max(0.0, left_trials * per_trial - in_flight)
        pace = (self.now() - self.run_started) / self.epochs_trained
        self._estimate = (epochs_left * pace, self.now())

    def seconds_left(self) -> float | None:
        """None before the first epoch; else the last estimate counted down since it was made."""
        if self._estimate is None:
            return None
        left, at = self._estimate
        return max(0.0, left - (self.now() - at))

    def shown(self) -> str:
        left = self.seconds_left()
        return "?" if left is None else clock(left)

    def apply(self, event: dict[str, Any]) -> None:
        """An event a child sent (see event_line)."""
        kind = event.get("kind")
        if kind == "start":
            self.trial_started(int(event["trial"]), int(event["done"]))
        elif kind == "epoch":
            self.epoch(int(event["trial"]), int(event["epoch"]))
        elif kind == "end":
            self.trial_finished(int(event["trial"]), bool(event["counted"]))


def event_line(**event: Any) -> str:
    return EVENT_MARK + json.dumps(event)


def parse_event(line: str) -> dict[str, Any] | None:
    """The event of a child's event line; None for any other line (those are shown)."""
    if not line.startswith(EVENT_MARK):
        return None
    try:
        found = json.loads(line[len(EVENT_MARK) :])
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


class _EtaColumn(ProgressColumn):
    def __init__(self, eta: Eta) -> None:
        super().__init__()
        self.eta = eta

    def render(self, task: Task) -> Text:
        return Text(f"ETA {self.eta.shown()}", style="progress.remaining")


class LiveBar:
    """A rich progress bar of the study's finished trials with the run's ETA, redrawn a few times a
    second; lines printed through `console` scroll above it. Only on a terminal (`LiveBar.wanted`)."""

    def __init__(self, console: Console, eta: Eta, study: str) -> None:
        self.eta, self.console = eta, console
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} trials"),
            TimeElapsedColumn(),
            _EtaColumn(eta),
            console=console,
            transient=True,  # the summary table follows; the bar's last frame would only repeat it
            refresh_per_second=2,
        )
        self._task = self._progress.add_task(f"study {study}", total=max(1, eta.target))

    @staticmethod
    def wanted(console: Console, quiet: bool) -> bool:
        return console.is_terminal and not quiet

    def __enter__(self) -> LiveBar:
        self._progress.start()
        self.update()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self) -> None:
        done = min(self.eta.done_in_study, self.eta.target)
        self._progress.update(self._task, completed=done, refresh=True)  # the new ETA shows now
