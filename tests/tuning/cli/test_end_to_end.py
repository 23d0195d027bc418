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

from tests.conftest import SMALL_UNETS, run_tune


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
    assert best["config"] == {  # the baseline: the seed's model and the seed's loss
        "base_filters": 16,
        "levels": 4,
        "kernel": 3,
        "dropout": 0.2,
        "activation": "relu",
        "loss": "crossentropy",
        "class_weight_exponent": 0.5,
        "focal_gamma": 2.0,
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
    assert theirs["value"] == {"val mIoU": pytest.approx(best["value"])}  # the metric is named
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
        *SMALL_UNETS,
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
    # A quiet console: three processes started TensorFlow, and none of its native start-up lines
    # (oneDNN, cudart_stub, cpu_feature_guard, "failed call to cuInit") reached the user.
    from marstune.tuning.train.devices import NATIVE_NOISE

    noise = [line for line in result.stderr.splitlines() if NATIVE_NOISE.match(line) or "cuInit" in line]
    assert noise == [], noise
    assert "retracing" not in result.stderr


def test_other_tools_are_not_flooded_by_the_stored_spec(tmp_path: Path) -> None:
    """The resolved spec is kept as a study system attribute: `optuna studies` rows stay short and the
    dashboard's user attributes hold a summary, while `tune worker` still finds the whole spec."""
    r = run_tune("run", "--trials", "2", "--set", "objective.kind=analytic", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    optuna_cli = shutil.which("optuna", path=str(Path(sys.executable).parent))
    url = f"sqlite:///{tmp_path}/studies/tune.db"
    out = subprocess.run(
        [optuna_cli, "studies", "--storage", url], capture_output=True, text=True, check=True
    )
    rows = [line for line in out.stdout.splitlines() if "unet-mars" in line]
    assert len(rows) == 1 and len(rows[0]) < 300 and "baseline" not in rows[0], out.stdout
    from marstune.tuning.study import tables

    with tables.reading(url) as conn:
        spec = tables.study_spec_raw(conn, tables.study_id(conn, "unet-mars"))
    assert spec is not None and spec["search"]["trials"] == 2
