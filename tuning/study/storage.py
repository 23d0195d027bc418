"""Opening the one Optuna RDB storage every engine writes to: pooling, heartbeats, retries.

SQLite is the default (studies/tune.db); PostgreSQL (postgresql+psycopg://) serves many workers. Any
engine's trials land here, so status, export and the dashboard never care which engine ran. URLs and
their checks live in study/urls.py.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marstune.tuning.errors import DiskFull, StorageError, TuneError, is_disk_full
from marstune.tuning.study.disk import full_disk_line, mount_of
from marstune.tuning.study.outage import Retrier, passing_cause
from marstune.tuning.study.settings import (  # noqa: F401 - where callers have always found them
    GRACE_ENV,
    HEARTBEAT_ENV,
    PG_CONNECTIONS_PER_WORKER,
    PG_MAX_OVERFLOW,
    PG_POOL_SIZE,
    SQLITE_BUSY_TIMEOUT,
    engine_kwargs,
    grace_period,
    heartbeat_interval,
)
from marstune.tuning.study.urls import display_url, preflight, redact, resolve_url, sqlite_path

if TYPE_CHECKING:
    import optuna

# Processes opening a fresh database at once race to create its tables; the losers retry.
SCHEMA_RACE_RETRIES = 5
# Free bytes below which an SQLite "disk I/O error" on opening is the disk being full.
_NO_ROOM = 64 * 1024
# CREATE TABLE lost (SQLite, PostgreSQL), or a one-row version stamp was inserted twice.
_SCHEMA_RACE_MARKS = ("already exists", "pg_type_typname_nsp_index", "alembic_version", "version_info")


def _prepare_sqlite(path: Path, url: str) -> None:
    path.parent.mkdir(exist_ok=True)
    # WAL lets readers (the dashboard, `tune status`) work while a writer commits; it persists in the file.
    try:
        with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        raise _cannot_open(url, exc) from None


def _cannot_open(url: str, exc: BaseException) -> TuneError:
    """One line: a full disk named as such (SQLite says only "disk I/O error" when not a byte is left
    for its -shm file), anything else as the driver put it."""
    path = sqlite_path(url)
    if is_disk_full(exc) or (path is not None and shutil.disk_usage(mount_of(path)).free < _NO_ROOM):
        return DiskFull(full_disk_line(url, exc))
    reason = redact(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
    return StorageError(f"cannot open storage {display_url(url)}: {reason}")


def open_storage(
    url: str | None,
    *,
    create: bool = False,
    heartbeat: bool = False,
    retry: bool = False,
    read_only: bool = False,
) -> optuna.storages.RDBStorage:
    """Open (and with create=True, initialise) an Optuna RDB storage; failures become one-line errors.

    retry=True (workers): every call rides out an outage (study/resilient.py), opening included, and the
    storage judges others' heartbeats only while this process's own calls go through.
    read_only=True (reports): no WAL set-up and no schema written (a full disk is fine); the file is
    opened as usual, so the last connection to close removes SQLite's -wal and -shm files."""
    import optuna
    import sqlalchemy.exc

    url = resolve_url(url)
    preflight(url, create=create)
    path = sqlite_path(url)
    if path is not None and not read_only:
        _prepare_sqlite(path, url)
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
    retrier = Retrier(url) if retry else None
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            if read_only:  # the file as it is: no WAL pragma, no tables created (Optuna then only reads)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs(url), skip_table_creation=True
                )
            if retrier is None:
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), **hb)
            from marstune.tuning.study.resilient import ResilientStorage

            return retrier(ResilientStorage, url, retrier, engine_kwargs=engine_kwargs(url), **hb)
        except (
            sqlalchemy.exc.SQLAlchemyError,
            optuna.exceptions.StorageInternalError,  # Optuna's wrapping of a write that found no room
            ImportError,
            ValueError,
        ) as exc:
            if attempt < SCHEMA_RACE_RETRIES and _lost_schema_race(exc):
                # Another process (a worker, the dashboard, `tune status`) created the tables between
                # Optuna's check and its CREATE; the next try finds them and goes on.
                time.sleep(0.05 * (attempt + 1) + random.random() * 0.1)
                continue
            raise _cannot_open(url, exc) from None
    raise AssertionError("unreachable")


def probe(url: str) -> None:
    """Connect once to a server database before any work (a wrong host or password is told first, in
    one line; a server that is full or still starting is waited for); SQLite files are checked by
    urls.preflight instead."""
    if sqlite_path(url) is not None:
        return
    import sqlalchemy
    import sqlalchemy.exc

    engine = sqlalchemy.create_engine(url, **engine_kwargs(url))

    def connect() -> None:
        with engine.connect():
            pass

    try:
        Retrier(url, on_first_contact=True)(connect)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        reason = redact(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
        cause = passing_cause(exc)  # down or frozen: in our words, with the setting that bounds the wait
        reason = f"{cause}; check the host and port, and that the server runs" if cause else reason
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
