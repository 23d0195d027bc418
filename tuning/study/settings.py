"""Settings of every storage connection: pool sizes, and timings from the environment. One owner each.

Each timing may be overridden (whole seconds) for every process of a deployment; use the same values on every
node. A bad value is one line naming the variable and what it must be.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, urlsplit

from marstune.tuning.errors import StorageError

# Per process: one connection for trials, one for the heartbeat thread, one spare (documented in README).
PG_POOL_SIZE = 2
PG_MAX_OVERFLOW = 1
# The claim's advisory lock borrows one of these, so a worker process never opens more than this many.
PG_CONNECTIONS_PER_WORKER = PG_POOL_SIZE + PG_MAX_OVERFLOW
SQLITE_BUSY_TIMEOUT = 60  # seconds a writer waits for the lock instead of raising "database is locked"

HEARTBEAT_INTERVAL = 10  # seconds between a running trial's heartbeats
GRACE_PERIOD = 30  # a trial silent this long is failed and re-queued (3 missed heartbeats)
# A database restart or failover takes seconds to a minute or two; past this a worker gives up (exit 1).
DB_RETRY_SECONDS = 300
# A server that accepts TCP but never answers (a frozen postmaster) costs a command at most this long.
DB_CONNECT_TIMEOUT = 5
# No statement of ours takes more than a second or two; one running this long is stuck (a lock, a
# frozen backend): it is cancelled and, in a worker, retried. `tune status` gives up instead.
DB_STATEMENT_TIMEOUT = 30

HEARTBEAT_ENV, GRACE_ENV = "TUNE_HEARTBEAT_INTERVAL", "TUNE_GRACE_PERIOD"
RETRY_ENV = "TUNE_DB_RETRY_SECONDS"
CONNECT_TIMEOUT_ENV, STATEMENT_TIMEOUT_ENV = "TUNE_DB_CONNECT_TIMEOUT", "TUNE_DB_STATEMENT_TIMEOUT"


def seconds_from_env(name: str, default: int, *, minimum: int = 1) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < minimum:
        raise StorageError(f"${name} must be whole seconds >= {minimum}, got {text!r}; unset it or fix it")
    return int(text)


def heartbeat_interval() -> int:
    """Seconds between a running trial's heartbeats ($TUNE_HEARTBEAT_INTERVAL, default 10)."""
    return seconds_from_env(HEARTBEAT_ENV, HEARTBEAT_INTERVAL)


def grace_period() -> int:
    """Seconds of silence after which a trial counts as dead ($TUNE_GRACE_PERIOD, default 30)."""
    grace, interval = seconds_from_env(GRACE_ENV, GRACE_PERIOD), heartbeat_interval()
    if grace <= interval:
        raise StorageError(
            f"${GRACE_ENV} ({grace}s) must be longer than the heartbeat interval ({interval}s, "
            f"${HEARTBEAT_ENV}); a live trial would be failed between two heartbeats"
        )
    return grace


def retry_seconds() -> int:
    """How long a worker waits for an unreachable storage before it gives up ($TUNE_DB_RETRY_SECONDS;
    0 gives up at the first failure)."""
    return seconds_from_env(RETRY_ENV, DB_RETRY_SECONDS, minimum=0)


def connect_timeout() -> int:
    """Seconds to wait for a new connection's answer ($TUNE_DB_CONNECT_TIMEOUT, default 5)."""
    return seconds_from_env(CONNECT_TIMEOUT_ENV, DB_CONNECT_TIMEOUT)


def statement_timeout() -> int:
    """Seconds one statement may run before the server cancels it ($TUNE_DB_STATEMENT_TIMEOUT, 30)."""
    return seconds_from_env(STATEMENT_TIMEOUT_ENV, DB_STATEMENT_TIMEOUT)


def check_all() -> None:
    """Every setting at once, before a run starts: a typo is told before any worker waits on it."""
    grace_period()
    retry_seconds()
    connect_timeout()
    statement_timeout()


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine settings: the pool, and on a server a connect and a statement timeout on every
    connection, so a frozen server costs seconds, not forever (a value given in the URL wins)."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}}
    query = parse_qs(urlsplit(url).query)
    connect: dict[str, Any] = {}
    if "connect_timeout" not in query:
        connect["connect_timeout"] = connect_timeout()
    if url.startswith("postgresql"):
        # libpq's `options`: a server setting for every session; added to any the URL already gives.
        given = " ".join(query.get("options", []))
        if "statement_timeout" not in given:
            given = f"{given} -c statement_timeout={1000 * statement_timeout()}".strip()
        connect["options"] = given
    return {
        "pool_size": PG_POOL_SIZE,
        "max_overflow": PG_MAX_OVERFLOW,
        "pool_pre_ping": True,
        "pool_recycle": 300,
        "connect_args": connect,
    }
