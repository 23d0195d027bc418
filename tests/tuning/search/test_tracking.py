"""`--mlflow URI` against a real MLflow tracking server, started on 127.0.0.1 by the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SMALL_UNETS, run_tune
from tests.tuning.servers import free_port

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    args = [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    args += ["--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    args += ["--artifacts-destination", str(tmp_path / "mlartifacts"), "--serve-artifacts"]
    log = (tmp_path / "mlflow.log").open("w")
    server = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # a busy 2-core machine took over 2 minutes
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "mlflow.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # its own process group: the server and its workers
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()


def test_every_trial_is_an_mlflow_run_with_params_curves_and_model(
    mlflow_server: str, tmp_path: Path
) -> None:
    args = ("run", "--trials", "2", "--epochs", "2", "--sampler", "random", "--mlflow", mlflow_server)
    args += ("--set", "train.max_items=24", "--set", "data.synthetic_items=24", "--set", "train.batch_size=8")
    args += SMALL_UNETS
    args += ("--set", "search.trials_per_process=0", "--set", "search.keep_models=2", "-q")
    r = run_tune(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("unet-mars")
    assert experiment is not None
    runs = sorted(client.search_runs([experiment.experiment_id]), key=lambda run: run.data.tags["tune.trial"])
    assert [run.info.run_name for run in runs] == ["trial-0", "trial-1"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["base_filters"] in ("8", "16", "32") and "loss" in run.data.params
        history = client.get_metric_history(run.info.run_id, "val_miou")
        assert [m.step for m in history] == [0, 1]  # one value per epoch
        assert run.data.metrics["best_val_miou"] == pytest.approx(max(m.value for m in history))
        for key in ("loss", "val_loss", "iou_background", "iou_soil"):  # (24 pairs: no big rock seen)
            per_epoch = client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in per_epoch] == [0, 1], key  # one value per epoch
        assert all(m.value >= 0 for m in client.get_metric_history(run.info.run_id, "loss"))
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == []  # no plain model.keras
    import mlflow

    models = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert sorted(m.source_run_id for m in models) == sorted(run.info.run_id for run in runs)  # both kept
    assert {m.name for m in models} == {"model"}
    mlflow.set_tracking_uri(mlflow_server)
    version = mlflow.register_model(f"runs:/{runs[0].info.run_id}/model", "unet-mars-best")
    assert version.version == "1"  # registrable
    loaded = mlflow.keras.load_model(f"models:/unet-mars-best/{version.version}")
    assert loaded.output_shape == (None, 64, 128, 5)  # the U-Net, loaded back by the keras flavor


def test_an_unreachable_tracking_server_is_one_line_before_any_training(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    args = ("run", "--trials", "1", "--mlflow", url, "--set", "objective.kind=analytic", "-q")
    # MLflow's own retries (7, with backoff) kept this silent for 4 minutes; tune asks briefly
    r = run_tune(*args, cwd=tmp_path, timeout=90)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"Error: cannot reach MLflow at {url}")
    assert list(tmp_path.iterdir()) == []  # told before the study or anything else was made


@pytest.mark.parametrize("uri", ["not-a-server", "file:///nowhere/mlruns"])
def test_a_tracking_uri_mlflow_refuses_is_one_line(uri: str, tmp_path: Path) -> None:
    args = ("run", "--trials", "1", "--mlflow", uri, "--set", "objective.kind=analytic", "-q")
    r = run_tune(*args, cwd=tmp_path)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr[-2000:]
    # MLflow 3 refuses a folder store unless told: the line says so, and what to use instead
    assert lines[0].startswith("Error: MLflow no longer takes a folder or file:// store"), lines[0]
    assert "--mlflow sqlite:///studies/mlflow.db" in lines[0] and "MLFLOW_ALLOW_FILE_STORE" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_mlflow_in_the_studys_own_database_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "studies").mkdir()
    args = ("run", "--trials", "1", "--set", "objective.kind=analytic", "-q")
    storage = ("--storage", "sqlite:///studies/tune.db")
    r = run_tune(*args, *storage, "--mlflow", f"sqlite:///{tmp_path}/studies/tune.db", cwd=tmp_path)
    assert r.returncode != 0 and "is the study's own database" in r.stderr, r.stderr[-2000:]
    assert list((tmp_path / "studies").iterdir()) == []  # no MLflow tables in it, no study either


def test_same_database_knows_one_database_by_its_other_names() -> None:
    from marstune.tuning.study.urls import same_database

    assert same_database("postgresql://u:pw@127.0.0.1:5432/tune", "postgresql+psycopg://u@localhost/tune")
    assert not same_database("postgresql://u@127.0.0.1/mlflow", "postgresql+psycopg://u@127.0.0.1/tune")
    assert not same_database("postgresql://u@db:5433/tune", "postgresql://u@db/tune")
    assert same_database("sqlite:///a/../tune.db", "sqlite:///tune.db")
    assert not same_database("http://127.0.0.1:5000", "sqlite:///tune.db")


def test_quiet_shows_none_of_mlflows_own_lines(tmp_path: Path) -> None:
    """A database tracking store is made by MLflow in this process: its table creation and migrations
    (INFO lines of mlflow and alembic) printed under -q."""
    args = ("run", "-q", "--trials", "2", "--storage", "sqlite:///s.db", "--mlflow", "sqlite:///mlflow.db")
    r = run_tune(
        *args, "--set", "objective.kind=analytic", "--set", "search.trials_per_process=0", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "mlflow.db").stat().st_size > 0  # tracked
    assert r.stderr == ""  # nothing at all: ours is quiet, and so are MLflow and alembic
