"""The error hierarchy. Every message is one line: what was wrong, the value, and the fix.

Errors from models/ and data/ (plain ValueErrors there, since they know nothing of tuning) are
translated here at the boundary, so the CLI has one thing to catch.
"""

from __future__ import annotations

import re


class TuneError(Exception):
    """Base class: the CLI prints `Error: <message>` and exits 1."""


class SpecError(TuneError):
    """A study spec file, a `--set` override or a CLI flag is invalid."""


class DataError(TuneError):
    """A data set does not have the challenge layout."""


class ModelError(TuneError):
    """A model configuration cannot be built."""


class StorageError(TuneError):
    """A storage URL is malformed, unreachable or unwritable, or a study is missing."""


class MissingExtraError(TuneError):
    """An optional dependency (sampler, engine) is not installed."""


_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-zA-Z0-9+]+://[^:/@\s]+:)(?P<pw>[^@\s]+)(?P<tail>@)")


def redact(text: str) -> str:
    """Replace the password of every URL in `text` with `***`."""
    return _PASSWORD_IN_URL.sub(r"\g<head>***\g<tail>", text)


# Raw errors of the layers below, by qualified name, so translating one never imports Keras.
_RAW_ERRORS: dict[str, type[TuneError]] = {
    "marstune.data.mars.DataError": DataError,
    "marstune.models.unet.ModelConfigError": ModelError,
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
