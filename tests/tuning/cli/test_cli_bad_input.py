"""Bad input through the real `tune` command: one clear line, a non-zero exit, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, run_tune

ANALYTIC = ("--set", "objective.kind=analytic", "--epochs", "1", "-q")


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _assert_refused(result: subprocess.CompletedProcess, *needles: str, code: int = 1) -> None:
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _pairs(n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(0)
    pairs = np.zeros((n, 2, 64, 128))
    pairs[:, 0] = rng.uniform(0, 255, (n, 64, 128))
    pairs[:, 1] = rng.integers(0, 5, (n, 64, 128))
    return pairs


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "studies").mkdir()
    return tmp_path


def test_malformed_yaml_and_python_tags_are_refused(workdir: Path) -> None:
    for text, needle in (
        ("train: {epochs: [1\n", "not valid YAML"),
        ("!!python/object/apply:os.system ['touch pwned']\n", "not valid YAML"),
    ):
        (workdir / "bad.yaml").write_text(text)
        before = _files(workdir)
        _assert_refused(run_tune("run", "--spec", "bad.yaml", cwd=workdir), "bad.yaml", needle)
        assert _files(workdir) == before and not (workdir / "pwned").exists()


def test_unknown_sampler_engine_and_pruner_are_refused(workdir: Path) -> None:
    # Usage errors: exit 2, one line, the valid choices named (as `tune run -h` lists them).
    _assert_refused(run_tune("run", "--sampler", "sobol", *ANALYTIC, cwd=workdir), "'sobol'", "tpe", code=2)
    _assert_refused(run_tune("run", "--pruner", "asha", *ANALYTIC, cwd=workdir), "'asha'", "median", code=2)
    refused = run_tune("run", "--engine", "hyperopt", *ANALYTIC, cwd=workdir)
    _assert_refused(refused, "'hyperopt'", "optuna", code=2)
    assert _files(workdir) == set()


@pytest.mark.parametrize(
    ("arrays", "needles"),
    [
        ({"training_set": np.zeros((4, 64, 128))}, ("training_set", "(4, 64, 128)")),
        ({"training_set": _pairs().astype(np.int64)}, ("training_set", "int64")),
        ({"other": _pairs()}, ("training_set",)),
    ],
)
def test_wrong_arrays_are_refused(workdir: Path, arrays: dict, needles: tuple[str, ...]) -> None:
    data = _npz(workdir / "d.npz", **arrays)
    before = _files(workdir)
    _assert_refused(run_tune("run", "--data", str(data), "--epochs", "1", "-q", cwd=workdir), *needles)
    assert _files(workdir) == before


def test_nan_images_and_labels_outside_0_to_4_are_refused(workdir: Path) -> None:
    nan = _pairs()
    nan[2, 0, 5, 5] = np.nan
    bad_labels = _pairs()
    bad_labels[1, 1, 0, 0] = 5.0
    for name, pairs, needle in (("nan.npz", nan, "NaN"), ("labels.npz", bad_labels, "5")):
        data = _npz(workdir / name, training_set=pairs)
        before = _files(workdir)
        _assert_refused(
            run_tune("run", "--data", str(data), "--epochs", "1", "-q", cwd=workdir), name, needle
        )
        assert _files(workdir) == before


def test_masks_without_terrain_classes_are_refused(workdir: Path) -> None:
    """Every pixel background: every trial would score exactly 0.0 (the score ignores background)."""
    pairs = _pairs(8)
    pairs[:, 1] = 0.0
    data = _npz(workdir / "empty.npz", training_set=pairs)
    before = _files(workdir)
    for extra in ((), ("--set", "data.clean=false")):
        _assert_refused(
            run_tune("run", "--data", str(data), "--epochs", "1", "-q", *extra, cwd=workdir),
            "empty.npz",
            "no terrain class 1..4",
        )
    assert _files(workdir) == before


def test_a_contamination_filter_that_removes_almost_everything_is_named(workdir: Path) -> None:
    """Masks that really repeat (tiles of one scene): the filter, not the split, is what to turn off."""
    pairs = _pairs(12)
    pairs[:11, 1] = pairs[0, 1]  # 11 of 12 pairs share one mask: the filter would leave 1 pair
    data = _npz(workdir / "tiles.npz", training_set=pairs)
    before = _files(workdir)
    _assert_refused(
        run_tune("run", "--data", str(data), "--epochs", "1", "-q", cwd=workdir),
        "contamination filter (data.clean",
        "removed 11 of 12 pairs, leaving 1",
        "--set data.clean=false",
    )
    assert _files(workdir) == before


def test_unknown_study_and_missing_database(workdir: Path) -> None:
    _assert_refused(run_tune("status", cwd=workdir), "no study database")
    _assert_refused(run_tune("export-best", cwd=workdir), "no study database")
    assert _files(workdir) == set()
    assert run_tune("run", "--trials", "2", "--study", "real", *ANALYTIC, cwd=workdir).returncode == 0
    before = _files(workdir)
    _assert_refused(run_tune("export-best", "--study", "nope", cwd=workdir), "'nope'", "real")
    _assert_refused(run_tune("status", "--study", "nope", cwd=workdir), "'nope'")
    assert _files(workdir) == before


def test_an_empty_study_name_is_refused_not_read_as_the_default(workdir: Path) -> None:
    """`--study ""` is refused by every command, as by `tune status`, even where the default study
    exists: only a missing --study means unet-mars."""
    assert run_tune("run", "--trials", "2", *ANALYTIC, cwd=workdir).returncode == 0  # the default study
    before = _files(workdir)
    for command in ("export-best", "worker", "status"):
        _assert_refused(run_tune(command, "--study", "", cwd=workdir, timeout=120), "study name", "''")
    assert _files(workdir) == before


def test_unwritable_storage_path_is_refused(workdir: Path) -> None:
    (workdir / "a_file").write_text("not a folder")
    before = _files(workdir)
    inside_file = f"sqlite:///{workdir / 'a_file' / 'tune.db'}"
    _assert_refused(run_tune("run", "--storage", inside_file, *ANALYTIC, cwd=workdir), "a_file")
    assert _files(workdir) == before
    (workdir / "a_file").unlink()
    missing = f"sqlite:///{workdir / 'no' / 'such' / 'dir.db'}"
    _assert_refused(run_tune("run", "--storage", missing, *ANALYTIC, cwd=workdir), "does not exist")
    _assert_refused(
        run_tune("run", "--storage", "mysql+nodriver://x/y", *ANALYTIC, cwd=workdir), "not supported"
    )
    no_driver = run_tune("status", "--storage", "mysql+pymysql://u:Pw9x@127.0.0.1/y", cwd=workdir)
    _assert_refused(no_driver, "not supported")  # no MySQL driver is installed: told, not a traceback
    assert "Pw9x" not in no_driver.stderr
    _assert_refused(run_tune("run", "--storage", "postgresql://u@h/db", *ANALYTIC, cwd=workdir), "psycopg")
    assert _files(workdir) == set()


def test_password_never_printed(workdir: Path) -> None:
    url = "postgresql+psycopg://postgres:S3cretPw@127.0.0.1:5432/no_such_db_for_tune"
    result = run_tune("status", "--storage", url, cwd=workdir)
    assert result.returncode == 1
    assert "S3cretPw" not in result.stdout + result.stderr and "***" in result.stderr


def test_help_is_instant_and_imports_no_framework() -> None:
    code = (
        "import sys; from marstune.tuning.cli.app import app; "
        "print(sorted(m for m in ('tensorflow', 'ray', 'keras', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
