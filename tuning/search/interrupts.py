"""SIGINT/SIGTERM in a worker loop: stop cleanly, never halfway through a database write.

A KeyboardInterrupt raised at an arbitrary point can land inside `study.ask()` (a trial RUNNING with no
heartbeat yet, which no one would ever fail) or inside `tell` (a finished trial left RUNNING). So a
signal is only turned into `Interrupted` (a KeyboardInterrupt) at once inside `interruptible()` blocks
(training, waiting); elsewhere it is recorded and raised at the next `check()`, a point where nothing is
half written.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from marstune.tuning.errors import Interrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Optuna logs a failed trial with its traceback; for a trial we stopped on purpose that is noise (the
# CLI says "Interrupted: ..." in one line), so its records are dropped once a stop was asked for.
TRIAL_LOGGER = "optuna.study._optimize"


class StopRequest:
    """Context manager installing the handlers (main thread only; elsewhere it is inert)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._immediate = False
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._saved[sig] = signal.signal(sig, self._handler)
        logging.getLogger(TRIAL_LOGGER).addFilter(self._quiet_after_stop)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._saved.clear()
        logging.getLogger(TRIAL_LOGGER).removeFilter(self._quiet_after_stop)

    def _quiet_after_stop(self, record: logging.LogRecord) -> bool:
        return self.signum is None

    def _handler(self, signum: int, frame: object) -> None:
        self.signum = signum
        if self._immediate:
            self._immediate = False  # a second signal during the clean-up must not interrupt it
            raise Interrupted(signum)

    def check(self) -> None:
        """Raise Interrupted if a stop was asked for (call where nothing is half written)."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A block that may be cut short at any point (training a model, sleeping)."""
        self.check()
        self._immediate = True
        try:
            yield
        finally:
            self._immediate = False
