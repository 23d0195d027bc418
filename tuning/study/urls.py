"""Storage URLs: the default, the checks made before anything is written, and how one is shown.

`display_url` is the only form in which a URL is printed, logged, stored or exported: every password
(in every form SQLAlchemy and libpq accept; see errors.redact) replaced by `***`. `resolve_url`
remembers the secrets of the URL in use, so a driver's message quoting one is masked too.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from marstune.tuning.errors import StorageError, redact, remember_secrets
from marstune.tuning.outputs import DATABASE_COMPANIONS

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["redact"]  # study.urls is where URL code looks for it; errors.py owns it

DEFAULT_STORAGE = "sqlite:///studies/tune.db"
STORAGE_ENV = "TUNE_STORAGE"
# The storages the service installs a driver for and tests for real (no MySQL driver is installed).
SCHEMES = ("sqlite", "postgresql+psycopg")
# The one query parameter a SQLite URL may carry: how long a writer waits for the lock. The driver's
# others are not needed here, and `uri=true` would make the "path" an SQLite URI (file:...?mode=ro) that
# the WAL set-up, the claim lock and the output checks cannot follow.
SQLITE_QUERY = "timeout"


def resolve_url(url: str | None) -> str:
    """--storage, else $TUNE_STORAGE, else the default SQLite file under studies/."""
    resolved = url or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE
    remember_secrets(resolved)
    return resolved


def display_url(url: str) -> str:
    """The URL as it may be printed, logged, stored or exported: never with its password."""
    return redact(url)


def sqlite_path(url: str) -> Path | None:
    """The file behind a sqlite:/// URL (None for other databases and for in-memory SQLite).

    The one place the file is derived from the URL: the database, its WAL pragma, its claim lock and
    every "never write over the database" check must all name the file SQLite opens. That is
    SQLAlchemy's reading of the URL (percent-decoded: `p%20q.db` is `p q.db`), so it is asked here."""
    parsed = _parse_sqlite(url)
    if parsed is None or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def sqlite_files(url: str) -> list[Path]:
    """The database file and the files SQLite and the claim keep beside it: what no output may replace."""
    path = sqlite_path(url)
    if path is None:
        return []
    return [path, *(path.with_name(path.name + suffix) for suffix in DATABASE_COMPANIONS)]


def same_database(a: str, b: str) -> bool:
    """True when two URLs open one database: the same SQLite file, or the same server and database."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if (path := sqlite_path(a)) is not None:
        other = sqlite_path(b)
        return other is not None and path.resolve() == other.resolve()
    try:
        one, two = make_url(a), make_url(b)
    except (ArgumentError, ValueError):
        return False  # an http:// tracking server is no database
    return _place(one) == _place(two)


_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}
_THIS_HOST = {None, "", "localhost", "127.0.0.1", "::1"}


def _place(url: URL) -> tuple[str, str | None, int | None, str | None]:
    """Where a server database lives: backend (any driver), host (this one by any name), port (the
    backend's default when left out), database name."""
    backend = url.get_backend_name()
    host = "this host" if url.host in _THIS_HOST else url.host
    return (backend, host, url.port or _DEFAULT_PORTS.get(backend), url.database)


def _parse_sqlite(url: str) -> URL | None:
    """SQLAlchemy's parse of a sqlite: URL (None for another scheme or a URL it cannot read)."""
    if not url.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        return None


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
        _check_sqlite_url(url, shown)
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


def _check_sqlite_url(url: str, shown: str) -> None:
    """SQLite takes a file path and a few driver settings; anything else would be dropped silently."""
    parsed = _parse_sqlite(url)
    if parsed is None:
        raise StorageError(f"storage URL {shown!r} is malformed; write sqlite:///path/to/file.db")
    if parsed.username or parsed.password or parsed.host or parsed.port:
        # SQLAlchemy refuses it only at the first connection, with a multi-line message; the password
        # must not be repeated here, so the right form is built from the path alone.
        raise StorageError(
            f"storage URL {shown!r} has a user, password or host part, which SQLite URLs do not take; "
            f"write sqlite:///{parsed.database or 'path/to/file.db'}"
        )
    _check_sqlite_query(url, shown)
    path = sqlite_path(url)
    if path is not None and path.name.endswith(DATABASE_COMPANIONS):
        # A database's -wal/-shm/-journal or claim lock: made a database of its own, the next open of
        # the real one would delete or clobber it.
        raise StorageError(
            f"storage URL {shown!r} names {path.name}, the kind of file SQLite or the claim keeps beside a "
            f"database; name the database itself (e.g. sqlite:///{path.parent / 'tune.db'})"
        )
    if sqlite_path(url) is None:
        raise StorageError(
            f"storage URL {shown!r} is an in-memory database: nothing would persist; "
            "use sqlite:///path/to/file.db"
        )


def _check_sqlite_query(url: str, shown: str) -> None:
    """At most `?timeout=SECONDS`, once, with a number: SQLAlchemy would drop other keys with a warning
    (a `password=` would seem to protect the file), read `a?b.db` as the file `a`, and fail late with a
    traceback on a repeated or non-numeric timeout, after creating the file."""
    from urllib.parse import parse_qsl

    _, mark, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True) if mark else []
    keys = [k for k, _ in pairs]
    bad = sorted({k for k in keys if k != SQLITE_QUERY} | ({"(empty)"} if mark and not pairs else set()))
    fix = f"SQLite URLs take only ?{SQLITE_QUERY}=SECONDS (a '?' in a file name must be written %3F)"
    if bad or len(keys) > 1:
        what = f"query parameter(s) {', '.join(bad)}" if bad else f"{SQLITE_QUERY} more than once"
        raise StorageError(f"storage URL {shown!r} has {what}; {fix}")
    if pairs:
        try:
            seconds = float(pairs[0][1])
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds >= 0):
            raise StorageError(f"storage URL {shown!r}: timeout must be a number of seconds >= 0; {fix}")


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
