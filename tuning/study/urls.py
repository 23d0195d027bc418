"""Storage URLs: the default, the checks made before anything is written, and how one is shown.

`display_url` is the only form in which a URL is printed, logged, stored or exported: every password
(in every form SQLAlchemy and libpq accept; see errors.redact) replaced by `***`. `resolve_url`
remembers the secrets of the URL in use, so a driver's message quoting one is masked too.
"""

from __future__ import annotations

import os
from pathlib import Path

from marstune.tuning.errors import StorageError, redact, remember_secrets

__all__ = ["redact"]  # study.urls is where URL code looks for it; errors.py owns it

DEFAULT_STORAGE = "sqlite:///studies/tune.db"
STORAGE_ENV = "TUNE_STORAGE"
SCHEMES = ("sqlite", "postgresql+psycopg", "mysql+pymysql")


def resolve_url(url: str | None) -> str:
    """--storage, else $TUNE_STORAGE, else the default SQLite file under studies/."""
    resolved = url or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE
    remember_secrets(resolved)
    return resolved


def display_url(url: str) -> str:
    """The URL as it may be printed, logged, stored or exported: never with its password."""
    return redact(url)


def sqlite_path(url: str) -> Path | None:
    """The file behind a sqlite:/// URL (None for other databases)."""
    if not url.startswith("sqlite:"):
        return None
    path = url.removeprefix("sqlite:///")
    if path in ("", ":memory:") or path == url:
        return None
    return Path(path.split("?", 1)[0])


def check_url(url: str) -> None:
    """Refuse a URL we cannot serve, before any connection: one line naming the fix."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    shown = display_url(url)
    if scheme == "postgresql" or scheme == "postgres":
        raise StorageError(
            f"storage URL {shown!r} names no driver; write postgresql+psycopg://... (psycopg 3)"
        )
    if scheme not in SCHEMES:
        raise StorageError(
            f"storage URL {shown!r} is not supported; use sqlite:///path/to/file.db or "
            "postgresql+psycopg://user@host/db"
        )
    if scheme == "sqlite":
        if sqlite_path(url) is None:
            raise StorageError(
                f"storage URL {shown!r} is an in-memory database: nothing would persist; "
                "use sqlite:///path/to/file.db"
            )
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:  # SQLAlchemy's own parser: what it cannot read, it would not connect to either
        parsed = make_url(url)
        parsed.port  # noqa: B018 - reading the port is what checks it
    except (ArgumentError, ValueError):
        raise StorageError(
            f"storage URL {shown!r} is malformed (host, port or brackets); "
            "e.g. postgresql+psycopg://tune@head:5432/tune"
        ) from None
    if "@" in (parsed.host or ""):  # the driver reads the password up to the first @: the rest is "host"
        raise StorageError(
            f"storage URL {shown!r} has an @ in its password; write each @ of a password as %40 "
            "(p@ss becomes p%40ss)"
        )
    if scheme.startswith("postgresql") and not (parsed.host or "host" in parsed.query):
        raise StorageError(f"storage URL {shown!r} names no host; e.g. postgresql+psycopg://tune@head/tune")


def preflight(url: str, *, create: bool) -> None:
    """Check a storage URL before anything is written (a bad one must leave no file behind)."""
    check_url(url)
    path = sqlite_path(url)
    if path is None:
        return
    if path.exists():
        _check_sqlite_file(path, writable=create)
        return
    if not create:
        raise StorageError(
            f"no study database at {path}; run `tune run` first or pass --storage / set ${STORAGE_ENV}"
        )
    parent = path.parent
    if parent == Path("studies") and not parent.exists():
        return  # the embedded default: made on first use
    if not parent.is_dir():
        raise StorageError(
            f"cannot create {path}: folder {parent} does not exist; create it or pass --storage"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StorageError(f"cannot create {path}: folder {parent} is not writable; pass --storage elsewhere")


def _check_sqlite_file(path: Path, *, writable: bool) -> None:
    from marstune.tuning.outputs import SQLITE_MAGIC

    if path.is_dir():
        raise StorageError(
            f"storage {path} is a directory, not a database file; pass --storage sqlite:///FILE.db"
        )
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise StorageError(f"cannot read storage file {path}: {exc.strerror}; check --storage") from None
    if head and head != SQLITE_MAGIC:
        raise StorageError(f"storage file {path} is not an SQLite database; check --storage")
    if writable and not os.access(path, os.W_OK):
        raise StorageError(f"storage file {path} is not writable; fix its permissions or pass --storage")
    # SQLite in WAL mode writes -wal/-shm files beside the database, even to read it.
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise StorageError(
            f"storage file {path} lies in a read-only folder ({path.parent}); SQLite needs to write its "
            "journal there: copy the database to a writable folder"
        )
