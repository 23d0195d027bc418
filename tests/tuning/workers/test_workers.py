"""Optuna workers sharing one storage: real `tune worker` / `tune run --workers K` processes, a real
PostgreSQL database (fresh per test) or SQLite file, and the analytic objective (no TensorFlow)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest
from optuna.trial import TrialState

from marstune.tuning.study.storage import PG_CONNECTIONS_PER_WORKER
from tests.conftest import run_tune
from tests.tuning.workers_util import (
    by_state,
    create_study,
    finish,
    logs,
    start_tune,
    start_worker,
    trials_of,
    tune_env,
    write_spec,
)

PASSWORD = "S3cretPw"


def test_worker_needs_no_spec_file_and_exits_0_at_the_target(sqlite_url: str, tmp_path: Path) -> None:
    spec_dir, node = tmp_path / "head", tmp_path / "node"  # the node has no studies/ and no spec
    spec_dir.mkdir(), node.mkdir()
    # 0.5 s an epoch: one worker alone needs 9 s, so a second one slow to start on a loaded machine
    # still joins.
    create_study(write_spec(spec_dir, study="joined", trials=6, epochs=3, sleep=0.5), sqlite_url)
    # `tune worker --workers 2`: two worker processes on this node, one summary.
    args = ["worker", "--study", "joined", "--storage", sqlite_url, "--workers", "2"]
    proc = start_tune(args, tmp_path / "w.log", node, tune_env())
    code = finish([proc])
    out = (tmp_path / "w.log").read_text()
    assert code == [0], out
    trials = trials_of(sqlite_url, "joined")
    assert by_state(trials)[TrialState.COMPLETE] == 6 and len(trials) == 6
    assert {t.user_attrs["epochs_run"] for t in trials} == {3}  # the stored spec's epochs, not the default 10
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers took part
    assert "[w0] trial " in out and "[w1] trial " in out, out  # their progress, prefixed
    assert out.count("study joined: 6/6 finished") == 1 and "6 complete" in out, out  # one summary
    assert out.count("exit 0") == 2, out
    late = run_tune("worker", "--study", "joined", "--storage", sqlite_url, cwd=node)  # nothing left to do
    assert late.returncode == 0 and "study joined: 6/6 finished" in late.stdout, late.stderr
    missing = run_tune("worker", "--study", "nope", "--storage", sqlite_url, "--workers", "2", cwd=node)
    assert missing.returncode == 1 and missing.stderr.count("Error: ") == 1, missing.stderr
    assert "no study named 'nope'" in missing.stderr and "joined" in missing.stderr, missing.stderr


def test_run_workers_exits_non_zero_when_a_worker_fails(sqlite_url: str, tmp_path: Path) -> None:
    # Every first attempt fails: the study's streak stops both workers (exit 1) after 10 failures in all.
    spec = write_spec(tmp_path, study="doomed", trials=3, fail_trials=range(40))
    result = run_tune(
        "run", "--spec", str(spec), "--storage", sqlite_url, "--workers", "2", "-q", cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("trials failed, so every worker stops") == 2, result.stderr  # each child
    assert "study doomed: 0/3 finished" in result.stdout, result.stdout
    failed = by_state(trials_of(sqlite_url, "doomed"))[TrialState.FAIL]
    assert 10 <= failed <= 11, failed  # counted in the study, not per process (20 before)
    assert result.stderr.count("failed), exit 1") == 2, result.stderr


def _sample_connections(db: str, stop: threading.Event, seen: list[int]) -> None:
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
        while not stop.is_set():
            seen.append(conn.execute(query, (db,)).fetchone()[0])
            time.sleep(0.1)


def test_eight_workers_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, study="eight", trials=160, epochs=2)
    db = pg_url.rsplit("/", 1)[1]
    stop, seen = threading.Event(), []
    sampler = threading.Thread(target=_sample_connections, args=(db, stop, seen))
    sampler.start()
    try:
        args = ["run", "--spec", str(spec), "--storage", pg_url, "--workers", "8", "--quiet"]
        proc = start_tune(args, tmp_path / "run.log", tmp_path, tune_env())
        code = finish([proc], timeout=400)[0]
    finally:
        stop.set()
        sampler.join()
    out = (tmp_path / "run.log").read_text()
    assert code == 0, out
    trials = trials_of(pg_url, "eight")
    states = by_state(trials)
    assert states[TrialState.COMPLETE] == 160 and len(trials) == 160, states
    assert sorted(t.number for t in trials) == list(range(160))  # no gap, no duplicate
    assert states[TrialState.RUNNING] == states[TrialState.WAITING] == 0
    assert len({t.user_attrs["worker"] for t in trials}) == 8, out
    assert "8 workers x 1 threads" in out and "study eight: 160/160 finished" in out and "160 complete" in out
    assert out.count("exit 0") == 8, out
    # Bounded: each worker process holds at most its pool (documented), the parent none while waiting.
    assert len(seen) > 20 and 0 < max(seen) <= 8 * PG_CONNECTIONS_PER_WORKER, seen


def test_four_workers_on_one_sqlite_file(sqlite_url: str, tmp_path: Path) -> None:
    create_study(write_spec(tmp_path, study="four", sampler="tpe", trials=100, epochs=2), sqlite_url)
    names = [tmp_path / f"w{k}.log" for k in range(4)]
    codes = finish([start_worker("four", sqlite_url, log, tmp_path) for log in names], timeout=400)
    out = logs(names)
    assert codes == [0, 0, 0, 0], out
    assert "locked" not in out.lower() and "Traceback" not in out, out
    trials = trials_of(sqlite_url, "four")
    assert by_state(trials)[TrialState.COMPLETE] == 100 and len(trials) == 100
    assert sorted(t.number for t in trials) == list(range(100))
    assert len({t.user_attrs["worker"] for t in trials}) == 4


def test_grid_with_three_workers_runs_each_point_once(pg_url: str, tmp_path: Path) -> None:
    space = {  # 3 x 2 x 2 = 12 points
        "base_filters": {"type": "categorical", "choices": [8, 16, 32]},
        "kernel": {"type": "categorical", "choices": [3, 5]},
        "levels": {"type": "int", "low": 3, "high": 4},
    }
    spec = create_study(write_spec(tmp_path, study="grid12", sampler="grid", space=space), pg_url)
    assert len(spec.space.grid()) == 12
    names = [tmp_path / f"w{k}.log" for k in range(3)]
    codes = finish([start_worker("grid12", pg_url, log, tmp_path) for log in names])
    assert codes == [0, 0, 0], logs(names)
    trials = trials_of(pg_url, "grid12")
    assert len(trials) == 12 and by_state(trials)[TrialState.COMPLETE] == 12
    points = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(points)) == 12
    assert set(points) == {tuple(sorted(p.items())) for p in spec.space.grid()}


def _no_password(result_text: str) -> None:
    assert PASSWORD not in result_text, result_text
    assert "S3cret" not in result_text


def test_password_never_printed_when_the_database_refuses(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:5432/nodb"
    for args in (["worker", "--study", "s", "--storage", url], ["status", "--storage", url]):
        result = run_tune(*args, cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        assert "Error: " in result.stderr and "postgres:***@127.0.0.1" in result.stderr, result.stderr
        _no_password(result.stdout + result.stderr)
    # Even the traceback that TUNE_DEBUG=1 shows keeps the password out.
    debug = run_tune("worker", "--study", "s", "--storage", url, cwd=tmp_path, env={"TUNE_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    _no_password(debug.stdout + debug.stderr)


def test_password_never_printed_by_a_working_deployment(pg_url: str, tmp_path: Path) -> None:
    # Trust authentication on the test server ignores the password: it is correct but never checked.
    url = pg_url.replace("postgres@", f"postgres:{PASSWORD}@")
    spec = write_spec(tmp_path, study="pw", trials=4)
    run = run_tune("run", "--spec", str(spec), "--storage", url, "--workers", "2", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "postgres:***@127.0.0.1" in run.stderr
    status = run_tune("status", "--storage", url, cwd=tmp_path)
    assert status.returncode == 0 and "pw" in status.stdout, status.stderr
    for result in (run, status):
        _no_password(result.stdout + result.stderr)
    assert by_state(trials_of(url, "pw"))[TrialState.COMPLETE] == 4


def test_a_worker_refuses_data_other_than_the_studys(sqlite_url: str, tmp_path: Path) -> None:
    """`tune worker --data` points a node at its own copy; a different data set would mix scores."""
    from marstune.data.synthetic import write_npz
    from marstune.tuning.config.spec import load_spec
    from marstune.tuning.errors import DataError
    from marstune.tuning.search.joining import join
    from marstune.tuning.study.lifecycle import DataInfo, prepare_study
    from marstune.tuning.study.storage import open_storage
    from marstune.tuning.train.data import prepare_data

    spec = load_spec(None, ["study=data", "data.synthetic_items=24", "search.sampler=random"])
    prepared = prepare_data(spec)  # numpy only: no model is built
    prepare_study(spec, sqlite_url, DataInfo(source="synthetic", fingerprint=prepared.fingerprint))
    storage = open_storage(sqlite_url)
    _, joined = join(storage, sqlite_url, "data")  # the stored spec regenerates the same synthetic set
    assert joined.data.synthetic_items == 24
    other = tmp_path / "other.npz"
    write_npz(other, n_train=24, n_test=2, seed=5)
    with pytest.raises(
        DataError, match=r"this worker's data \(.*other.npz, fingerprint \w+\) is not the study's"
    ):
        join(storage, sqlite_url, "data", data_path=str(other))


def test_a_recycled_run_draws_the_same_configurations_as_the_same_command(tmp_path: Path) -> None:
    """Each process that works on a study claims the next seed stream of that study (0, 1, ...), not its
    pid: the same command on a fresh database proposes the same configurations, and a recycled (second)
    process does not repeat the first one's draws."""
    import json
    import subprocess

    from marstune.tuning.search.engines import OptunaOptions
    from marstune.tuning.workers.child import RECYCLE_EXIT, ChildTask

    proposed = []
    for copy in ("a", "b"):
        url = f"sqlite:///{tmp_path / copy}.db"
        create_study(write_spec(tmp_path, study="seeded", trials=6, epochs=1), url)
        for _ in range(2):  # what the pool does for a one-worker `tune run`: two processes in turn
            task = ChildTask("seeded", OptunaOptions(threads=1, quiet=True, create=False, max_trials=3))
            child = subprocess.run(
                task.argv(), env=tune_env(url), capture_output=True, text=True, cwd=tmp_path
            )
            assert child.returncode in (0, RECYCLE_EXIT), child.stderr
        proposed.append([t.params for t in sorted(trials_of(url, "seeded"), key=lambda t: t.number)])
    assert len(proposed[0]) == 6 and proposed[0] == proposed[1]
    assert len({json.dumps(p, sort_keys=True) for p in proposed[0]}) == 6
