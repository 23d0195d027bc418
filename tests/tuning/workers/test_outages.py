"""A study that survives its database: real `tune` processes against a PostgreSQL server of the test's
own (tests/tuning/pg_instance.py), which is restarted, frozen, filled to its connection limit, and whose
workers are killed. The shared server is never touched.

Each trial of the analytic objective takes about 2 s (10 epochs of 0.2 s), as in the issue.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from marstune.tuning.study.resilient import _fail_stale
from marstune.tuning.study.storage import open_storage
from tests.tuning.pg_instance import PgInstance, pg_server
from tests.tuning.workers_util import (
    HEARTBEAT_ENV,
    by_state,
    finish,
    kill_all,
    running_mid_trial,
    start_tune,
    training,
    trials_of,
    tune_env,
    wait_for,
    write_spec,
)

CRASH_MARKS = ("Traceback", "StorageInternalError", "UnboundLocalError", "Cannot tell a", "UpdateFinished")


def _run(spec: Path, url: str, workers: int, log: Path, cwd: Path, env: dict[str, str]):  # type: ignore[no-untyped-def]
    args = ["run", "--spec", str(spec), "--storage", url, "--workers", str(workers), "--quiet"]
    return start_tune(args, log, cwd, tune_env(extra=env))


def _completed(url: str, study: str) -> int:
    return by_state(trials_of(url, study, missing_ok=True))[TrialState.COMPLETE]


def _assert_clean_end(out: str, code: int, trials: list[FrozenTrial], target: int, workers: int) -> None:
    assert code == 0, out
    assert not [mark for mark in CRASH_MARKS if mark in out], out
    states = by_state(trials)
    assert states[TrialState.COMPLETE] == target, (states, out)  # exactly the target, one command
    assert states[TrialState.RUNNING] == states[TrialState.WAITING] == 0, states
    assert out.count(", exit 0") == (workers if workers > 1 else 0), out  # every worker place ended well
    configs = [tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE]
    assert len(set(configs)) == len(configs), "a configuration was completed twice"


def test_restart_mid_study_the_same_run_ends_exactly_at_its_target(
    pg_instance: PgInstance, tmp_path: Path
) -> None:
    url, log = pg_instance.url(), tmp_path / "run.log"
    spec = write_spec(tmp_path, study="restart", trials=40, epochs=10, sleep=0.2)
    proc = _run(spec, url, 4, log, tmp_path, HEARTBEAT_ENV)
    try:
        wait_for(lambda: _completed(url, "restart") >= 8, 150, "the workers never completed 8 trials")
        pg_instance.restart()  # `pg_ctl restart -m fast`: every connection is cut
        back = datetime.now()
        code = finish([proc], timeout=240)[0]
    finally:
        kill_all([proc])
    out = log.read_text()
    trials = trials_of(url, "restart")
    _assert_clean_end(out, code, trials, 40, 4)
    assert "unreachable: " in out and "is back after" in out, out  # said once per worker, in one line
    assert all(
        t.system_attrs.get("tune:fail_kind") == "surplus" for t in trials if t.state == TrialState.FAIL
    )
    after = sorted(t.datetime_start for t in trials if t.datetime_start and t.datetime_start > back)
    told = sorted(t.datetime_complete for t in trials if t.datetime_complete and t.datetime_complete > back)
    first_new, first_told = (after[0] - back).total_seconds(), (told[0] - back).total_seconds()
    print(f"database back -> first trial told {first_told:.2f} s, first new trial started {first_new:.2f} s")
    assert first_new < 10, first_new


def test_a_stopped_postmaster_fails_status_export_and_run_within_the_connect_timeout(
    pg_instance: PgInstance,
    tmp_path: Path,
) -> None:
    url = pg_instance.url()
    env = tune_env(extra={"TUNE_DB_CONNECT_TIMEOUT": "2"})
    pids = pg_instance.freeze()  # the postmaster only: it accepts TCP and never answers
    try:
        spec = str(write_spec(tmp_path, study="frozen"))
        commands = {
            "status": (["status"], "read"),
            "export-best": (["export-best", "--study", "any"], "read"),
            "run": (["run", "--spec", spec, "--quiet"], "connect to"),
        }
        shown = f"postgresql+psycopg://postgres@127.0.0.1:{pg_instance.port}/postgres"
        for name, (command, verb) in commands.items():
            log = tmp_path / f"{name}.log"
            started = time.monotonic()
            proc = start_tune([*command, "--storage", url], log, tmp_path, env)
            code = finish([proc], timeout=60)[0]
            took = time.monotonic() - started
            lines = log.read_text().strip().splitlines()
            assert code == 1 and len(lines) == 1, lines
            assert lines[0].startswith(f"Error: cannot {verb} storage {shown}: no answer within 2 s"), lines
            assert took < 2 + 10, f"{name} took {took:.1f}s against a frozen server"  # 10 s: start-up
        # SIGTERM while it waits: the message of a command that writes nothing, not of a running trial.
        log = tmp_path / "term.log"
        proc = start_tune(
            ["status", "--storage", url], log, tmp_path, tune_env(extra={"TUNE_DB_CONNECT_TIMEOUT": "60"})
        )
        time.sleep(4)
        proc.send_signal(signal.SIGTERM)
        code = finish([proc], timeout=30)[0]
    finally:
        pg_instance.thaw(pids)
    out = log.read_text()
    assert code == 143 and out.strip() == "Interrupted: nothing was written; run the same command again.", out


@pytest.mark.parametrize("frozen", ["postmaster", "whole server"])
def test_a_stall_longer_than_the_grace_period_turns_no_worker_on_another(
    frozen: str,
    pg_instance: PgInstance,
    tmp_path: Path,
) -> None:
    """The postmaster alone: new connections time out, pooled ones work. The whole server: every query
    hangs, heartbeats included, and all of them are old when it thaws."""
    url, log = pg_instance.url(), tmp_path / "run.log"
    # The 40 s stall is 4 grace periods; a new connection gives up after 2 s and is tried again.
    env = {"TUNE_HEARTBEAT_INTERVAL": "2", "TUNE_GRACE_PERIOD": "10", "TUNE_DB_CONNECT_TIMEOUT": "2"}
    spec = write_spec(tmp_path, study="stall", trials=24, epochs=10, sleep=0.2)
    proc = _run(spec, url, 4, log, tmp_path, env)
    try:
        wait_for(lambda: len(training(url, "stall")) >= 3, 150, "the workers never trained together")
        pids = pg_instance.freeze(whole_server=frozen == "whole server")
        try:
            time.sleep(40)
        finally:
            pg_instance.thaw(pids)
        code = finish([proc], timeout=240)[0]
    finally:
        kill_all([proc])
    out = log.read_text()
    trials = trials_of(url, "stall")
    _assert_clean_end(out, code, trials, 24, 4)
    failed = [(t.number, t.user_attrs.get("fail_reason")) for t in trials if t.state == TrialState.FAIL]
    assert failed == [], failed  # no live worker's trial was failed as stale ...
    assert not [t.number for t in trials if "retry_of" in t.user_attrs], out  # ... so nothing ran twice
    assert "died" not in out, out


def test_too_few_connections_for_eight_workers_still_ends_at_the_target(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, study="full", trials=24, epochs=10, sleep=0.2)
    with pg_server(max_connections=12) as pg:
        url, log = pg.url(), tmp_path / "run.log"
        proc = _run(spec, url, 8, log, tmp_path, HEARTBEAT_ENV)
        try:
            code = finish([proc], timeout=300)[0]
        finally:
            kill_all([proc])
        out = log.read_text()
        trials = trials_of(url, "full")
    states = by_state(trials)
    assert code == 0 and states[TrialState.COMPLETE] == 24, (states, out)
    assert states[TrialState.RUNNING] == states[TrialState.WAITING] == 0, states
    assert not [mark for mark in CRASH_MARKS if mark in out], out
    assert out.count(", exit 0") == 8, out
    advice = "start fewer workers (--workers) or raise the server's max_connections"
    assert advice in out and "(too many clients: max_connections reached)" in out, out
    assert all(len(line) < 400 for line in out.splitlines() if advice in line)  # one line each


def test_a_killed_worker_is_replaced_and_its_trial_says_why_it_failed(
    pg_instance: PgInstance,
    tmp_path: Path,
) -> None:
    url, log = pg_instance.url(), tmp_path / "run.log"
    spec = write_spec(tmp_path, study="kill9", trials=12, epochs=10, sleep=0.2)
    proc = _run(spec, url, 2, log, tmp_path, HEARTBEAT_ENV)
    try:
        victim = wait_for(lambda: running_mid_trial(url, "kill9"), 150, "no worker got into a trial")
        pid = int(victim.user_attrs["worker"].rsplit(":", 1)[1])
        os.kill(pid, signal.SIGKILL)  # a child of our `tune run`, by the PID its trial names
        code = finish([proc], timeout=240)[0]
    finally:
        kill_all([proc])
    out = log.read_text()
    assert code == 0, out
    assert f"worker pid {pid} died of SIGKILL; a fresh process takes its place" in out, out
    assert f"died: pid {pid} (SIGKILL), exit 0" in out, out  # the summary reports the death
    trials = trials_of(url, "kill9")
    states = by_state(trials)
    assert states[TrialState.COMPLETE] == 12 and states[TrialState.RUNNING] == 0, states
    (dead,) = [t for t in trials if t.number == victim.number]
    assert dead.state == TrialState.FAIL and dead.system_attrs["tune:fail_kind"] == "stale"
    assert dead.user_attrs["fail_reason"].startswith(f"worker {victim.user_attrs['worker']} stopped sending")
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert retry.params == victim.params and retry.state == TrialState.COMPLETE
    pids = {int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in trials if "worker" in t.user_attrs}
    assert len(pids) >= 3, pids  # two workers and the one that took the killed one's place


def test_a_worker_whose_trial_a_peer_failed_drops_its_result_and_goes_on(
    sqlite_url: str, tmp_path: Path
) -> None:
    """What a worker cut off from the database for a grace period meets when it comes back: its running
    trial failed as stale by a peer. It says so in one line, drops that result and runs the next trial."""
    url, log = sqlite_url, tmp_path / "run.log"
    spec = write_spec(tmp_path, study="drop", trials=4, epochs=10, sleep=0.3)
    proc = _run(spec, url, 1, log, tmp_path, {})
    try:
        victim = wait_for(lambda: running_mid_trial(url, "drop"), 150, "the worker never got into a trial")
        storage = open_storage(url, heartbeat=True)  # what a live peer's reaper does, exactly
        try:
            assert _fail_stale(storage, victim._trial_id, "peer:1")
            study = optuna.load_study(study_name="drop", storage=storage)
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(
                study, storage.get_trial(victim._trial_id)
            )
        finally:
            storage.engine.dispose()
        code = finish([proc], timeout=120)[0]
    finally:
        kill_all([proc])
    out = log.read_text()
    trials = trials_of(url, "drop")
    _assert_clean_end(out, code, trials, 4, 1)
    dropped = f"trial {victim.number}: another worker failed it as stale while this one ran it"
    assert out.count(dropped) == 1 and "is dropped and its retry runs it again" in out, out
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params
