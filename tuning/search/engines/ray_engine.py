"""The Ray Tune engine: a `Tuner` with OptunaSearch over the SAME Optuna storage and study.

Trials therefore show up in `tune status`, the dashboard and `tune export-best` like any other. The
searcher runs on the driver and is the only thing that touches the database; workers get the spec and a
config (see ray_trainable.py, the other file importing ray). Pruning is Ray's ASHA scheduler; a failed
trial is retried once; an interrupted run resumes from studies/<study>/ray/run-<k> when run again.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from marstune.tuning.config.spec import Spec
from marstune.tuning.errors import TuneError, redact
from marstune.tuning.search.engines import RayOptions, RunSummary, check_trial_resources

if TYPE_CHECKING:
    import optuna
    from optuna.samplers import BaseSampler
    from optuna.storages import RDBStorage

    from marstune.tuning.search.progress import Progress

if importlib.util.find_spec("ray") is None:  # load_engine turns this into the pip line of the extra
    raise ImportError("ray is not installed", name="ray")

TRAINABLE = "marstune.tuning.search.engines.ray_trainable"
DONE_FILE = "tune-finished"  # written into a Ray run's directory when it ended without interruption
# Written into a Ray run's directory when it starts: whose run it is (storage and study), so that a run of
# the same study name in another database never resumes it.
OWNER_FILE = "tune-owner"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
# The driver watches the head it joined (one TCP connect to its GCS every HEAD_CHECK_SECONDS): Ray's own
# driver waits 60 s for a lost head, then exits with one C++ log line. HEAD_LOST_AFTER misses in a row
# (~10 s) say the head is gone; a head that misses one check (a busy machine) is not.
HEAD_CHECK_SECONDS = 2.0
HEAD_LOST_AFTER = 5


def _host(address: str) -> str:
    if address.startswith("["):  # [v6]:port
        return address[1:].split("]", 1)[0]
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


def _prepare_env(address: str | None) -> None:
    """Before `import ray`: keep a local (or loopback) cluster on 127.0.0.1, and write no token file.

    Ray 2.60 swaps 127.0.0.1 for the machine's external address unless its multi-node mode is off; a
    cluster on this machine's loopback does not need it. A new local cluster gets a fresh in-memory
    token instead of Ray's default of creating ~/.ray/auth_token.
    """
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # its tables ignore verbose=0; our Progress reports
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports leave the machine
    if address is None or _host(address) in _LOOPBACK:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if address is None and "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def _keep_loopback(address: str | None) -> None:
    """Ray rewrites a loopback address to the machine's outward IP (services.resolve_ip_for_localhost)
    unless clusters are switched off; a head bound to 127.0.0.1 is then never reached and ray.init
    retries for minutes. The variable _prepare_env sets is read when ray is imported, so a process
    that imported ray before (a notebook, another library) needs the constant itself."""
    if address is not None and _host(address) not in _LOOPBACK:
        return
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def _connect(address: str | None) -> str | None:
    """Join the cluster at `address`, or start a local one in its own temp dir (returned, to remove)."""
    import ray

    _keep_loopback(address)
    temp_dir = None
    try:
        if address is None:
            temp_dir = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: unix socket paths are limited
            ray.init(
                address="local",
                _node_ip_address="127.0.0.1",
                _temp_dir=temp_dir,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
        else:
            _check_reachable(address)
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as exc:
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
        reason = redact(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise TuneError(
            f"cannot connect to {where}: {reason}; start one with `ray start --head` (and set "
            "RAY_AUTH_MODE/RAY_AUTH_TOKEN as on the cluster) or omit --address"
        ) from None
    return temp_dir


def _check_reachable(address: str) -> None:
    """Ray retries an unreachable head for minutes, logging as it goes; say it in one line instead."""
    if address == "auto" or "://" in address or ":" not in address:
        return
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"nothing answers at {address} ({exc.strerror or exc})") from None


def head_lost_line(head: str) -> str:
    return (
        f"Error: the Ray head at {head} stopped answering (killed, restarted or its machine is down); the "
        "Ray run is saved: start the head again at that address, then run the same command to resume it"
    )


@contextlib.contextmanager
def _head_watched(address: str | None) -> Iterator[None]:
    """While a driver runs on a cluster it joined (--address), a head that stops answering ends this
    process at once with one line: the run's state is on this machine (studies/<study>/ray), so the same
    command resumes it once the head is back. A local cluster is this process's own: not watched."""
    if address is None:
        yield
        return
    import ray

    host, _, port = ray.get_runtime_context().gcs_address.rpartition(":")
    stop = threading.Event()

    def watch() -> None:
        misses = 0
        while not stop.wait(HEAD_CHECK_SECONDS):
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=HEAD_CHECK_SECONDS).close()
                misses = 0
            except OSError:
                misses += 1
            if misses >= HEAD_LOST_AFTER and not stop.is_set():
                os.write(2, ("\n" + redact(head_lost_line(address)) + "\n").encode())
                os._exit(1)  # Ray's calls would block on the lost head; nothing here can end them cleanly

    watcher = threading.Thread(target=watch, name="tune-ray-head-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()


def _shutdown(temp_dir: str | None) -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    if temp_dir:
        shutil.rmtree(temp_dir, ignore_errors=True)


def _check_resources(cpus: float, gpus: float) -> int:
    """How many trials fit on the cluster at once (per node: a trial runs on one node); 0 is an error."""
    import ray

    check_trial_resources(cpus, gpus)
    slots = 0
    for node in ray.nodes():
        res = node.get("Resources", {}) if node.get("Alive") else {}
        fits = math.floor(res.get("CPU", 0) / cpus + 1e-9)
        slots += min(fits, math.floor(res.get("GPU", 0) / gpus + 1e-9)) if gpus else fits
    if slots == 0:
        have = ray.cluster_resources()
        raise TuneError(
            f"no Ray node can run a trial with {cpus:g} CPU and {gpus:g} GPU (the cluster has "
            f"{have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU in all); lower --cpus-per-trial "
            "or --gpus-per-trial, or add nodes"
        )
    return slots


@dataclass
class Driver:
    """What the searcher needs on the driver and must never pickle: the storage, progress, counters."""

    storage: RDBStorage
    spec: Spec
    progress: Progress
    sampler: BaseSampler
    threads: int
    tensorboard_dir: str | None
    resources: dict[str, float]
    slots: int
    study_id: int
    deadline: float | None  # search.timeout: no trial starts after it (running ones finish), as in Optuna
    target: int
    done: int  # finished (complete + pruned) trials in the study
    ran: int = 0
    failed: int = 0
    finished_this_run: int = 0
    last_reason: str = ""
    stop_reason: str | None = None  # search/failures.py: the study's last trials all failed
    best: float | None = None
    placed: set[str] = field(default_factory=set)  # Ray trial ids whose node is recorded

    def record(self, number: int, state: str, value: float | None, reason: str) -> None:
        self.ran += 1
        if state == "fail":
            self.failed += 1
            self.last_reason = reason
        else:
            self.done += 1
            self.finished_this_run += 1
        if value is not None and (self.best is None or value > self.best):
            self.best = value
        shown = {"complete": "complete", "pruned": "pruned", "fail": "failed"}[state]
        self.progress.trial_finished(number, shown, value, reason)


def run(spec: Spec, storage_url: str, options: RayOptions) -> RunSummary:
    with _stdout_on_stderr():
        return _run(spec, storage_url, options)


@contextlib.contextmanager
def _stdout_on_stderr() -> Iterator[None]:
    """While Ray runs, file descriptor 1 is stderr: Ray's log monitor and its C++ core write what they
    have to say (a lost node's 46-line "Raylet is terminated" text) to stdout, which belongs to the
    summary (`--json`: one JSON object) printed after the run."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _run(spec: Spec, storage_url: str, options: RayOptions) -> RunSummary:
    address = options.address
    cpus, gpus = options.cpus_per_trial, options.gpus_per_trial
    _prepare_env(address)
    from marstune.tuning.search import failures
    from marstune.tuning.search.progress import Progress
    from marstune.tuning.search.samplers import make_sampler
    from marstune.tuning.study.lifecycle import claim_seed_stream, create_or_join, target_of
    from marstune.tuning.study.storage import open_storage

    started = time.monotonic()
    temp_dir = _connect(address)
    progress: Progress | None = None
    try:
        slots = _check_resources(cpus, gpus)  # before the study exists: bad flags write nothing
        storage = open_storage(storage_url, create=True)
        study, notes = create_or_join(
            spec, storage, storage_url, options.data, explicit_target=options.explicit_target
        )
        failures.check(study)  # a study stopped for failing is not restarted blindly
        target = target_of(study)
        progress = Progress(spec.study, target, quiet=options.quiet, epochs=spec.train.epochs)
        for note in notes:
            progress.note(note)
        if temp_dir:
            print(f"Ray: a local cluster on 127.0.0.1 (temp dir {temp_dir})", file=sys.stderr, flush=True)
        from marstune.tuning.search.engines import ray_trainable as rt

        driver = Driver(
            storage=storage,
            spec=spec,
            progress=progress,
            # A continued study must not replay the first run's draws.
            sampler=make_sampler(spec.search.sampler, spec.train.seed, claim_seed_stream(study, storage_url)),
            threads=options.threads or max(1, int(cpus)),
            tensorboard_dir=str(Path(options.tensorboard_dir).resolve()) if options.tensorboard_dir else None,
            resources={"cpu": cpus, "gpu": gpus},
            slots=slots,
            study_id=storage.get_study_id_from_name(spec.study),
            deadline=started + spec.search.timeout if spec.search.timeout else None,
            target=target,
            done=_finished(study),
        )
        rt.DRIVERS[spec.study] = driver
        with _head_watched(address):
            _run_until_target(driver, study, target, _owner(storage_url, driver.study_id))
    finally:
        if progress is not None:
            progress.close()  # the live bar goes before the summary
        _shutdown(temp_dir)
        if "marstune.tuning.search.engines.ray_trainable" in sys.modules:
            sys.modules["marstune.tuning.search.engines.ray_trainable"].DRIVERS.pop(spec.study, None)
    try:
        best = study.best_trial
    except ValueError:
        best = None
    return RunSummary(
        study=spec.study,
        target=target,
        finished=_finished(study),
        ran_here=driver.ran,
        failed_here=driver.failed,
        best_value=best.value if best else None,
        best_number=best.number if best else None,
        best_params=dict(best.params) if best else None,
        seconds=time.monotonic() - started,
    )


def _finished(study: optuna.Study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _owner(storage_url: str, study_id: int) -> str:
    """A digest of the storage (an SQLite file by its absolute path; no password) and the study's id."""
    import hashlib

    from marstune.tuning.study.urls import display_url, sqlite_path

    path = sqlite_path(storage_url)
    where = str(path.absolute()) if path is not None else display_url(storage_url)
    return hashlib.sha256(f"{where}#{study_id}".encode()).hexdigest()[:16]


def _ours(run: Path, owner: str) -> bool:
    try:
        return (run / OWNER_FILE).read_text().strip() == owner
    except OSError:
        return False


def _run_until_target(driver: Driver, study: optuna.Study, target: int, owner: str) -> None:
    """Resume the last Ray run if it was interrupted, then start new runs for what is still missing."""
    from ray import tune

    spec = driver.spec
    root = (Path("studies") / spec.study / "ray").resolve()
    root.mkdir(parents=True, exist_ok=True)
    runs = sorted((p for p in root.glob("run-*") if p.name[4:].isdigit()), key=lambda p: int(p.name[4:]))
    mine = [run for run in runs if _ours(run, owner)]  # another database's study of this name has its own
    last = mine[-1] if mine else None
    if last is not None and not (last / DONE_FILE).exists() and tune.Tuner.can_restore(str(last)):
        print(f"resuming the interrupted Ray run {last}", file=sys.stderr, flush=True)
        _fit(driver, last, restore=True)
        if driver.stop_reason:
            from marstune.tuning.errors import TooManyFailures

            raise TooManyFailures(driver.stop_reason)
    k = int(runs[-1].name[4:]) if runs else 0
    while (missing := target - _finished(study)) > 0:
        if driver.deadline is not None and time.monotonic() > driver.deadline:
            break
        k += 1
        ran, driver.finished_this_run = driver.ran, 0
        (root / f"run-{k}").mkdir()  # a new number: never another storage's run
        (root / f"run-{k}" / OWNER_FILE).write_text(owner + "\n")
        _fit(driver, root / f"run-{k}", restore=False, samples=missing)
        if driver.stop_reason:
            from marstune.tuning.errors import TooManyFailures

            raise TooManyFailures(driver.stop_reason)
        if driver.ran == ran:  # search.timeout came before any trial started
            break
        if driver.finished_this_run == 0:  # as the Optuna engine: a study that only fails stops
            from marstune.tuning.errors import TooManyFailures

            raise TooManyFailures(
                f"every trial of Ray run {root / f'run-{k}'} failed; last: {driver.last_reason}"
            )


def _fit(driver: Driver, path: Path, *, restore: bool, samples: int = 0) -> None:
    """One Ray Tune run in `path`, new or restored; Ctrl-C or SIGTERM leave it resumable."""
    from ray import tune

    from marstune.tuning.search.engines import ray_trainable as rt

    spec = driver.spec
    trainable = tune.with_resources(
        tune.with_parameters(
            rt.run_trial, spec_raw=spec.raw, threads=driver.threads, tensorboard_dir=driver.tensorboard_dir
        ),
        driver.resources,
    )
    if restore:
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True)
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=rt.StudySearch(spec, path.name),
                scheduler=rt.make_scheduler(spec),
                num_samples=samples,
                # Ask Optuna only for trials that can start now: a queue of asked trials blinds TPE/GP.
                max_concurrent_trials=driver.slots,
                reuse_actors=True,  # no new worker process (and imports) per trial
                trial_dirname_creator=rt.trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=path.name,
                storage_path=str(path.parent),
                failure_config=tune.FailureConfig(max_failures=1),
                verbose=0,
            ),
        )
    previous = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        grid = tuner.fit()  # Ray Tune catches SIGINT: it saves the run's state and returns
    finally:
        signal.signal(signal.SIGTERM, previous)
    # Ray Tune returns normally when interrupted (and marks its stopped trials terminated); the trials
    # it left unfinished are still RUNNING in the study: the run is resumable, not done.
    from optuna.trial import TrialState

    running = driver.storage.get_all_trials(driver.study_id, deepcopy=False, states=(TrialState.RUNNING,))
    if any(t.user_attrs.get("ray_experiment") == path.name for t in running):
        raise KeyboardInterrupt  # the CLI says how to continue: run the same command again
    (path / DONE_FILE).write_text(f"{len(grid)} trials\n")
