"""A study-wide lock held while a worker decides to start a trial and asks for it.

Without it, two workers that both see 159 of 160 trials done would both start one and overshoot the
target. PostgreSQL: a session advisory lock; SQLite: an flock on a file beside the database.

A database restart ends the lock's session, and with it the lock: `release()` says whether the claim
was still held, so a worker that decided under a lost claim checks its decision again.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
from pathlib import Path
from typing import Any

from marstune.tuning.constants import CLAIM_LOCK_SUFFIX
from marstune.tuning.study.outage import passing_cause, retrier_of
from marstune.tuning.study.urls import sqlite_path


class StudyClaim:
    """Context manager; `release()` may be called early (from inside the trial) and again on exit."""

    def __init__(self, storage: Any, url: str, study: str) -> None:
        self._url, self._study, self._storage = url, study, storage
        self._held = False
        self._file: Any = None
        self._conn: Any = None
        self._thread_lock = threading.Lock()
        self._key = int.from_bytes(hashlib.sha256(f"tune:{study}".encode()).digest()[:8], "big", signed=True)

    def __enter__(self) -> StudyClaim:
        path = sqlite_path(self._url)
        if path is not None:
            self._file = open(Path(f"{path}{CLAIM_LOCK_SUFFIX}"), "a")  # noqa: SIM115 - closed in release()
            fcntl.flock(self._file, fcntl.LOCK_EX)
        elif self._url.startswith("postgresql"):
            self._conn = retrier_of(self._storage)(self._lock)  # a worker waits out an outage here too
        else:
            self._thread_lock.acquire()
        self._held = True
        return self

    def _lock(self) -> Any:
        import sqlalchemy

        rdb = getattr(self._storage, "_backend", self._storage)  # Optuna may wrap it in a cache
        conn = rdb.engine.connect()
        try:
            # Waiting for a peer's claim is not a stuck statement: no statement timeout for this one.
            conn.execute(sqlalchemy.text("SET LOCAL statement_timeout = 0"))
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
        except BaseException:
            conn.invalidate()  # closes the session for real: a lock granted as we gave up dies with it
            raise
        return conn

    def release(self) -> bool:
        """Let go of the claim; False when it was lost before (its database session ended)."""
        if not self._held:
            return True
        self._held = False
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        elif self._conn is not None:
            import sqlalchemy

            conn, self._conn = self._conn, None
            try:
                held = conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
                return bool(held.scalar())
            except Exception as exc:
                if passing_cause(exc) is None:
                    raise
                conn.invalidate()
                return False
            finally:
                conn.close()
        else:
            self._thread_lock.release()
        return True

    def __exit__(self, *exc: object) -> None:
        self.release()
