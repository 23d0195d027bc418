"""Opening the one Optuna RDB storage every engine writes to: pooling, heartbeats, retries.

SQLite is the default (studies/tune.db); PostgreSQL (postgresql+psycopg://) serves many workers. Any
engine's trials land here, so status, export and the dashboard never care which engine ran. URLs and
their checks live in study/urls.py.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marstune.tuning.errors import StorageError
from marstune.tuning.study.urls import display_url, preflight, redact, resolve_url, sqlite_path

if TYPE_CHECKING:
    import optuna

HEARTBEAT_INTERVAL = 10  # seconds between a running trial's heartbeats
GRACE_PERIOD = 30  # a trial silent this long is failed and re-queued (3 missed heartbeats)
# Both may be overridden (whole seconds) for every process of a deployment, e.g. 1 / 3 in tests.
HEARTBEAT_ENV, GRACE_ENV = "TUNE_HEARTBEAT_INTERVAL", "TUNE_GRACE_PERIOD"
SQLITE_BUSY_TIMEOUT = 60  # seconds a writer waits for the lock instead of raising "database is locked"
# Per process: one connection for trials, one for the heartbeat thread, one spare (documented in README).
PG_POOL_SIZE = 2
PG_MAX_OVERFLOW = 1
# The claim's advisory lock borrows one of these, so a worker process never opens more than this many.
PG_CONNECTIONS_PER_WORKER = PG_POOL_SIZE + PG_MAX_OVERFLOW
# Processes opening a fresh database at once race to create its tables; the losers retry.
SCHEMA_RACE_RETRIES = 5
# CREATE TABLE lost (SQLite, PostgreSQL), or a one-row version stamp was inserted twice.
_SCHEMA_RACE_MARKS = ("already exists", "pg_type_typname_nsp_index", "alembic_version", "version_info")


def _prepare_sqlite(path: Path) -> None:
    path.parent.mkdir(exist_ok=True)
    # WAL lets readers (the dashboard, `tune status`) work while a writer commits; it persists in the file.
    with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def _seconds_from_env(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise StorageError(f"${name} must be whole seconds >= 1, got {text!r}; unset it or fix it")
    return int(text)


def heartbeat_interval() -> int:
    """Seconds between a running trial's heartbeats ($TUNE_HEARTBEAT_INTERVAL, default 10)."""
    return _seconds_from_env(HEARTBEAT_ENV, HEARTBEAT_INTERVAL)


def grace_period() -> int:
    """Seconds of silence after which a trial counts as dead ($TUNE_GRACE_PERIOD, default 30)."""
    grace, interval = _seconds_from_env(GRACE_ENV, GRACE_PERIOD), heartbeat_interval()
    if grace <= interval:
        raise StorageError(
            f"${GRACE_ENV} ({grace}s) must be longer than the heartbeat interval ({interval}s, "
            f"${HEARTBEAT_ENV}); a live trial would be failed between two heartbeats"
        )
    return grace


def engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}}
    return {
        "pool_size": PG_POOL_SIZE,
        "max_overflow": PG_MAX_OVERFLOW,
        "pool_pre_ping": True,
        "pool_recycle": 300,
    }


def open_storage(
    url: str | None, *, create: bool = False, heartbeat: bool = False
) -> optuna.storages.RDBStorage:
    """Open (and with create=True, initialise) an Optuna RDB storage; failures become one-line errors."""
    import optuna
    import sqlalchemy.exc

    url = resolve_url(url)
    preflight(url, create=create)
    path = sqlite_path(url)
    if path is not None:
        _prepare_sqlite(path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats and their retry callback are "experimental" in Optuna 5 but are what we rely on.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    hb: dict[str, Any] = {}
    if heartbeat:
        hb = {
            "heartbeat_interval": heartbeat_interval(),
            "grace_period": grace_period(),
            # Re-run a dead worker's trial once with its params; dying twice means the config kills workers.
            "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
        }
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), **hb)
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
            if attempt < SCHEMA_RACE_RETRIES and _lost_schema_race(exc):
                # Another process (a worker, the dashboard, `tune status`) created the tables between
                # Optuna's check and its CREATE; the next try finds them and goes on.
                time.sleep(0.05 * (attempt + 1) + random.random() * 0.1)
                continue
            reason = redact(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
            raise StorageError(f"cannot open storage {display_url(url)}: {reason}") from None
    raise AssertionError("unreachable")


def probe(url: str) -> None:
    """Connect once to a server database before any work (a wrong host or password is told first, in
    one line); SQLite files are checked by urls.preflight instead."""
    if sqlite_path(url) is not None:
        return
    import sqlalchemy
    import sqlalchemy.exc

    engine = sqlalchemy.create_engine(url, **engine_kwargs(url))
    try:
        with engine.connect():
            pass
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        reason = redact(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
        raise StorageError(f"cannot connect to storage {display_url(url)}: {reason}") from None
    finally:
        engine.dispose()


def _lost_schema_race(exc: BaseException) -> bool:
    """True for the errors two processes get when both create Optuna's tables in a fresh database."""
    text = str(exc)
    return any(mark in text for mark in _SCHEMA_RACE_MARKS)


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def load_study(storage: optuna.storages.BaseStorage, name: str, **kwargs: Any) -> optuna.Study:
    """Load an existing study; a missing one is an error listing the studies that do exist."""
    import optuna

    names = study_names(storage)
    if name not in names:
        known = ", ".join(names) if names else "none yet"
        raise StorageError(f"no study named {name!r} in this storage (studies: {known}); check --study")
    return optuna.load_study(study_name=name, storage=storage, **kwargs)
