"""Fault tolerance with real processes: a worker SIGKILLed mid-trial, SIGINT/SIGTERM and a restart.

Heartbeats run every 1 s with a 3 s grace period here ($TUNE_HEARTBEAT_INTERVAL / $TUNE_GRACE_PERIOD);
`objective.sleep` makes each analytic epoch last long enough to kill a worker inside a trial.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from optuna.trial import TrialState

from tests.tuning.workers_util import (
    HEARTBEAT_ENV,
    by_state,
    create_study,
    finish,
    kill_all,
    logs,
    running_mid_trial,
    start_tune,
    start_worker,
    training,
    trials_of,
    tune_env,
    wait_for,
    write_spec,
)

GRACE = int(HEARTBEAT_ENV["TUNE_GRACE_PERIOD"])
# A live worker looks for dead peers once per heartbeat (from its epoch reports) or per 2 s poll: the
# dead trial is failed at most ~2 s after its grace period ends; 3 s more absorb a busy CI machine.
DETECTION_SLACK = 5


def _state(url: str, study: str, number: int) -> TrialState:
    return next(t.state for t in trials_of(url, study) if t.number == number)


def _pid(trial_worker: str) -> int:
    return int(trial_worker.rsplit(":", 1)[1])


def test_sigkilled_worker_trial_is_failed_by_heartbeat_and_rerun_once(pg_url: str, tmp_path: Path) -> None:
    create_study(write_spec(tmp_path, study="kill", trials=5, epochs=3, sleep=1.0), pg_url)
    names = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_worker("kill", pg_url, log, tmp_path, HEARTBEAT_ENV) for log in names]
    try:
        victim = wait_for(lambda: running_mid_trial(pg_url, "kill"), 90, "no worker got into a trial")
        pid = _pid(victim.user_attrs["worker"])
        (dead,) = [p for p in procs if p.pid == pid]
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        dead.wait()
        wait_for(
            lambda: _state(pg_url, "kill", victim.number) == TrialState.FAIL,
            GRACE + DETECTION_SLACK + 10,
            f"trial {victim.number} of the killed worker was never failed",
        )
        took = time.monotonic() - killed_at
        (live,) = [p for p in procs if p is not dead]
        assert finish([live]) == [0], logs(names)
    finally:
        kill_all(procs)
    assert dead.returncode == -signal.SIGKILL
    print(f"trial {victim.number} failed {took:.1f}s after SIGKILL (grace {GRACE}s)")
    assert took <= GRACE + DETECTION_SLACK, f"failed {took:.1f}s after the kill"
    trials = trials_of(pg_url, "kill")
    states = by_state(trials)
    assert states[TrialState.COMPLETE] == 5, states  # the study still reaches its target
    assert states[TrialState.RUNNING] == states[TrialState.WAITING] == 0
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [victim.number]
    retries = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retries) == 1, [t.user_attrs for t in trials]  # re-run exactly once ...
    assert retries[0].params == victim.params and retries[0].state == TrialState.COMPLETE  # ... same params
    assert retries[0].user_attrs["worker"] != victim.user_attrs["worker"]  # by the live worker


def test_sigint_stops_a_worker_cleanly_and_a_restart_continues(sqlite_url: str, tmp_path: Path) -> None:
    create_study(write_spec(tmp_path, study="int", trials=3, epochs=4, sleep=0.5), sqlite_url)
    log = tmp_path / "w.log"
    proc = start_worker("int", sqlite_url, log, tmp_path)
    try:
        trial = wait_for(
            lambda: running_mid_trial(sqlite_url, "int"), 90, "the worker never got into a trial"
        )
        proc.send_signal(signal.SIGINT)
        code = finish([proc], timeout=60)[0]
    finally:
        kill_all([proc])
    out = log.read_text()
    assert code == 130, out
    assert "Interrupted: the running trial is marked failed" in out and "Traceback" not in out, out
    trials = trials_of(sqlite_url, "int")
    (stopped,) = [t for t in trials if t.number == trial.number]
    assert stopped.state == TrialState.FAIL and "interrupted" in stopped.user_attrs["fail_reason"]
    assert by_state(trials)[TrialState.RUNNING] == 0
    restart = start_worker("int", sqlite_url, tmp_path / "again.log", tmp_path)
    assert finish([restart]) == [0], (tmp_path / "again.log").read_text()
    states = by_state(trials_of(sqlite_url, "int"))
    assert states[TrialState.COMPLETE] == 3 and states[TrialState.RUNNING] == states[TrialState.WAITING] == 0


def test_sigterm_to_run_workers_stops_every_worker_and_run_again_continues(
    pg_url: str, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, study="term", trials=6, epochs=4, sleep=0.5)
    args = ["run", "--spec", str(spec), "--storage", pg_url, "--workers", "2", "--quiet"]
    proc = start_tune(args, tmp_path / "run.log", tmp_path, tune_env())
    try:
        wait_for(
            lambda: len(training(pg_url, "term")) == 2,
            120,
            "the two workers never trained at the same time",
        )
        proc.send_signal(signal.SIGTERM)  # to the parent only: it forwards to its workers
        code = finish([proc], timeout=60)[0]
    finally:
        kill_all([proc])
    out = (tmp_path / "run.log").read_text()
    assert code == 143, out  # 128 + SIGTERM, the convention (SIGINT: 130)
    assert "SIGTERM: stopping 2 workers" in out and out.count("Interrupted: the running trial") == 1, out
    assert out.count("exit 143") == 2 and "Traceback" not in out, out  # each worker's summary line
    trials = trials_of(pg_url, "term")
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert len(stopped) == 2 and all("interrupted" in t.user_attrs["fail_reason"] for t in stopped)
    assert by_state(trials)[TrialState.RUNNING] == 0
    again = start_tune(args, tmp_path / "again.log", tmp_path, tune_env())
    assert finish([again]) == [0], (tmp_path / "again.log").read_text()
    states = by_state(trials_of(pg_url, "term"))
    assert states[TrialState.COMPLETE] == 6 and states[TrialState.RUNNING] == states[TrialState.WAITING] == 0
