"""The Ray Tune engine on a real Ray cluster: two nodes on loopback started with `ray start`, real
OptunaSearch writing into a real SQLite file or PostgreSQL database, the real `tune` CLI as a subprocess.

The analytic objective (with a sleep per epoch) stands in for training, so the tests exercise the
service: scheduling across nodes, retries, ASHA pruning, resuming, and what lands in the database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from marstune.tuning.errors import StorageError
from marstune.tuning.study.storage import open_storage
from marstune.tuning.study.trial_attrs import trial_config
from tests.conftest import REPO, run_tune
from tests.tuning.ray_cluster import RayCluster, outside_connections, start_cluster

PASSWORD = "s3cret-Ray-pw"
ANALYTIC = ("--set", "objective.kind=analytic", "--spec", str(REPO / "studies/unet.yaml"))


def trials(url: str, study: str = "unet-mars") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=open_storage(url)).get_trials(deepcopy=False)


def ray_run(*args: str) -> list[str]:
    return ["run", "--engine", "ray", "--quiet", *ANALYTIC, *args]


def test_grid_is_refused_listing_the_valid_pairs(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    r = run_tune(*ray_run("--sampler", "grid", "--storage", f"sqlite:///{db}"), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: the ray engine has no sampler 'grid'; valid pairs are")
    assert "ray: cmaes, gp, qmc, random, tpe" in line and "optuna: cmaes, gp, grid" in line
    assert not db.exists() and not (tmp_path / "studies").exists()  # nothing written


def test_ray_flags_need_the_ray_engine(tmp_path: Path) -> None:
    r = run_tune(
        "run", *ANALYTIC, "--cpus-per-trial", "2", "--storage", f"sqlite:///{tmp_path}/t.db", cwd=tmp_path
    )
    assert r.returncode == 2
    assert "Error: --address, --cpus-per-trial and --gpus-per-trial need --engine ray" in r.stderr


def test_an_unreachable_cluster_is_one_clear_line(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    r = run_tune(*ray_run("--address", "127.0.0.1:1", "--storage", f"sqlite:///{db}"), cwd=tmp_path)
    assert r.returncode == 1
    assert (
        r.stderr.strip()
        .splitlines()[-1]
        .startswith("Error: cannot connect to the Ray cluster at 127.0.0.1:1: nothing answers at 127.0.0.1:1")
    )
    assert not db.exists()


def test_help_does_not_import_ray(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom marstune.tuning.cli.app import app\n"
        "for args in (['--help'], ['run', '--help']):\n"
        "    try:\n        app(args)\n    except SystemExit:\n        pass\n"
        "print('RAY-MODULES', sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--cpus-per-trial" in r.stdout and "--gpus-per-trial" in r.stdout and "--address" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "RAY-MODULES []"


def test_local_cluster_asha_prunes_and_cleans_up(tmp_path: Path) -> None:
    """No --address: a local cluster on 127.0.0.1 in its own temp dir, removed afterwards."""
    url = f"sqlite:///{tmp_path / 't.db'}"
    args = ("--sampler", "tpe", "--trials", "6", "--pruner", "median", "--epochs", "4", "--storage", url)
    r = run_tune(*ray_run(*args, "--set", "objective.sleep=0.2"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "study unet-mars: 6/6 finished" in r.stdout
    done = trials(url)
    assert len(done) == 6 and {t.state for t in done} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert done[0].params == {
        "base_filters": 16,
        "levels": 4,
        "kernel": 3,
        "dropout": 0.2,
        "activation": "relu",
        "loss": "crossentropy",  # the seed's loss completes the baseline
        "class_weight_exponent": 0.5,
        "focal_gamma": 2.0,
    }
    assert done[0].user_attrs["enqueued_as"] == "baseline" and done[0].state == TrialState.COMPLETE
    pruned = [t for t in done if t.state == TrialState.PRUNED]
    assert pruned, "ASHA stopped no trial"  # the baseline is the best config: later, worse ones are cut
    assert all(len(t.intermediate_values) < 4 for t in pruned)
    assert all(len(t.intermediate_values) == 4 for t in done if t.state == TrialState.COMPLETE)
    assert all(t.user_attrs["engine"] == "ray" and trial_config(t.system_attrs, t.user_attrs) for t in done)
    # The local cluster's temp dir (printed by the run) is gone, and so is every process using it.
    temp = next(
        line.split("temp dir ")[1].rstrip(")") for line in r.stderr.splitlines() if "temp dir" in line
    )
    assert temp.startswith("/tmp/rt-") and not Path(temp).exists()
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if temp.encode() in _read(p)]
    status = run_tune("status", "--storage", url, "--json", cwd=tmp_path)
    row = json.loads(status.stdout)[0]
    assert row["complete"] + row["pruned"] == 6 and row["running"] == 0 and row["best_trial"] == 0


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    c = start_cluster(tmp_path_factory.mktemp("ray-logs"))
    try:
        yield c
        assert outside_connections(c.pids()) == []  # idle cluster: still nothing but loopback
    finally:
        c.stop()
    assert not c.pids() and not any(d.exists() for d in c.temp_dirs)


def test_two_nodes_run_trials_retry_and_keep_the_password(
    cluster: RayCluster, pg_url: str, tmp_path: Path
) -> None:
    url = pg_url.replace("postgres@", f"postgres:{PASSWORD}@")  # trust auth ignores it; we must not leak it
    # 2 slots (1 CPU per node): trials 0 and 1 start together, one per node; trial 3 raises once.
    args = ("--address", cluster.address, "--sampler", "random", "--trials", "5", "--pruner", "none")
    args += ("--epochs", "2", "--cpus-per-trial", "1", "--storage", url)
    sets = ("--set", "objective.sleep=2", "--set", "objective.fail_trials=[3]")
    r = run_tune(*ray_run(*args, *sets), cwd=tmp_path, env=cluster.env)
    assert r.returncode == 0, r.stderr[-3000:]
    done = trials(pg_url)
    assert sorted(t.number for t in done) == [0, 1, 2, 3, 4]
    assert all(t.state == TrialState.COMPLETE for t in done), [t.state for t in done]
    assert {t.user_attrs["attempt"] for t in done if t.number != 3} == {1}
    assert done[3].user_attrs["attempt"] == 2  # it raised, Ray retried it, the retry completed
    assert {t.user_attrs["worker"] for t in done} == {"ray:127.0.0.1", "ray:::ffff:127.0.0.1"}
    assert len({t.user_attrs["ray_node_id"] for t in done}) == 2  # both nodes ran trials
    assert all(t.user_attrs["epochs_run"] == 2 and t.user_attrs["wall_seconds"] >= 4 for t in done)
    status = run_tune("status", "--storage", url, "--json", cwd=tmp_path)
    assert json.loads(status.stdout)[0]["complete"] == 5 and PASSWORD not in status.stdout + status.stderr
    export = run_tune("export-best", "--storage", url, cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert "trial: 0" in (tmp_path / "studies" / "unet-mars.best.yaml").read_text()
    assert PASSWORD not in r.stdout + r.stderr + export.stdout + export.stderr
    leaked = [p for d in (tmp_path, *cluster.temp_dirs) for p in d.rglob("*") if p.is_file() and _has(p)]
    assert leaked == []  # tuner.pkl, searcher state, trial results, every Ray log of both nodes


def _has(path: Path) -> bool:
    try:
        return PASSWORD.encode() in path.read_bytes()
    except OSError:
        return False


def test_a_trial_failing_twice_is_failed_with_its_reason(cluster: RayCluster, tmp_path: Path) -> None:
    """Trial 1 fails on every attempt (Ray retries it once): it ends FAIL with the reason."""
    url = f"sqlite:///{tmp_path / 't.db'}"
    args = ("--address", cluster.address, "--sampler", "random", "--seed", "10", "--trials", "2")
    args += ("--pruner", "none", "--epochs", "1", "--storage", url)
    failing = ("--set", "objective.fail_trials=[1]", "--set", "objective.fail_every_attempt=true")
    r = run_tune(*ray_run(*args, *failing), cwd=tmp_path, env=cluster.env)
    assert r.returncode == 0, r.stderr[-3000:]
    done = trials(url)
    assert [t.state for t in done] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert "injected failure of trial 1" in done[1].user_attrs["fail_reason"]
    assert "study unet-mars: 2/2 finished" in r.stdout and "1 fail" in r.stdout
    # The failure cost run-1 a trial; a second Ray run made up for it.
    assert sorted(p.name for p in (tmp_path / "studies/unet-mars/ray").glob("run-*")) == ["run-1", "run-2"]


def test_gpus_the_cluster_lacks_are_refused_before_anything_is_written(
    cluster: RayCluster, tmp_path: Path
) -> None:
    db = tmp_path / "t.db"
    args = ("--address", cluster.address, "--gpus-per-trial", "0.5", "--storage", f"sqlite:///{db}")
    r = run_tune(*ray_run(*args), cwd=tmp_path, env=cluster.env)
    assert r.returncode == 1
    assert "Error: no Ray node can run a trial with 1 CPU and 0.5 GPU" in r.stderr
    assert not db.exists() and not (tmp_path / "studies").exists()


def test_an_interrupted_run_resumes(cluster: RayCluster, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    args = ray_run("--address", cluster.address, "--sampler", "tpe", "--trials", "6", "--pruner", "none")
    args += ["--epochs", "3", "--storage", url, "--set", "objective.sleep=1"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **cluster.env}
    first = subprocess.Popen(
        [sys.executable, "-m", "marstune.tuning", *args],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not _complete(url) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert first.poll() is None, first.communicate()[1][-3000:]
        # Mid-run: the driver and both nodes talk over loopback only.
        assert outside_connections(cluster.pids() | {first.pid}) == []
        first.send_signal(signal.SIGINT)  # Ctrl-C: Ray Tune saves the run's state and stops
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, err[-3000:]
    before = trials(url)
    assert 1 <= sum(t.state == TrialState.COMPLETE for t in before) < 6
    assert not [t for t in before if t.state == TrialState.FAIL]
    run_dir = tmp_path / "studies" / "unet-mars" / "ray" / "run-1"
    assert (run_dir / "tuner.pkl").exists() and not (run_dir / "tune-finished").exists()

    # The same study name in another database starts a run of its own and leaves this one resumable.
    other = [a if a != url else f"sqlite:///{tmp_path / 'other.db'}" for a in args]
    other[other.index("6")] = "2"
    elsewhere = run_tune(*other, cwd=tmp_path, env=cluster.env)
    assert elsewhere.returncode == 0 and "resuming" not in elsewhere.stderr, elsewhere.stderr[-3000:]
    assert (tmp_path / "studies" / "unet-mars" / "ray" / "run-2" / "tune-finished").exists()

    again = run_tune(*args, cwd=tmp_path, env=cluster.env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming the interrupted Ray run {run_dir}" in again.stderr
    after = trials(url)
    assert sorted(t.number for t in after) == list(range(6))  # the interrupted trials kept their numbers
    assert all(t.state == TrialState.COMPLETE for t in after), [t.state for t in after]
    cut = [t for t in before if t.state == TrialState.RUNNING]
    assert cut  # the interruption left asked trials unfinished; the restored run finished them
    started = [t.number for t in cut if t.intermediate_values]  # begun on a worker before Ctrl-C
    assert all(after[n].user_attrs["attempt"] == 2 for n in started)  # restarted by the restored run
    assert (run_dir / "tune-finished").exists()


def _running(url: str) -> int:
    """Trials running now; 0 while the run is still creating the database or the study."""
    try:
        return sum(t.state == TrialState.RUNNING for t in trials(url))
    except (KeyError, StorageError):  # KeyError: Optuna's "Record does not exist" (no study yet)
        return 0


def _complete(url: str) -> int:
    """Completed trials so far, read without creating anything: the run may be creating the tables now."""
    from marstune.tuning.errors import StorageError
    from marstune.tuning.study import tables as study_tables

    try:
        with study_tables.reading(url) as conn:
            return study_tables.state_counts(conn, study_tables.study_id(conn, "unet-mars"))["complete"]
    except StorageError:  # no file, no tables or no study yet
        return 0


@pytest.mark.parametrize(
    ("address", "stays_loopback"),
    [("127.0.0.1:6379", True), ("[::1]:6379", True), (None, True), ("10.1.2.3:6379", False)],
)
def test_a_loopback_head_is_reached_even_when_ray_was_imported_first(
    monkeypatch: pytest.MonkeyPatch, address: str | None, stays_loopback: bool
) -> None:
    # Ray reads its cluster switch when imported; a process that imported ray before the engine ran
    # (here: this test session) would send a driver for 127.0.0.1 to the machine's outward IP.
    from ray._private import ray_constants, services

    from marstune.tuning.search.engines import ray_engine

    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    ray_engine._keep_loopback(address)
    assert (ray_constants.ENABLE_RAY_CLUSTER is False) == stays_loopback
    if stays_loopback:
        assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"


def test_a_worker_node_lost_mid_study_leaves_stdout_to_the_json(tmp_path: Path) -> None:
    """The second node is killed while trials run on it: whatever Ray says about it ("Raylet is
    terminated", dozens of lines) goes to stderr; stdout holds the one JSON object of --json."""
    cluster = start_cluster(tmp_path)
    url = f"sqlite:///{tmp_path / 't.db'}"
    args = ("--address", cluster.address, "--sampler", "random", "--trials", "4", "--pruner", "none")
    args += ("--epochs", "3", "--cpus-per-trial", "1", "--storage", url, "--json")
    command = [sys.executable, "-m", "marstune.tuning", *ray_run(*args, "--set", "objective.sleep=2")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **cluster.env}
    try:
        run = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and run.poll() is None:
            if _running(url) == 2:
                time.sleep(5)  # one slot per node: a trial trains on each
                break
            time.sleep(1)
        assert run.poll() is None, "the run ended before a trial ran on the second node"
        os.killpg(cluster.leaders[1].pid, signal.SIGKILL)  # the second node's `ray start` and its raylet
        out, err = run.communicate(timeout=900)
    finally:
        cluster.stop()
    summary = json.loads(out)  # nothing but the JSON object
    assert summary["study"] == "unet-mars" and "Raylet" not in out, err[-3000:]


def test_a_killed_head_is_one_line_and_the_same_command_resumes(tmp_path: Path) -> None:
    """The head is killed (-9, its whole process group) mid-study: the driver says so in one line within
    seconds (Ray's own waits 60 s, then logs one C++ line) and exits 1; with the head started again at
    its address, the same command resumes the saved Ray run and the study ends at exactly its target,
    nothing left RUNNING."""
    cluster = start_cluster(tmp_path / "first")
    port = int(cluster.address.rsplit(":", 1)[1])
    url = f"sqlite:///{tmp_path / 't.db'}"
    args = ray_run("--address", cluster.address, "--sampler", "random", "--trials", "4", "--pruner", "none")
    args += ["--epochs", "2", "--cpus-per-trial", "1", "--storage", url, "--set", "objective.sleep=2"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **cluster.env}
    run_dir = tmp_path / "studies" / "unet-mars" / "ray" / "run-1"
    try:
        command = [sys.executable, "-m", "marstune.tuning", *args]
        first = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None:
            saved = list(run_dir.glob("experiment_state*.json")) if run_dir.is_dir() else []
            if saved and _complete(url) and any(t.state == TrialState.RUNNING for t in trials(url)):
                break
            time.sleep(0.5)
        assert first.poll() is None, first.communicate()[1][-3000:]
        os.killpg(cluster.leaders[0].pid, signal.SIGKILL)  # the head: `ray start`, its GCS and raylet
        killed = time.monotonic()
        _, err = first.communicate(timeout=120)
        told_in = time.monotonic() - killed
    finally:
        if first.poll() is None:
            first.kill()
        cluster.stop()
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert first.returncode == 1 and len(errors) == 1, err[-3000:]
    assert errors[0].startswith(f"Error: the Ray head at {cluster.address} stopped answering"), errors
    assert "Traceback" not in err and told_in < 45, (told_in, err[-3000:])
    assert not (run_dir / "tune-finished").exists()

    again = start_cluster(tmp_path / "again", port=port, token=cluster.env["RAY_AUTH_TOKEN"])
    try:
        resumed = run_tune(*args, cwd=tmp_path, env=again.env)
    finally:
        again.stop()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming the interrupted Ray run {run_dir}" in resumed.stderr, resumed.stderr[-3000:]
    after = trials(url)
    assert sum(t.state == TrialState.COMPLETE for t in after) == 4, [t.state for t in after]
    assert not [t for t in after if t.state == TrialState.RUNNING]
