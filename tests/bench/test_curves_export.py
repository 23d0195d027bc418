"""`python -m bench curves` on a small study made with Optuna's own API: what a recording stores is what
the curves file holds, rounded, with the design's progress counted and the database left untouched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from bench.curves_data import curves_from_doc
from bench.curves_export import export
from tests.conftest import REPO

SPACE = {
    "base_filters": optuna.distributions.CategoricalDistribution([8, 16, 32]),
    "levels": optuna.distributions.IntDistribution(2, 5),
    "kernel": optuna.distributions.CategoricalDistribution([3, 5]),
    "dropout": optuna.distributions.FloatDistribution(0.0, 0.5),
    "activation": optuna.distributions.CategoricalDistribution(["relu", "elu", "gelu", "swish"]),
}
POINTS = [
    {"base_filters": 16, "levels": 4, "kernel": 3, "dropout": 0.2, "activation": "relu"},
    {"base_filters": 32, "levels": 2, "kernel": 5, "dropout": 0.41, "activation": "gelu"},
    {"base_filters": 8, "levels": 5, "kernel": 3, "dropout": 0.0, "activation": "swish"},
    {"base_filters": 8, "levels": 3, "kernel": 5, "dropout": 0.3, "activation": "elu"},  # left waiting
]


def _log(k: int) -> list[dict[str, Any]]:
    return [
        {
            "val_miou": 0.1 + 0.0512345678 * t + 0.01 * k,
            "per_class_iou": [0.9, 0.5 + 0.01 * t, 0.123456789, None, 0.0],
            "seconds": 10.0 + t / 3,
            "cpu_seconds": 9.87654321 + k,
            "train_seconds": 9.0,
            "images_per_second": 35.777,
        }
        for t in range(3)
    ]


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    db = tmp_path / "record.db"
    study = optuna.create_study(study_name="curves", storage=f"sqlite:///{db}", direction="maximize")
    study.set_user_attr("spec", {"space": {}, "train": {"epochs": 3, "threads": 1}})
    for point in POINTS:
        study.enqueue_trial(point)
    for k in range(3):
        trial = study.ask(SPACE)
        log = _log(k)
        for step, row in enumerate(log):
            trial.report(row["val_miou"], step)
        trial.set_user_attr("epoch_log", log)
        trial.set_user_attr("params", 1000 * (k + 1))
        trial.set_user_attr("worker", f"host:{100 + k}")
        study.tell(trial, max(r["val_miou"] for r in log))
    return db


def test_export_holds_every_recorded_epoch_rounded_and_counts_the_design(
    recording: Path, tmp_path: Path
) -> None:
    before = recording.read_bytes()
    out = tmp_path / "curves.json"
    doc = export(recording, out)
    assert recording.read_bytes() == before  # opened read-only: not a byte written
    design = doc["recipe"]["design"]
    assert (design["size"], design["complete"]) == (4, 3)
    assert design["trial_states"] == {"complete": 3, "waiting": 1}
    assert doc["recipe"]["machine"]["threads_per_worker"] == 1
    assert doc["recipe"]["regenerate"] == "python -m bench record-design && python -m bench curves"
    configs = doc["configs"]
    assert [c["params"] for c in configs] == [
        dict(sorted(p.items())) for p in POINTS[:3]
    ]  # choices, not indices
    assert [c["model_params"] for c in configs] == [1000, 2000, 3000]
    row = configs[1]["epochs"][2]
    assert row == {
        "val_miou": 0.21247,
        "per_class_iou": [0.9, 0.52, 0.12346, None, 0.0],
        "seconds": 10.667,
        "cpu_seconds": 10.877,
        "train_seconds": 9.0,
        "images_per_second": 35.78,
    }
    assert json.loads(out.read_text()) == doc


def test_every_epoch_row_is_one_line_so_a_re_export_diffs_by_configuration(
    recording: Path, tmp_path: Path
) -> None:
    out = tmp_path / "curves.json"
    export(recording, out)
    lines = out.read_text().splitlines()
    rows = [line for line in lines if line.strip().startswith('{"val_miou"')]
    assert len(rows) == 9
    export(recording, out)
    assert out.read_text().splitlines() == lines  # the same recording, the same file


def test_the_exported_file_loads_as_arrays_for_fitting(recording: Path, tmp_path: Path) -> None:
    out = tmp_path / "curves.json"
    curves = curves_from_doc(export(recording, out))
    assert curves.n == 3 and curves.epochs == 3 and curves.design_size == 4
    assert curves.miou[2].round(5).tolist() == [0.12, 0.17123, 0.22247]
    assert curves.cpu_seconds[:, 0].round(3).tolist() == [9.877, 10.877, 11.877]


def test_command_line_reports_progress_and_refuses_a_missing_database(
    recording: Path, tmp_path: Path
) -> None:
    out = tmp_path / "c.json"
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "bench", "curves", *a], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    ok = run("--db", str(recording), "--out", str(out))
    assert ok.returncode == 0, ok.stderr
    assert "3 of 4 design configurations complete" in ok.stdout and out.exists()
    missing = run("--db", str(tmp_path / "nope.db"), "--out", str(tmp_path / "x.json"))
    assert missing.returncode != 0 and "no recording at" in missing.stderr
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "nope.db").exists()
