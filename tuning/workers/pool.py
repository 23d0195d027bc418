"""`tune run --workers K` / `tune worker --workers K`: K worker processes on this machine, one storage.

The parent starts K children (workers/child.py), each replaced by a fresh process when it exits to be
recycled or when it dies of a signal (killed by a person or by the kernel's out-of-memory killer: its
trial is re-run by heartbeat; at most MAX_DEATHS times a place, so a configuration that kills every
worker does not loop forever), forwards SIGINT/SIGTERM to them, reads their output (one prefixed
stream), waits for all of them, prints one summary and returns the exit code: 0 when every place
finished the study, 1 when one failed or died once too often, 128 + signal number when stopped by a
signal.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import IO

from rich.console import Console

from marstune.tuning.search.eta import EVENTS_ENV, Eta, LiveBar, parse_event
from marstune.tuning.train.devices import NATIVE_NOISE, verbose
from marstune.tuning.workers.child import RECYCLE_EXIT, ChildTask
from marstune.tuning.workers.plan import WorkerPlan, child_env

FORWARDED = (signal.SIGINT, signal.SIGTERM)
INTERRUPTED_CODES = tuple(128 + sig for sig in FORWARDED)  # what run_pool returns after a forwarded signal
MAX_DEATHS = 3  # a place whose worker died of a signal this many times gets no fresh one


class _Forwarder:
    """Signal handlers of the parent: pass SIGINT/SIGTERM on to the children, once."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.signum: int | None = None
        self._saved: dict[int, signal.Handlers | object] = {}

    def __enter__(self) -> _Forwarder:
        for sig in FORWARDED:
            self._saved[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handler(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            return  # the children are already stopping; a second signal must not cut their clean-up
        self.signum = signum
        live = [proc for proc in self.procs if proc.poll() is None]
        print(
            f"[tune] {signal.Signals(signum).name}: stopping {len(live)} workers", file=sys.stderr, flush=True
        )
        for proc in live:
            proc.send_signal(signum)

    def adopt(self, proc: subprocess.Popen[str]) -> None:
        """Track a child started after a signal may have arrived: it gets the signal too."""
        self.procs.append(proc)
        if self.signum is not None and proc.poll() is None:
            proc.send_signal(self.signum)


@dataclass
class Slot:
    """One worker place: its plan, the processes that held it in turn and how the last one exited."""

    plan: WorkerPlan
    pids: list[int] = field(default_factory=list)
    code: int | None = None
    deaths: list[str] = field(default_factory=list)  # "pid 123 (SIGKILL)" for each that died of a signal


class _Screen:
    """Where the children's lines go: stderr, or above the live bar (a terminal, not --quiet); their
    progress events (search/eta.py) feed the bar's ETA and are never shown."""

    def __init__(self, bar: LiveBar | None) -> None:
        self.bar = bar
        self._lock = threading.Lock()  # one pump thread per worker

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.out(text.rstrip("\n"), highlight=False)
        else:
            sys.stderr.write(text)
            sys.stderr.flush()

    def event(self, event: dict[str, object]) -> None:
        if self.bar is not None:
            with self._lock:
                self.bar.eta.apply(event)
                self.bar.update()


def _pump(stream: IO[str], prefix: str, screen: _Screen) -> None:
    """A child's output, prefixed, without TensorFlow's native start-up chatter (unless --verbose)."""
    keep_all = verbose()
    for line in stream:
        event = parse_event(line)
        if event is not None:
            screen.event(event)
        elif keep_all or not NATIVE_NOISE.match(line):
            screen.line(f"{prefix}{line}")
    stream.close()


def _keep_slot_working(
    slot: Slot, forward: _Forwarder, task: ChildTask, env: dict[str, str], prefix: str, screen: _Screen
) -> None:
    """Run the slot's worker; when it exits to be recycled or dies of a signal, start a fresh one."""
    while forward.signum is None:
        proc = subprocess.Popen(
            task.argv(),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the parent only; it forwards exactly one signal
        )
        forward.adopt(proc)
        slot.pids.append(proc.pid)
        assert proc.stdout is not None
        _pump(proc.stdout, prefix, screen)
        slot.code = proc.wait()
        if slot.code < 0 and forward.signum is None:
            name = _signal_name(-slot.code)
            slot.deaths.append(f"pid {proc.pid} ({name})")
            if len(slot.deaths) > MAX_DEATHS:
                _say(
                    screen,
                    prefix,
                    f"worker pid {proc.pid} died of {name}, {len(slot.deaths)} deaths: not replaced",
                )
                return
            _say(screen, prefix, f"worker pid {proc.pid} died of {name}; a fresh process takes its place")
            slot.code = RECYCLE_EXIT
            continue
        if slot.code != RECYCLE_EXIT:
            return
        if forward.signum is None:
            _say(screen, prefix, "recycled after its trials: a fresh process continues")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _say(screen: _Screen, prefix: str, text: str) -> None:
    screen.line(f"{prefix}[tune] {text}\n")


def run_pool(
    study: str,
    storage_url: str,
    plans: Sequence[WorkerPlan],
    task: ChildTask,
    *,
    target: int = 0,
    epochs: int = 0,
) -> tuple[int, list[Slot]]:
    """Run the children to the end (each replaced by a fresh process every `task.max_trials` trials);
    returns the exit code and the slots (who ran, how each ended) for the summary. On a terminal a live
    bar of the study's `target` trials (`epochs` each at most) shows the run's ETA."""
    slots = [Slot(plan) for plan in plans]
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    bar = None
    options = task.options
    if target and LiveBar.wanted(console, options.quiet):
        bar = LiveBar(console, Eta(target, epochs, options.run_started, options.done_at_start), study)
    screen = _Screen(bar)
    with _Forwarder() as forward, bar or nullcontext():
        threads = []
        for slot in slots:
            child = replace(task, options=replace(task.options, threads=slot.plan.threads))
            prefix = f"[w{slot.plan.index}] " if len(plans) > 1 else ""
            env = {**child_env(slot.plan, storage_url), EVENTS_ENV: "1"}
            args = (slot, forward, child, env, prefix, screen)
            threads.append(threading.Thread(target=_keep_slot_working, args=args, daemon=True))
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)  # short waits: signal handlers run in this (the main) thread
        interrupted = forward.signum
    if interrupted is not None:
        return 128 + interrupted, slots
    return (1 if any(slot.code != 0 for slot in slots) else 0), slots


def deadline_of(timeout: float | None) -> float | None:
    """The run's end in epoch seconds: search.timeout counts from the parent's start, not each child's."""
    return time.time() + timeout if timeout else None
