"""The flags a suggested command repeats, so that the command a hint names works on the same study:
`next: tune export-best --study eco --storage postgresql+psycopg://tune:***@head/tune`. A password is
never shown (the person types it again, or it comes from $TUNE_STORAGE)."""

from __future__ import annotations

import shlex
from pathlib import Path

from marstune.tuning.study.urls import display_url

SPEC_FILE_ATTR = "spec_file"  # study user attribute: the spec file the study was made from, if any


def repeated_flags(
    *, storage: str | None = None, spec: str | Path | None = None, data: str | Path | None = None
) -> str:
    """` --storage URL --spec FILE --data FILE` for each one given (empty when none is)."""
    given = {"--storage": display_url(storage) if storage else None, "--spec": spec, "--data": data}
    return "".join(f" {flag} {shlex.quote(str(value))}" for flag, value in given.items() if value)
