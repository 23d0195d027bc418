"""A full disk (issue 21, item 5): a real small tmpfs, filled while `tune run` works on it.

The run ends in one line naming the disk (no traceback), the trial it ran is never counted as a
configuration failure, and `tune report` still reads the study (read-only: no WAL set-up).
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState

from marstune.tuning.study import artifacts, tables
from marstune.tuning.study.tables import FailKind
from tests.conftest import run_tune
from tests.tuning.workers_util import (
    HEARTBEAT_ENV,
    kill_all,
    start_tune,
    training,
    trials_of,
    tune_env,
    wait_for,
    write_spec,
)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of the test's own (the test runs as root), unmounted at teardown."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path, leave: int = 0) -> Path:
    """Write a filler file until the disk is full (or only `leave` bytes are left)."""
    filler = disk / "filler"
    chunk = b"\0" * 4096
    try:
        with filler.open("ab", buffering=0) as out:
            while os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > leave + len(chunk):
                out.write(chunk)
            while leave == 0:
                out.write(b"\0")
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    return filler


def _bytes(amount: str) -> float:
    number, unit = amount.split()
    return float(number) * {"bytes": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}[unit]


def _one_error_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-5000:]
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_the_databases_disk_filling_mid_trial_is_one_line_and_not_the_configurations_fault(
    small_disk: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{small_disk / 'tune.db'}"
    spec = write_spec(tmp_path, study="full", trials=6, epochs=8, sleep=0.4)
    args = ["run", "--spec", str(spec), "--storage", url, "-q"]
    assert run_tune(*args, "--trials", "2", cwd=tmp_path, env=tune_env()).returncode == 0
    args += ["--trials", "6"]
    log = tmp_path / "run.log"
    runner = start_tune(args, log, tmp_path, tune_env(extra=HEARTBEAT_ENV))
    try:
        wait_for(lambda: training(url, "full"), 120, "no trial started training")
        filler = fill(small_disk)
        assert runner.wait(timeout=120) == 1
    finally:
        kill_all([runner])
    result = subprocess.CompletedProcess(args, 1, "", log.read_text())
    _one_error_line(result, f"the disk holding the study database {small_disk / 'tune.db'}", str(small_disk))

    # the trial in flight: marked as the storage's fault, or (no room even for that) left RUNNING
    trials = trials_of(url, "full")
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE] * 2
    cut = trials[2]
    assert cut.state in (TrialState.FAIL, TrialState.RUNNING)
    if cut.state == TrialState.FAIL:
        assert cut.system_attrs[tables.FAIL_KIND_ATTR] == FailKind.STORAGE

    # a report reads the study on the full disk (read-only), its files going elsewhere
    out = tmp_path / "r.html"
    report = run_tune(
        *("report", "--storage", url, "--study", "full", "--no-examples", "--out", str(out)), cwd=tmp_path
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert out.is_file()

    # room again: the same command goes on to the target; no trial failed as a configuration's fault
    filler.unlink()
    again = run_tune(*args, cwd=tmp_path, env=tune_env(extra=HEARTBEAT_ENV))
    assert again.returncode == 0, again.stderr[-3000:]
    trials = trials_of(url, "full")
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6
    kinds = [t.system_attrs.get(tables.FAIL_KIND_ATTR) for t in trials if t.state == TrialState.FAIL]
    assert FailKind.ERROR not in kinds and None not in kinds, kinds


TINY = (
    "--epochs", "1", "--set", "train.max_items=24", "--set", "data.synthetic_items=24",
    "--set", "train.batch_size=8", "--set", "search.trials_per_process=0", "-q",
)  # fmt: skip


def test_a_kept_model_that_finds_its_disk_full_is_never_half_written(
    small_disk: Path, tmp_path: Path
) -> None:
    """The kept models' disk is full: the trial completes without a model, no partial file is left or
    linked, and the run stops in one line naming that disk."""
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    folder = small_disk / "artifacts"
    folder.mkdir()
    fill(small_disk, leave=64 * 1024)  # a tiny U-Net's .keras is several hundred KiB
    run = ("run", "--storage", url, "--trials", "2", "--set", f"search.artifacts={folder}", *TINY)
    result = run_tune(*run, cwd=tmp_path)
    line = _one_error_line(
        result, f"the disk holding the file {folder}", "trial 0 completed without its kept model"
    )
    free, needed = re.search(r"([\d.]+ \w+) free, ([\d.]+ \w+) needed", line).groups()  # type: ignore[union-attr]
    assert _bytes(needed) > _bytes(free), line  # the line explains itself: the model did not fit
    assert list(folder.iterdir()) == []  # no partial model
    trials = trials_of(url, "unet-mars")
    assert trials[0].state == TrialState.COMPLETE
    assert not any(k.startswith(artifacts.PREFIX) for k in trials[0].system_attrs)
    exported = run_tune("export-best", "--storage", url, cwd=tmp_path)
    assert exported.returncode == 0 and "no kept model" in exported.stderr, exported.stderr


def test_write_whole_on_a_full_disk_leaves_nothing(small_disk: Path, tmp_path: Path) -> None:
    source = tmp_path / "model.keras"
    source.write_bytes(os.urandom(512 * 1024))
    folder = small_disk / "artifacts"
    folder.mkdir()
    fill(small_disk, leave=100 * 1024)
    with pytest.raises(OSError) as caught:
        artifacts.write_whole(folder, source)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(folder)
    assert list(folder.iterdir()) == []


def test_a_disk_with_not_a_byte_left_is_one_line_for_every_command(small_disk: Path, tmp_path: Path) -> None:
    """SQLite says only "disk I/O error" when its -shm file finds no room, and Optuna wraps a read that
    cannot start as "invalid data ... max length": both were tracebacks (an adversarial pass)."""
    url = f"sqlite:///{small_disk / 'tune.db'}"
    analytic = ("--set", "objective.kind=analytic", "--epochs", "2", "-q", "--study", "full")
    assert run_tune("run", *analytic, "--storage", url, "--trials", "3", cwd=tmp_path).returncode == 0
    fill(small_disk)
    for args in (
        ("run", *analytic, "--storage", url, "--trials", "30"),
        ("report", "--study", "full", "--storage", url, "--no-examples", "--out", str(tmp_path / "r.html")),
    ):
        _one_error_line(run_tune(*args, cwd=tmp_path), "is full", str(small_disk))
