"""A table of bad inputs over every command and flag, as a new user types them.

For each: exactly one line on stderr (`Error: ...`), exit 1 (an input we refuse) or 2 (a usage error),
and no file in the working folder created, changed or removed (the folder is hashed before and after).
The cases cover directories given as files, inputs given as outputs, databases given as outputs,
missing folders, odd URLs and study names, and numbers out of range.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_tune

DB = "sqlite:///study.db"
PG_CLOSED = "postgresql+psycopg://tune:pw@127.0.0.1:1/tune"  # nothing listens on port 1
CASES: list[tuple[str, ...]] = [
    # tune run
    ("run", "--trials", "0"),
    ("run", "--trials", "-3"),
    ("run", "--trials", "many"),
    ("run", "--epochs", "0"),
    ("run", "--workers", "0"),
    ("run", "--threads", "-1"),
    ("run", "--sampler", "sobol"),
    ("run", "--pruner", "asha"),
    ("run", "--engine", "hyperopt"),
    ("run", "--study", "../escape"),
    ("run", "--study", ""),
    ("run", "--study", "a b"),
    ("run", "--storage", "sqlite:///adir"),
    ("run", "--storage", "sqlite:///notes.txt"),
    ("run", "--storage", "sqlite://"),
    ("run", "--storage", "http://example.com/db"),
    ("run", "--storage", "postgresql://tune@127.0.0.1/tune"),
    ("run", "--storage", PG_CLOSED),
    ("run", "--storage", "sqlite:///missing/folder/t.db"),
    ("run", "--data", "adir"),
    ("run", "--data", "missing.npz"),
    ("run", "--data", "notes.txt"),
    ("run", "--spec", "adir"),
    ("run", "--spec", "missing.yaml"),
    ("run", "--spec", "notes.txt"),
    ("run", "--set", "nosuch=1"),
    ("run", "--set", "train.epochs=abc"),
    ("run", "--set", "train.epochs"),
    ("run", "--set", "search.timeout=-5"),
    ("run", "--set", "train.val_fraction=1.5"),
    ("run", "--set", "space.levels={type: int, low: 2, high: 9}"),
    ("run", "--cpus-per-trial", "2"),
    # tune worker
    ("worker", "--study", "nosuch", "--storage", DB),
    ("worker", "--workers", "0", "--storage", DB),
    ("worker", "--storage", "sqlite:///:memory:"),
    ("worker", "--storage", "sqlite:///nothing-here.db"),
    # tune status
    ("status", "--storage", "sqlite:///notes.txt"),
    ("status", "--storage", "sqlite:///nothing-here.db"),
    ("status", "--storage", DB, "--study", "bad name!"),
    ("status", "--storage", "sqlite://user:Sekr3t@/study.db"),  # SQLite takes no user or password
    ("status", "--storage", "sqlite:///study.db?password=Sekr3t"),  # SQLAlchemy only warns and drops it
    ("status", "--storage", DB, "--study", "nosuch"),
    ("status", "--storage", PG_CLOSED),
    # tune export-best
    ("export-best", "--storage", DB, "--study", "s", "--out", "study.db"),
    ("export-best", "--storage", DB, "--study", "s", "--out", "adir"),
    ("export-best", "--storage", DB, "--study", "s", "--out", "missing/folder/best.yaml"),
    ("export-best", "--storage", DB, "--study", "s", "--out", "best.keras"),  # the model's own name
    ("export-best", "--storage", DB, "--study", "s", "--out", "spec.yaml"),  # not an export: kept
    ("export-best", "--storage", DB, "--study", "s", "--out", "notes.txt"),
    ("export-best", "--storage", DB, "--study", "nosuch"),
    ("export-best", "--storage", DB, "--study", ""),
    ("export-best", "--storage", DB, "--study", "é" * 128),
    # tune dashboard
    ("dashboard", "--storage", DB, "--port", "0"),
    ("dashboard", "--storage", DB, "--port", "70000"),
    ("dashboard", "--storage", DB, "--host", "0.0.0.0"),
    ("dashboard", "--storage", "sqlite:///nothing-here.db"),
    # tune report
    ("report", "--storage", DB, "--study", "s", "--out", "study.db"),
    ("report", "--storage", DB, "--study", "s", "--out", "adir"),
    ("report", "--storage", DB, "--study", "nosuch"),
    ("report", "--storage", DB, "--study", "s", "--example-epochs", "0"),
    # tune pix2pix
    ("pix2pix", "--config", "missing.yaml"),
    ("pix2pix", "--config", "adir"),
    ("pix2pix", "--config", "notes.txt"),
    ("pix2pix", "--config", "spec.yaml"),
    ("pix2pix", "--config", "notes.txt", "--epochs", "0"),
    # tune predict
    ("predict", "--model", "missing.keras", "--data", "d.npz"),
    ("predict", "--model", "notes.txt", "--data", "d.npz"),
    ("predict", "--model", "missing.keras", "--data", "adir"),
    ("predict", "--model", "missing.keras", "--data", "d.npz", "--out", "d.npz"),
    ("predict", "--model", "missing.keras", "--data", "d.npz", "--out", "study.db"),
    ("predict", "--model", "missing.keras", "--data", "d.npz", "--batch-size", "0"),
    # tune data
    ("data", "clean", "--data", "d.npz", "--out", "d.npz"),
    ("data", "clean", "--data", "notes.txt"),
    ("data", "clean", "--data", "adir"),
    ("data", "clean", "--data", "d.npz", "--out", "adir"),
    ("data", "clean", "--data", "d.npz", "--out", "study.db"),
    ("data", "synth", "--out", "study.db"),
    ("data", "synth", "--out", "adir"),
    ("data", "synth", "--out", "notes.txt"),  # not an .npz name: an existing file would change kind
    ("data", "synth", "--out", "missing/folder/s.npz"),
    ("data", "synth", "--out", "d.npz"),  # an existing data set is kept without --force
    ("data", "synth", "--out", "s.npz", "--n-train", "0"),
    ("data", "synth", "--out", "s.npz", "--n-train", "99999999999"),
    ("nosuchcommand",),
    ("run", "--no-such-flag"),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("bad-input")
    assert (
        run_tune("data", "synth", "--n-train", "16", "--n-test", "2", "--out", "d.npz", cwd=folder).returncode
        == 0
    )
    study = ("run", "--storage", DB, "--study", "s", "--trials", "2", "--set", "objective.kind=analytic")
    assert run_tune(*study, "--epochs", "1", "-q", cwd=folder).returncode == 0
    (folder / "adir").mkdir()
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "spec.yaml").write_text("train: {epochs: 2}\n")
    yield folder


def _state(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("argv", CASES, ids=[" ".join(c)[:60] for c in CASES])
def test_bad_input_is_one_line_a_non_zero_exit_and_nothing_written(
    argv: tuple[str, ...], workdir: Path
) -> None:
    before = _state(workdir)
    r: subprocess.CompletedProcess = run_tune(*argv, cwd=workdir, timeout=300)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode in (1, 2), (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "pw@" not in r.stderr
    assert _state(workdir) == before
