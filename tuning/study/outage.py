"""Riding out a storage outage: which errors are passing, how long to wait, what to say, and whether this
process's view of the clock can be trusted to judge other workers' heartbeats.

A restart, a failover or a full connection table makes every call fail for a few seconds; a frozen
server makes them hang. A worker retries each call with backoff for up to $TUNE_DB_RETRY_SECONDS,
says once, in one line, that it waits, and says when the storage is back. `Health` remembers when this
process last saw its own calls fail or hang: heartbeats that went stale while the database could not
take them prove nothing about their workers, so no trial is judged dead until this process's own calls
have gone through promptly for a whole grace period.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from marstune.tuning.errors import StorageError, TuneError
from marstune.tuning.study import settings
from marstune.tuning.study.urls import display_url, redact

T = TypeVar("T")

FIRST_DELAY, MAX_DELAY = 0.25, 2.0  # seconds between tries: doubling, so a restart costs ~1 s, not 30
TOO_MANY_CLIENTS = "too many clients: max_connections reached"
# Lower-case fragments of driver messages (psycopg, libpq, SQLite) -> the cause in our words.
_PASSING: tuple[tuple[str, str], ...] = (
    ("too many clients", TOO_MANY_CLIENTS),
    ("remaining connection slots are reserved", TOO_MANY_CLIENTS),
    ("connection refused", "connection refused: the server is down or restarting"),
    ("the database system is starting up", "the server is starting up"),
    ("the database system is shutting down", "the server is shutting down"),
    ("the database system is in recovery mode", "the server is recovering"),
    ("the database system is not yet accepting connections", "the server is starting up"),
    ("terminating connection due to administrator command", "the server closed the connection (restart)"),
    ("connection timeout expired", "no answer within {connect} s ($TUNE_DB_CONNECT_TIMEOUT)"),
    ("statement timeout", "a statement ran past {statement} s ($TUNE_DB_STATEMENT_TIMEOUT)"),
    ("server closed the connection", "the connection was lost"),
    ("consuming input failed", "the connection was lost"),
    ("connection is closed", "the connection was lost"),
    ("connection already closed", "the connection was lost"),
    ("could not receive data", "the connection was lost"),
    ("could not send data", "the connection was lost"),
    ("ssl syscall error", "the connection was lost"),
    ("no route to host", "no route to the server"),
    ("network is unreachable", "the network is unreachable"),
    ("temporary failure in name resolution", "name resolution failed"),
    ("database is locked", "the SQLite database stayed locked"),
)


def passing_cause(exc: BaseException) -> str | None:
    """Our words for an error that a retry may cure (a restart, a full connection table), else None.

    Optuna wraps the driver's error in StorageInternalError ("invalid data in the commit"), so the whole
    chain of causes is read."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None or isinstance(seen, TuneError):  # ours are final: a retry that gave up, say
            break
        text = str(seen).lower()
        for mark, cause in _PASSING:
            if mark in text:
                return cause.format(
                    connect=settings.connect_timeout(), statement=settings.statement_timeout()
                )
        if getattr(seen, "connection_invalidated", False):
            return "the connection was lost"
        seen = seen.__cause__ or seen.__context__
    return None


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Health:
    """When this process last saw a storage call fail or hang, and which calls are under way now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.trouble_at = time.monotonic()  # a process that just arrived has watched nothing yet
        self._in_flight: dict[int, float] = {}

    def trouble(self) -> None:
        with self._lock:
            self.trouble_at = time.monotonic()

    def watch(self, slow: float) -> _Watch:
        """A context manager around one storage call: a failure or a call longer than `slow` is trouble."""
        return _Watch(self, slow)

    def steady(self, grace: float, slow: float) -> bool:
        """True when every call of this process went through within `slow` seconds for the last `grace`
        seconds and none hangs now: only then are others' stale heartbeats evidence."""
        now = time.monotonic()
        with self._lock:
            hanging = any(now - started > slow for started in self._in_flight.values())
            return not hanging and now - self.trouble_at >= grace


class _Watch:
    def __init__(self, health: Health, slow: float) -> None:
        self.health, self.slow, self.started = health, slow, 0.0
        self.key = threading.get_ident()

    def __enter__(self) -> None:
        self.started = time.monotonic()
        with self.health._lock:  # noqa: SLF001 - one object's two halves
            self.health._in_flight[self.key] = self.started  # noqa: SLF001

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        with self.health._lock:  # noqa: SLF001
            self.health._in_flight.pop(self.key, None)  # noqa: SLF001
        if time.monotonic() - self.started > self.slow or (exc is not None and passing_cause(exc)):
            self.health.trouble()


HEALTH = Health()  # one per process: every storage, thread and claim of a worker reports here


def slow_call_seconds() -> float:
    """A call this slow could have kept a live worker's heartbeat from the storage for a grace period."""
    return float(max(1, settings.grace_period() - settings.heartbeat_interval()))


class Retrier:
    """Calls a storage function until it succeeds, the limit passes, or the error is not a passing one."""

    def __init__(self, url: str, limit: float | None = None, *, on_first_contact: bool = False) -> None:
        self.url, self.limit = url, settings.retry_seconds() if limit is None else limit
        self.slow = slow_call_seconds()
        # Before this process ever reached the storage, only a busy or booting server is waited for:
        # a wrong host or port is told at once, in one line.
        self.first_contact = on_first_contact
        self.stop_check: Callable[[], None] | None = None  # the engine's: a signal ends the wait
        self._announced: float | None = None
        self._lock = threading.Lock()

    def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        failing_since: float | None = None
        delay = FIRST_DELAY
        while True:
            try:
                with HEALTH.watch(self.slow):
                    result = fn(*args, **kwargs)
            except Exception as exc:
                cause = passing_cause(exc)
                if cause is None or (self.first_contact and not _while_booting(cause)):
                    raise
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since >= self.limit:
                    raise self.gave_up(cause) from None
                self._announce(cause)
                self._sleep(min(delay * (1 + random.random() / 4), self.limit - (now - failing_since)))
                delay = min(2 * delay, MAX_DELAY)
                continue
            self.first_contact = False
            if failing_since is not None:
                self._back()
            return result

    def gave_up(self, cause: str) -> StorageError:
        return StorageError(
            f"storage {display_url(self.url)} unreachable for {self.limit:g} s (${settings.RETRY_ENV}): "
            f"{redact(cause)}; a live worker re-runs this worker's trial after the grace period; "
            "run the same command again once the database is back"
        )

    def _announce(self, cause: str) -> None:
        with self._lock:
            if self._announced is not None:
                return
            self._announced = time.monotonic()
        shown, per_worker = display_url(self.url), settings.PG_CONNECTIONS_PER_WORKER
        if cause == TOO_MANY_CLIENTS:
            say(
                f"[tune] storage {shown} has no free connection ({cause}); waiting up to {self.limit:g} s. "
                f"Each worker opens up to {per_worker} connections: start fewer workers (--workers) or "
                "raise the server's max_connections"
            )
            return
        say(f"[tune] storage {shown} unreachable: {cause}; waiting up to {self.limit:g} s, then going on")

    def _back(self) -> None:
        with self._lock:
            since, self._announced = self._announced, None
        if since is not None:
            say(f"[tune] storage {display_url(self.url)} is back after {time.monotonic() - since:.1f} s")

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + max(0.0, seconds)
        while (left := end - time.monotonic()) > 0:
            if self.stop_check is not None:
                self.stop_check()
            time.sleep(min(left, 0.25))


def _while_booting(cause: str) -> bool:
    return cause == TOO_MANY_CLIENTS or "starting up" in cause or "shutting down" in cause


def retrier_of(storage: Any) -> Retrier | Callable[..., Any]:
    """The retry policy of a storage opened for a worker; a plain call for any other storage."""
    rdb = getattr(storage, "_backend", storage)  # Optuna wraps an RDBStorage in a cache
    found = getattr(rdb, "retrier", None)
    return found if isinstance(found, Retrier) else _plain


def _plain(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return fn(*args, **kwargs)
