"""`python -m bench record` on a tiny grid, with real Keras training: one row per (configuration,
replicate, epoch), resumable without retraining what is recorded, and refusing a file of another grid."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from bench._common import REPO, child_env
from bench.grid import RUN_COLUMNS, load_grid, space_filling_order
from tests.bench.test_tabular import BASE

TINY = """
grid:
  loss: [crossentropy]
  base_filters: [8]
  levels: [2]
  kernel: [3]
  dropout: [0.0]
  activation: [relu]
fixed: {class_weight_exponent: 0.5, focal_gamma: 2.0}
replicates: 2
epochs: 2
data: {synthetic_items: 40, val_fraction: 0.25, test_items: 8, test_seed: 1}
cpu_left_out: []
"""


def _record(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bench", "record", "--device", "cpu", *args]
    return subprocess.run(command, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=900)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_record_resumes_without_retraining_and_logs_val_test_and_seconds(tmp_path: Path) -> None:
    grid, out = tmp_path / "grid.yaml", tmp_path / "runs.csv"
    grid.write_text(TINY)
    first = _record("--grid", str(grid), "--out", str(out), "--limit", "1")
    assert first.returncode == 0, first.stderr
    once = _rows(out)
    assert [(r["config_id"], r["replicate"], r["epoch"]) for r in once] == [
        ("c000", "0", "1"),
        ("c000", "0", "2"),
    ]
    second = _record("--grid", str(grid), "--out", str(out))
    assert second.returncode == 0, second.stderr
    assert "1 of 2 runs recorded" in second.stdout
    rows = _rows(out)
    assert list(rows[0]) == [
        *RUN_COLUMNS,
        "loss",
        "base_filters",
        "levels",
        "kernel",
        "dropout",
        "activation",
    ]
    assert rows[:2] == once  # the recorded run is kept as it was, not trained again
    assert [(r["replicate"], r["epoch"]) for r in rows] == [("0", "1"), ("0", "2"), ("1", "1"), ("1", "2")]
    for r in rows:
        assert 0.0 <= float(r["val_miou"]) <= 1.0 and 0.0 <= float(r["test_miou"]) <= 1.0
        assert float(r["cpu_seconds"]) > 0 and r["base_filters"] == "8" and r["loss"] == "crossentropy"
    # another seed trains another model: the replicates' curves differ
    assert [r["val_miou"] for r in rows[:2]] != [r["val_miou"] for r in rows[2:]]
    assert (tmp_path / "runs.csv.meta.json").exists()
    third = _record("--grid", str(grid), "--out", str(out))
    assert third.returncode == 0 and "2 of 2 runs recorded" in third.stdout and _rows(out) == rows
    shown = _record("--grid", str(grid), "--out", str(out), "--status")
    assert "2 of 2 runs recorded" in shown.stdout and "c000 replicate 1" in shown.stdout
    assert "CPU-min a run: median" in shown.stdout and _rows(out) == rows


def test_a_runs_file_of_another_grid_is_refused_and_kept(tmp_path: Path) -> None:
    grid, out = tmp_path / "grid.yaml", tmp_path / "runs.csv"
    grid.write_text(TINY.replace("base_filters: [8]", "base_filters: [16]"))
    out.write_text(
        ",".join([*RUN_COLUMNS, "loss", "base_filters", "levels", "kernel", "dropout", "activation"])
        + "\nc000,0,1,0.1,0.1,1.0,1.0,crossentropy,8,2,3,0.0,relu\n"
    )
    before = out.read_bytes()
    done = _record("--grid", str(grid), "--out", str(out))
    assert done.returncode != 0
    assert "is not the same configuration" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert out.read_bytes() == before


def test_the_order_starts_at_the_baseline_and_spreads() -> None:
    grid = load_grid()
    order = space_filling_order(grid, grid.configurations())
    assert order[0][1] == BASE  # the seed report's baseline first
    assert sorted(cid for cid, _ in order) == [cid for cid, _ in grid.configurations()]
    first8 = [c for _, c in order[:8]]
    assert {c["loss"] for c in first8} == set(grid.values["loss"])  # every loss early
    assert {c["base_filters"] for c in first8} == set(grid.values["base_filters"])


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_the_cpu_leaves_out_the_costly_corners_and_a_gpu_records_all(device: str) -> None:
    from bench.record_runs import plan

    grid = load_grid()
    todo, left_out = plan(grid, device)
    if device == "gpu":
        assert len(todo) == len(grid.configurations()) and not left_out
    else:
        assert len(left_out) == 40  # 32 filters (32 configurations) and 16/4/5 (8)
        costly = {(16, 4, 5)}
        assert all(c["base_filters"] == 32 or (16, c["levels"], c["kernel"]) in costly for _, c in left_out)
        assert len(todo) + len(left_out) == len(grid.configurations())


def test_gpu_runs_are_not_mixed_into_a_cpu_table(tmp_path: Path) -> None:
    grid, out = tmp_path / "grid.yaml", tmp_path / "runs.csv"
    grid.write_text(TINY)
    meta = tmp_path / "runs.csv.meta.json"
    meta.write_text('{"devices": ["cpu"]}\n')
    command = [
        sys.executable,
        "-m",
        "bench",
        "record",
        "--device",
        "gpu",
        "--grid",
        str(grid),
        "--out",
        str(out),
    ]
    done = subprocess.run(command, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "recorded on cpu" in done.stderr and "runs-gpu.csv" in done.stderr
    assert not out.exists() and meta.read_text() == '{"devices": ["cpu"]}\n'
