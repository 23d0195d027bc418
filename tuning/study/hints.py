"""The flags a suggested command repeats, so that the command a hint names works on the same study:
`next: tune export-best --study eco --storage postgresql+psycopg://tune@head/tune`. A password is never
shown: a URL with one is repeated as "$TUNE_STORAGE", so the pasted hint runs where that is set."""

from __future__ import annotations

import shlex
from pathlib import Path

from marstune.tuning.errors import MASK
from marstune.tuning.study.urls import display_url

SPEC_FILE_ATTR = "spec_file"  # study user attribute: the spec file the study was made from, if any


def repeated_flags(
    *, storage: str | None = None, spec: str | Path | None = None, data: str | Path | None = None
) -> str:
    """` --storage URL --spec FILE --data FILE` for each one given (empty when none is). A URL with a
    password is never shown; it is named as "$TUNE_STORAGE", which a pasted hint reads if it is set."""
    shown = display_url(storage) if storage else None
    url = '"$TUNE_STORAGE"' if shown and MASK in shown else shlex.quote(shown) if shown else None
    given = {"--storage": url, "--spec": _quoted(spec), "--data": _quoted(data)}
    return "".join(f" {flag} {value}" for flag, value in given.items() if value)


def _quoted(value: str | Path | None) -> str | None:
    return shlex.quote(str(value)) if value else None
