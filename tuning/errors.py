"""Every exception of the service. Every message is one line: what was wrong, the value, and the fix.

Two families:
- `TuneError` and its children reach the user: the CLI prints `Error: <message>` and exits 1.
  `FatalError` children stop a whole run in every engine (a broken spec, unreadable data, a storage that
  cannot be opened, a missing extra, a study whose trials keep failing); any other exception raised
  while a trial trains fails that one trial and the study goes on.
- `TrialFailed` and `Pruned` are control flow between the objective and the engines; they never reach
  the user.

Errors from models/ and data/ (plain ValueErrors there, since they know nothing of tuning) are
translated here at the boundary, so the CLI has one thing to catch.
"""

from __future__ import annotations

import re
import signal
from urllib.parse import quote, unquote, urlsplit


class TuneError(Exception):
    """Base class: the CLI prints `Error: <message>` and exits 1."""


class FatalError(TuneError):
    """Stops the run in every engine (and every worker of the study): retrying another trial cannot help."""


class SpecError(FatalError):
    """A study spec file, a `--set` override or a CLI flag is invalid."""


class UsageError(SpecError):
    """A command-line value is invalid: the CLI exits 2, as for any usage error."""


class DataError(FatalError):
    """A data set does not have the challenge layout."""


class StorageError(FatalError):
    """A storage URL is malformed, unreachable or unwritable, or a study is missing."""


class DiskFull(StorageError):
    """A disk the run writes to (the study database's, the kept models', the server's) is full."""


class MissingExtraError(FatalError):
    """An optional dependency (sampler, engine, tracker) is not installed."""


class TooManyFailures(FatalError):
    """The study's last trials all failed: the run stops instead of burning the night."""


class OutputError(TuneError):
    """An output path is unusable: an input of the same command, a database, a directory, unwritable."""


class ModelError(TuneError):
    """A model configuration cannot be built (fails one trial; the spec check refuses most up front)."""


class ReportError(TuneError):
    """A report cannot be made as asked."""


class DashboardError(TuneError):
    """The dashboard cannot be served as asked (address, port)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: stop cleanly; the exit code tells which (130 or 143)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class TrialFailed(Exception):
    """This trial failed (NaN loss, a config that cannot be built); the study goes on."""


class Pruned(Exception):
    """The engine's pruner asked to stop this trial; engines turn it into their own pruned state."""


# Raw errors of the layers below, by qualified name, so translating one never imports Keras.
_RAW_ERRORS: dict[str, type[TuneError]] = {
    "marstune.data.mars.DataError": DataError,
    "marstune.models.unet.ModelConfigError": ModelError,
    "marstune.models.losses.LossConfigError": ModelError,
}


def translate(exc: BaseException) -> TuneError | None:
    """Map an exception from models/ or data/ to our hierarchy (None: not ours to explain)."""
    if isinstance(exc, TuneError):
        return exc
    for klass in type(exc).__mro__:
        ours = _RAW_ERRORS.get(f"{klass.__module__}.{klass.__qualname__}")
        if ours is not None:
            return ours(str(exc))
    return None


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message`, at most 500 characters: how a failed trial's reason is stored."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:500]


def exit_code(exc: BaseException) -> int:
    """The exit status for an exception at a process boundary: 2 usage, 1 error, 128 + signal number."""
    if isinstance(exc, Interrupted):
        return 128 + exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return 128 + signal.SIGINT
    return 2 if isinstance(exc, UsageError) else 1


# --- passwords never leave the process: every message and URL goes through `redact`.
# A password may sit in a URL in every form SQLAlchemy and libpq accept: `user:pw@`, `:pw@` (no user),
# `?password=pw` (and `sslpassword`), percent-encoded, in a multi-host netloc, or as a libpq
# `password=pw` keyword in a conninfo string; drivers may also quote it in their own messages.
MASK = "***"
_SECRET_KEY = re.compile(r"pass(word)?$|passwd|secret|token", re.IGNORECASE)
# scheme://userinfo@: the userinfo ends at the LAST @ before the path, so an unencoded @ in a password
# is covered too; SQLAlchemy also takes an unencoded / ? or # in a password (`user:pw/x@host`).
_USERINFO = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)"
    r"(?P<userinfo>[^/?#\s]*|[^:/?#\s@]*:[^\s@]*(?:@[^\s@/?#]*(?=@))*)@"
)
# SQLAlchemy's own grammar for a URL's password (make_url): it runs from the first : to the first @.
_SQLALCHEMY_PASSWORD = re.compile(r"^[\w+]+://[^:/]*:(?P<password>[^@]*)@")
_KEYWORD = re.compile(
    r"(?P<key>\b[\w.-]*(?:password|passwd|secret|token)[\"']?\s*[=:]\s*)"
    # unquoted: up to a space or separator; a `:` that ends it is the message's, not the password's
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"[^\"]*\"|(?:[^\s&;,'\":]|:(?![\s]|$))+)",
    re.IGNORECASE,
)
# a query key written with %-escapes (`pass%77ord=`): the driver decodes it, so redact must too
_ENCODED_KEY = re.compile(r"(?P<key>[\w.%-]*%[0-9A-Fa-f]{2}[\w.%-]*\s*=\s*)(?P<value>[^\s&;,'\"#]+)")
_KNOWN_SECRETS: set[str] = set()


def secrets_of(url: str) -> set[str]:
    """The secrets in a URL, raw and percent-decoded/encoded, so `redact` finds them in any text."""
    found: set[str] = set()
    match = _USERINFO.search(url)
    if match and ":" in match.group("userinfo"):
        found.add(match.group("userinfo").split(":", 1)[1])
    if "://" not in url:  # `user:pw@host/db`, a URL without its scheme: refused, but quoted when it is
        userinfo = url.strip().split("/", 1)[0].rpartition("@")[0]
        if ":" in userinfo:
            found.add(userinfo.split(":", 1)[1])
    parsed = _SQLALCHEMY_PASSWORD.match(url.strip())
    if parsed:
        found.add(parsed.group("password"))
    try:
        query = urlsplit(url).query if "://" in url else url
    except ValueError:  # e.g. an unclosed [ of an IPv6 host: the URL check will say so
        query = url.partition("?")[2]
    for part in re.split(r"[&;\s]", query):
        key, sep, value = part.partition("=")
        if sep and _SECRET_KEY.search(unquote(key).strip()):  # the driver decodes `pass%77ord` too
            found.add(value.strip("'\""))
    out: set[str] = set()
    for secret in found:
        if len(secret) >= 3:  # a one- or two-character "password" would mask half of every message
            out |= {secret, unquote(secret), quote(unquote(secret), safe="")}
    return out


def remember_secrets(url: str) -> None:
    """From now on, `redact` also replaces this URL's secrets wherever a message quotes them."""
    _KNOWN_SECRETS.update(secrets_of(url))


def _mask_userinfo(match: re.Match[str]) -> str:
    userinfo = match.group("userinfo")
    if ":" not in userinfo:
        return match.group(0)
    return f"{match.group('scheme')}{userinfo.split(':', 1)[0]}:{MASK}@"


def _mask_encoded_key(match: re.Match[str]) -> str:
    key = match.group("key")
    if not _SECRET_KEY.search(unquote(key).rstrip("= \t")):
        return match.group(0)
    return f"{key}{MASK}"


def redact(text: str) -> str:
    """`text` with every password of every URL or conninfo replaced by ***."""
    for secret in sorted(_KNOWN_SECRETS, key=len, reverse=True):  # first: whole, whatever they hold
        text = text.replace(secret, MASK)
    text = _USERINFO.sub(_mask_userinfo, text)
    text = _ENCODED_KEY.sub(_mask_encoded_key, text)
    return _KEYWORD.sub(lambda m: f"{m.group('key')}{MASK}", text)


# A full disk in the words of the OS (ENOSPC, EDQUOT), SQLite (SQLITE_FULL) and PostgreSQL (53100, "could
# not extend file"): lower-case fragments, since drivers wrap the OS error in their own text.
_DISK_FULL_MARKS = (
    "no space left on device",
    "database or disk is full",
    "could not extend file",
    "disk quota",
)


def is_disk_full(exc: BaseException) -> bool:
    """True when `exc` or one of its causes says a disk is full (Optuna wraps the driver's error in
    StorageInternalError: "invalid data ... max length", so the whole chain is read)."""
    import errno

    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if (
            getattr(seen, "sqlstate", None) == "53100"
            or getattr(getattr(seen, "orig", None), "sqlstate", None) == "53100"
        ):
            return True
        if any(mark in str(seen).lower() for mark in _DISK_FULL_MARKS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def describe(exc: BaseException) -> str | None:
    """The one line a process prints for `exc` at its boundary (None: not ours to explain)."""
    ours = translate(exc)
    if ours is None and is_disk_full(exc):  # where no caller named the disk (study/disk.py does)
        ours = DiskFull(f"a disk is full ({one_line(exc)}); free space on it and run the same command again")
    return None if ours is None else f"Error: {redact(str(ours))}"
