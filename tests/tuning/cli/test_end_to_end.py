"""The real thing, as a user runs it: `tune run` trains the real U-Net, `tune export-best` writes the
best configuration, and Optuna's own CLI reads our database and agrees."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_tune

pytestmark = pytest.mark.slow


def test_run_export_and_optuna_cli_agree(tmp_path: Path) -> None:
    (tmp_path / "studies").mkdir()
    result = run_tune(
        "run",
        "--trials",
        "1",
        "--epochs",
        "2",
        "--study",
        "e2e",
        "--set",
        "train.max_items=48",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.threads=2",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "SYNTHETIC" in result.stderr  # said loudly
    assert "trial 0 epoch 2/2" in result.stderr  # progress per epoch
    db = tmp_path / "studies" / "tune.db"
    assert db.exists()

    exported = run_tune("export-best", "--study", "e2e", "--json", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    summary = json.loads(exported.stdout)
    best = yaml.safe_load((tmp_path / "studies" / "e2e.best.yaml").read_text())
    assert best["kind"] == "tune/best-config" and best["trial"] == 0 == summary["trial"]
    assert best["config"] == {
        "base_filters": 16,
        "levels": 4,
        "kernel": 3,
        "dropout": 0.2,
        "activation": "relu",
    }
    assert 0.0 <= best["value"] <= 1.0
    assert set(best["per_class_iou"]) == {"background", "soil", "bedrock", "sand", "big_rock"}
    assert best["data"]["synthetic"] is True and len(best["data"]["fingerprint"]) == 16
    assert best["spec"]["train"]["epochs"] == 2 and best["packages"]["tensorflow"]

    optuna_cli = shutil.which("optuna", path=str(Path(sys.executable).parent))
    out = subprocess.run(
        [optuna_cli, "best-trial", "--study-name", "e2e", "--storage", f"sqlite:///{db}", "-f", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    theirs = json.loads(out.stdout)
    assert theirs["number"] == best["trial"]
    assert theirs["value"] == pytest.approx(best["value"])
    assert theirs["params"] == best["params"]
    attrs = theirs["user_attrs"]
    assert attrs["epochs_run"] == 2 and attrs["device"] == "cpu" and attrs["images_per_second"] > 0

    status = run_tune("status", "--json", cwd=tmp_path)
    row = json.loads(status.stdout)[0]
    assert (row["study"], row["complete"], row["best_trial"]) == ("e2e", 1, 0)


def test_a_long_run_recycles_its_worker_process_and_loses_nothing(tmp_path: Path) -> None:
    """search.trials_per_process=2: trials 0-1, 2-3 and 4 train in three processes (TensorFlow's memory
    goes with each), and the study is whole: 5 complete trials, one summary, exit 0."""
    import optuna

    from marstune.tuning.study.storage import open_storage

    (tmp_path / "studies").mkdir()
    result = run_tune(
        *("run", "--sampler", "random", "--trials", "5", "--epochs", "1", "--study", "recycled", "-q"),
        *("--set", "search.trials_per_process=2", "--set", "search.pruner=none", "--set", "train.threads=1"),
        *("--set", "train.max_items=24", "--set", "train.batch_size=8", "--set", "data.synthetic_items=40"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "1 worker x 1 threads" in result.stderr  # the spec's train.threads reaches the child
    assert "a fresh process every 2 trials" in result.stderr
    assert result.stderr.count("recycled after its trials") == 2, result.stderr
    study = optuna.load_study(
        study_name="recycled", storage=open_storage(f"sqlite:///{tmp_path}/studies/tune.db")
    )
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    workers = [t.user_attrs["worker"] for t in trials]
    assert workers[0] == workers[1] != workers[2] == workers[3] != workers[4], workers
    assert "study recycled: 5/5 finished" in result.stdout and "5 complete" in result.stdout
