"""Every repository path that the README or a docstring names exists (signposts that point somewhere)."""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

ROOTS = ("tuning", "models", "data", "bench", "studies", "tests", "tools", "docs", ".ci")
# tuning/x/y.py, bench/curves/runs.csv, models/unet.validate_config (a module and a name in it)
FOLDER_PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(map(re.escape, ROOTS)) + r")/[\w./-]*\w)")
BARE_FILE = re.compile(r"(?<![\w./-])(\w+\.(?:py|yaml|json|md|csv))\b")
# What the commands write (a user's files, not the repository's), and the steering documents beside it.
WRITTEN = {
    "data/mars_for_students.npz",
    "studies/tune.db",
    "studies/unet-mars.best.yaml",
    "studies/unet-mars/report.html",
    "studies/unet-mars/artifacts",
    "studies/unet-mars.best.keras",
    "run.json",
    "metrics.json",
    "state.json",
    "submission.csv",
    "tune_record.json",
    "DESIGN.md",
}
SKIP = {".venv", ".git", "node_modules", "__pycache__", ".pytest_cache"}


def _tree() -> Iterator[Path]:
    """The repository's files and folders, without walking the venv or git's objects."""
    for folder, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP]
        yield from (Path(folder) / n for n in [*dirs, *names])


def _texts() -> Iterator[tuple[str, str]]:
    yield "README.md", (REPO / "README.md").read_text()
    for path in sorted(p for p in _tree() if p.suffix == ".py"):
        for node in ast.walk(ast.parse(path.read_text())):
            documented = isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            if documented and (doc := ast.get_docstring(node)):
                yield str(path.relative_to(REPO)), doc


def _exists(named: str) -> bool:
    path = REPO / named.rstrip("./")
    if path.exists():
        return True
    module, _, _attr = named.rpartition(".")  # models/unet.validate_config
    return bool(module) and (REPO / f"{module}.py").exists()


def test_every_named_path_exists() -> None:
    files = {p.name for p in _tree()}
    missing = []
    for where, text in _texts():
        missing += [f"{where}: {n}" for n in FOLDER_PATH.findall(text) if n not in WRITTEN and not _exists(n)]
        missing += [f"{where}: {n}" for n in BARE_FILE.findall(text) if n not in WRITTEN | files]
    assert not missing, "\n".join(missing)
