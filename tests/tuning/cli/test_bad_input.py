"""THE table of bad input, over every command and flag, as a new user types it.

Each row: exactly one line on stderr (`Error: ...`) holding the row's needles, exit 1 (an input we
refuse) or 2 (a usage error), no password from the command line in any output, and no file in the
working folder created, changed or removed (hashed before and after). Rows run in this process (the
same `main`, through Typer's CliRunner isolation: milliseconds, the quick tier); a few run again as the
real `tune` subprocess and must print the very same line (the full tier).
"""

from __future__ import annotations

import gc
import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from tests.conftest import run_tune, tune_in_process

DB = "sqlite:///study.db"
PG_CLOSED = "postgresql+psycopg://tune:pw@127.0.0.1:1/tune"  # nothing listens on port 1
SECRETS = ("pw@", "Sekr3t", "S3cretPw", "Pw9x", "Ux1", "secret")
ANALYTIC = ("--set", "objective.kind=analytic", "--epochs", "1", "-q")
PG_URL = "postgresql+psycopg://postgres:Ux1secret@127.0.0.1/db"
KEPT_IN = ("run", "--storage", DB, "--study", "k", "--epochs", "1", "--set")  # + a kept models' folder
KEPT = "search.artifacts (the kept models' folder)"


class Row(NamedTuple):
    argv: tuple[str, ...]
    needles: tuple[str, ...]  # what the one line must hold
    code: int | None  # the exit code; None: 1 or 2
    real: bool  # run again as the real `tune` subprocess (the full tier)


def row(*argv: str, needles: tuple[str, ...] = (), code: int | None = None, real: bool = False) -> Row:
    return Row(argv, needles, code, real)


ROWS: list[Row] = [
    # tune run: flags
    row("run", "--trials", "0", real=True),
    row("run", "--trials", "-3"),
    row("run", "--trials", "many"),
    row("run", "--epochs", "0"),
    row("run", "--workers", "0"),
    row(*KEPT_IN, "search.artifacts=a_file/m", needles=(f"{KEPT} a_file/m", "a_file is a file"), code=1),
    row(*KEPT_IN, "search.artifacts=/proc/nope", needles=(KEPT, "/proc"), code=1),
    row(
        "run", "--workers", "100000", *ANALYTIC, needles=("--workers 100000: at most", "tune worker"), code=2
    ),
    row("worker", "--study", "s", "--storage", DB, "--workers", "100000", needles=("at most",), code=2),
    row("run", "--threads", "-1"),
    row("run", "--sampler", "sobol", *ANALYTIC, needles=("'sobol'", "tpe"), code=2),
    row("run", "--pruner", "asha", *ANALYTIC, needles=("'asha'", "median"), code=2),
    row("run", "--engine", "hyperopt", *ANALYTIC, needles=("'hyperopt'", "optuna"), code=2, real=True),
    row("run", "--cpus-per-trial", "2"),
    row(
        "run",
        "--engine",
        "ray",
        "--cpus-per-trial",
        "nan",
        *ANALYTIC,
        needles=("--cpus-per-trial", "nan"),
        code=2,
    ),
    row(
        "run",
        "--engine",
        "ray",
        "--gpus-per-trial",
        "inf",
        *ANALYTIC,
        needles=("--gpus-per-trial", "inf"),
        code=2,
    ),
    row("run", "--no-such-flag"),
    row("nosuchcommand"),
    # tune run: a warm start refused before anything is written (no new database file)
    row(
        "run",
        "--storage",
        "sqlite:///new.db",
        "--study",
        "w",
        "--warm-start-from",
        "w",
        *ANALYTIC,
        needles=("that is the study itself",),
        code=2,
    ),
    row(
        "run",
        "--storage",
        "sqlite:///new.db",
        "--study",
        "w",
        "--warm-start-from",
        "nope",
        *ANALYTIC,
        needles=("--warm-start-from nope: no such study",),
        code=1,
    ),
    row(
        "run",
        "--storage",
        DB,
        "--study",
        "w",
        "--warm-start-from",
        "s",
        "--sampler",
        "grid",
        *ANALYTIC,
        needles=("a grid runs every point",),
        code=2,
    ),
    # tune run: study names
    row("run", "--study", "../escape"),
    row("run", "--study", ""),
    row("run", "--study", "a b"),
    row("run", "--study", "é" * 128, *ANALYTIC, needles=("study name",)),
    # tune run: storages
    row("run", "--storage", "sqlite:///adir"),
    row("run", "--storage", "sqlite:///notes.txt"),
    row("run", "--storage", "sqlite://"),
    row("run", "--storage", "http://example.com/db"),
    row("run", "--storage", "postgresql://tune@127.0.0.1/tune"),
    row("run", "--storage", "postgresql://u@h/db", *ANALYTIC, needles=("psycopg",), code=1),
    row("run", "--storage", PG_CLOSED),
    row("run", "--storage", "sqlite:///missing/folder/t.db"),
    row("run", "--storage", "sqlite:///a_file/tune.db", *ANALYTIC, needles=("a_file",), code=1, real=True),
    row("run", "--storage", "sqlite:///no/such/dir.db", *ANALYTIC, needles=("does not exist",), code=1),
    row("run", "--storage", "sqlite:///no/such/t.db", "--epochs", "1", needles=("does not exist",), code=1),
    row("run", "--storage", "mysql+nodriver://x/y", *ANALYTIC, needles=("not supported",), code=1),
    # tune run: data
    row("run", "--data", "adir"),
    row("run", "--data", "missing.npz"),
    row("run", "--data", "notes.txt"),
    row("run", "--data", "flat.npz", "--epochs", "1", "-q", needles=("training_set", "(4, 64, 128)"), code=1),
    row("run", "--data", "ints.npz", "--epochs", "1", "-q", needles=("training_set", "int64"), code=1),
    row("run", "--data", "other.npz", "--epochs", "1", "-q", needles=("training_set",), code=1),
    row("run", "--data", "nan.npz", "--epochs", "1", "-q", needles=("nan.npz", "NaN"), code=1, real=True),
    row("run", "--data", "labels.npz", "--epochs", "1", "-q", needles=("labels.npz", "5"), code=1),
    # masks of background only (every score would be 0), cleaned or not; masks that really repeat
    row(
        "run",
        "--data",
        "empty.npz",
        "--epochs",
        "1",
        "-q",
        needles=("empty.npz", "no terrain class 1..4"),
        code=1,
    ),
    row(
        *("run", "--data", "empty.npz", "--epochs", "1", "-q", "--set", "data.clean=false"),
        needles=("empty.npz", "no terrain class 1..4"),
        real=True,
    ),
    row(
        *("run", "--data", "tiles.npz", "--epochs", "1", "-q"),
        needles=(
            "contamination filter (data.clean",
            "removed 11 of 12 pairs, leaving 1",
            "--set data.clean=false",
        ),
        real=True,
    ),
    # tune run: specs and --set
    row("run", "--spec", "adir"),
    row("run", "--spec", "missing.yaml"),
    row("run", "--spec", "notes.txt"),
    row("run", "--spec", "broken.yaml", needles=("broken.yaml", "not valid YAML"), code=1),
    row("run", "--spec", "tagged.yaml", needles=("tagged.yaml", "not valid YAML"), code=1),
    row("run", "--set", "nosuch=1"),
    row("run", "--set", "train.epochs=abc"),
    row("run", "--set", "train.epochs"),
    row("run", "--set", "search.timeout=-5"),
    row("run", "--set", "train.val_fraction=1.5"),
    row("run", "--set", "space.levels={type: int, low: 2, high: 9}"),
    # the default storage, studies/tune.db, is not there in this folder
    row("status", needles=("no study database",), code=1),
    row("export-best", needles=("no study database",), code=1),
    # tune worker
    row("worker", "--study", "nosuch", "--storage", DB),
    row("worker", "--workers", "0", "--storage", DB),
    row("worker", "--storage", "sqlite:///:memory:"),
    row("worker", "--storage", "sqlite:///nothing-here.db"),
    row("worker", "--storage", DB, "--study", "", needles=("study name", "''")),
    # tune status
    row("status", "--storage", "sqlite:///notes.txt"),
    row("status", "--storage", "sqlite:///nothing-here.db", needles=("no study database",)),
    row("status", "--storage", DB, "--study", "bad name!"),
    row("status", "--storage", "sqlite://user:Sekr3t@/study.db"),  # SQLite takes no user or password
    row("status", "--storage", "sqlite:///study.db?password=Sekr3t"),  # SQLAlchemy only warns, drops it
    row("status", "--storage", DB, "--study", "nosuch", needles=("'nosuch'",)),
    row("status", "--storage", DB, "--study", "", needles=("study name", "''"), code=1),
    row("status", "--storage", DB, "--study", "é" * 128, needles=("study name",)),
    row("status", "--storage", PG_CLOSED),
    row("status", "--storage", "mysql+pymysql://u:Pw9x@127.0.0.1/y", needles=("not supported",), code=1),
    row("status", "--storage", PG_URL.replace("Ux1secret", "S3cretPw"), needles=("***",), real=True),
    # a URL quoted by a usage error is masked too
    row("status", PG_URL, needles=("***",), code=2, real=True),
    row("run", "--engine", PG_URL, needles=("***",), code=2),
    row("run", f"--sampler={PG_URL}", needles=("***",), code=2),
    row(
        "status", "--storage", "postgresql+psycopg://postgres:Ux1@secret@127.0.0.1/db", needles=("***", "%40")
    ),
    row("status", "--storage", "postgres:Ux1secret@127.0.0.1/db", needles=("***",)),
    # tune export-best
    row("export-best", "--storage", DB, "--study", "s", "--out", "study.db"),
    row("export-best", "--storage", DB, "--study", "s", "--out", "adir"),
    row("export-best", "--storage", DB, "--study", "s", "--out", "missing/folder/best.yaml"),
    row("export-best", "--storage", DB, "--study", "s", "--out", "best.keras"),  # the model's own name
    row("export-best", "--storage", DB, "--study", "s", "--out", "spec.yaml"),  # not an export: kept
    row("export-best", "--storage", DB, "--study", "s", "--out", "notes.txt"),
    row("export-best", "--storage", DB, "--study", "nosuch", needles=("'nosuch'", "(studies: s)"), real=True),
    row("export-best", "--storage", DB, "--study", "", needles=("study name", "''"), code=1),
    row("export-best", "--storage", DB, "--study", "é" * 128, needles=("study name",)),
    row("export-best", "--storage", "sqlite:///nothing-here.db", needles=("no study database",)),
    # tune dashboard
    row("dashboard", "--storage", DB, "--port", "0"),
    row("dashboard", "--storage", DB, "--port", "70000"),
    row("dashboard", "--storage", DB, "--host", "0.0.0.0"),
    row("dashboard", "--storage", "sqlite:///nothing-here.db"),
    # tune report
    row("report", "--storage", DB, "--study", "s", "--out", "study.db"),
    row("report", "--storage", DB, "--study", "s", "--out", "adir"),
    row("report", "--storage", DB, "--study", "nosuch"),
    row("report", "--storage", DB, "--study", "s", "--example-epochs", "0"),
    # tune pix2pix
    row("pix2pix", "--config", "missing.yaml"),
    row("pix2pix", "--config", "adir"),
    row("pix2pix", "--config", "notes.txt"),
    row("pix2pix", "--config", "spec.yaml"),
    row("pix2pix", "--config", "notes.txt", "--epochs", "0"),
    # tune predict
    row("predict", "--model", "missing.keras", "--data", "d.npz"),
    row("predict", "--model", "notes.txt", "--data", "d.npz"),
    row("predict", "--model", "missing.keras", "--data", "adir"),
    row("predict", "--model", "missing.keras", "--data", "d.npz", "--out", "d.npz"),
    row("predict", "--model", "missing.keras", "--data", "d.npz", "--out", "study.db"),
    row("predict", "--model", "missing.keras", "--data", "d.npz", "--batch-size", "0"),
    # tune data
    row("data", "clean", "--data", "d.npz", "--out", "d.npz"),
    row("data", "clean", "--data", "notes.txt"),
    row("data", "clean", "--data", "adir"),
    row("data", "clean", "--data", "d.npz", "--out", "adir"),
    row("data", "clean", "--data", "d.npz", "--out", "study.db"),
    row("data", "synth", "--out", "study.db"),
    row("data", "synth", "--out", "adir"),
    row("data", "synth", "--out", "notes.txt"),  # not an .npz name: an existing file would change kind
    row("data", "synth", "--out", "missing/folder/s.npz"),
    row("data", "synth", "--out", "d.npz", needles=("already there", "pass --force"), real=True),
    row("data", "synth", "--out", "s.npz", "--n-train", "0"),
    row("data", "synth", "--out", "s.npz", "--n-train", "99999999999"),
]
REAL = [r for r in ROWS if r.real]


def _pairs(n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(0)
    pairs = np.zeros((n, 2, 64, 128))
    pairs[:, 0] = rng.uniform(0, 255, (n, 64, 128))
    pairs[:, 1] = rng.integers(0, 5, (n, 64, 128))
    return pairs


def _bad_data(folder: Path) -> None:
    """Arrays a user might hand us: wrong shape, wrong type, wrong name, a NaN, a label of 5, masks of
    background only, masks that all repeat."""
    nan, labels = _pairs(), _pairs()
    nan[2, 0, 5, 5] = np.nan
    labels[1, 1, 0, 0] = 5.0
    np.savez(folder / "flat.npz", training_set=np.zeros((4, 64, 128)))
    np.savez(folder / "ints.npz", training_set=_pairs().astype(np.int64))
    np.savez(folder / "other.npz", other=_pairs())
    np.savez(folder / "nan.npz", training_set=nan)
    np.savez(folder / "labels.npz", training_set=labels)
    empty, tiles = _pairs(8), _pairs(12)
    empty[:, 1] = 0.0
    tiles[:11, 1] = tiles[0, 1]  # 11 of 12 pairs share one mask: the filter would leave 1 pair
    np.savez(folder / "empty.npz", training_set=empty)
    np.savez(folder / "tiles.npz", training_set=tiles)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder as a user has it: a data set, a study `s`, notes, a spec, odd files and folders."""
    folder = tmp_path_factory.mktemp("bad-input")
    synth = tune_in_process("data", "synth", "--n-train", "16", "--n-test", "2", "--out", "d.npz", cwd=folder)
    assert synth.returncode == 0, synth.stderr
    study = tune_in_process("run", "--storage", DB, "--study", "s", "--trials", "2", *ANALYTIC, cwd=folder)
    assert study.returncode == 0, study.stderr
    gc.collect()  # the run's storage, dropped, closes the database (its -wal and -shm) as at an exit
    (folder / "adir").mkdir()
    (folder / "a_file").write_text("not a folder")
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "spec.yaml").write_text("train: {epochs: 2}\n")
    (folder / "broken.yaml").write_text("train: {epochs: [1\n")
    (folder / "tagged.yaml").write_text("!!python/object/apply:os.system ['touch pwned']\n")
    _bad_data(folder)
    yield folder


def _state(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def _refused(r: subprocess.CompletedProcess, needles: tuple[str, ...], code: int | None) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode in ((1, 2) if code is None else (code,)), (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert not [s for s in SECRETS if s in r.stdout + r.stderr], r.stdout + r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _ids(rows: list[Row]) -> list[str]:
    return [" ".join(r.argv)[:60] for r in rows]


@pytest.mark.parametrize("case", ROWS, ids=_ids(ROWS))
def test_bad_input_is_one_line_a_non_zero_exit_and_nothing_written(case: Row, workdir: Path) -> None:
    before = _state(workdir)
    _refused(tune_in_process(*case.argv, cwd=workdir), case.needles, case.code)
    assert _state(workdir) == before
    assert not (workdir / "pwned").exists()


@pytest.mark.parametrize("case", REAL, ids=_ids(REAL))
def test_the_real_command_refuses_with_the_same_line(case: Row, workdir: Path) -> None:
    before = _state(workdir)
    real = run_tune(*case.argv, cwd=workdir, timeout=300)
    here = tune_in_process(*case.argv, cwd=workdir)
    assert _refused(real, case.needles, case.code) == _refused(here, case.needles, case.code)
    assert real.returncode == here.returncode
    assert _state(workdir) == before
