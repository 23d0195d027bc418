"""Helpers for the multi-process worker tests: specs of the analytic objective, real `tune worker`
processes (output in a log file each), and reading the study back from the database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from marstune.tuning.config.spec import Spec, load_spec
from marstune.tuning.errors import StorageError
from marstune.tuning.study.lifecycle import DataInfo, prepare_study
from marstune.tuning.study.storage import open_storage

HEARTBEAT_ENV = {"TUNE_HEARTBEAT_INTERVAL": "1", "TUNE_GRACE_PERIOD": "3"}


def write_spec(
    folder: Path,
    *,
    study: str = "workers",
    sampler: str = "random",
    trials: int = 10,
    epochs: int = 2,
    sleep: float = 0.0,
    space: dict[str, Any] | None = None,
    fail_trials: Iterable[int] = (),
) -> Path:
    """A spec of the analytic objective (no TensorFlow in the workers) in `folder`/spec.yaml."""
    raw: dict[str, Any] = {
        "study": study,
        "objective": {"kind": "analytic", "sleep": sleep, "fail_trials": list(fail_trials)},
        "train": {"epochs": epochs},
        "search": {"sampler": sampler, "pruner": "none", "trials": trials},
    }
    if space is not None:
        raw["space"] = space
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def create_study(spec_path: Path, url: str) -> Spec:
    """What the head node's `tune run` does before any worker joins: the study, its spec and queue."""
    spec = load_spec(spec_path)
    prepare_study(spec, url, DataInfo(source="none (analytic objective)", fingerprint="none"))
    return spec


def tune_env(url: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **(extra or {})}
    env.pop("TUNE_STORAGE", None)
    if url is not None:
        env["TUNE_STORAGE"] = url
    return env


def start_tune(args: Iterable[str], log: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "marstune.tuning", *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def start_worker(
    study: str, url: str, log: Path, cwd: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen:
    """`tune worker --study S` with the storage in $TUNE_STORAGE, as on a worker node."""
    return start_tune(["worker", "--study", study, "--quiet"], log, cwd, tune_env(url, extra_env))


def kill_all(procs: Iterable[subprocess.Popen]) -> None:
    """Clean-up of a test: SIGKILL (by PID) whatever it started that still runs."""
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()


def finish(procs: Iterable[subprocess.Popen], timeout: float = 240) -> list[int]:
    """Wait for every process; kill (by PID) any still running at the deadline, then fail."""
    procs = list(procs)
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()


def trials_of(url: str, study: str, missing_ok: bool = False) -> list[FrozenTrial]:
    """The study's trials; with missing_ok, [] while the study does not exist yet (polling)."""
    try:
        storage = open_storage(url)
    except StorageError:
        if missing_ok:
            return []
        raise
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        if missing_ok:
            return []
        raise
    finally:
        storage.engine.dispose()


def by_state(trials: Iterable[FrozenTrial]) -> dict[TrialState, int]:
    trials = list(trials)
    return {s: sum(t.state == s for t in trials) for s in TrialState}


def wait_for(what: Callable[[], Any], timeout: float, message: str, every: float = 0.2) -> Any:
    """Poll until `what()` is truthy; return its value or fail with `message`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{message} (waited {timeout}s)")


def training(url: str, study: str) -> list[FrozenTrial]:
    """RUNNING trials that reported at least one epoch: their workers are inside training."""
    return [
        t
        for t in trials_of(url, study, missing_ok=True)
        if t.state == TrialState.RUNNING and t.intermediate_values and "worker" in t.user_attrs
    ]


def running_mid_trial(url: str, study: str) -> FrozenTrial | None:
    found = training(url, study)
    return found[0] if found else None


def logs(paths: Iterable[Path]) -> str:
    return "\n".join(p.read_text(errors="replace") for p in paths)
