"""The learning-curve commands refuse bad input in one line, never write over their own input, and
never echo a password."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

CURVES = REPO / "bench/curves/unet-synthetic.json"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["curves", "--db", "{curves}", "--out", "{curves}"], "is also the recording"),
        (["curves", "--db", "postgresql+psycopg://u:Bc1secret@127.0.0.1/x"], "not a URL"),
        (["curves", "--db", "{notes}", "--out", "{tmp}/out.json"], "file is not a database"),
        (["surrogate", "--curves", "{curves}", "--out", "{curves}"], "is also the curves file"),
        (["surrogate", "--curves", "{notes}", "--out", "{tmp}/s.json"], "not a JSON file"),
        (["surrogate", "--curves", "{curves}", "--folds", "1"], "--folds must be 0"),
        (["record-design", "--chunk", "0"], "must be >= 1"),
        (["record", "--limit", "0"], "must be >= 1"),
        (["record", "--grid", "{notes}", "--out", "{tmp}/runs.csv"], "expected a mapping with a `grid:`"),
        (["record", "--out", "{tmp}"], "is a folder"),
        (["tabular", "--runs", "{notes}", "--out", "{tmp}/s.csv"], "a runs table needs the columns"),
        (["tabular", "--runs", "{notes}", "--out", "{notes}"], "is also the --runs table"),
        (["tabular", "--seeds", "0"], "must be >= 1"),
        (["tabular-stats", "--results", "{notes}", "--runs", "{tmp}/none.csv"], "No such file"),
        (["search", "--seeds", "0"], "must be >= 1"),
        (["losses", "--epochs", "0"], "must be >= 1"),
        (["losses", "--items", "4"], "must be >= 8"),
        (["losses", "--keep", "{tmp}"], "exists; name a new folder"),
        (["losses", "--reuse", "{tmp}"], "holds no losses.db"),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_written(args: list[str], needle: str, tmp_path: Path) -> None:
    curves, notes = tmp_path / "curves.json", tmp_path / "notes.txt"
    shutil.copy(CURVES, curves)
    notes.write_text("not data\n")
    before = {p.name: _digest(p) for p in tmp_path.iterdir()}
    argv = [a.format(curves=curves, notes=notes, tmp=tmp_path) for a in args]
    if argv[0] == "search":  # a target of `python -m bench`, with its own flags when run as a module
        command = [sys.executable, "-m", "bench.search_efficiency", *argv[1:]]
    else:
        command = [sys.executable, "-m", "bench", *argv]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in result.stderr.splitlines() if "error" in ln]
    assert result.returncode != 0 and len(lines) == 1 and needle in lines[0], result.stderr[-1500:]
    assert "Traceback" not in result.stderr and "Bc1secret" not in result.stdout + result.stderr
    assert {p.name: _digest(p) for p in tmp_path.iterdir()} == before
