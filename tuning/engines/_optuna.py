"""The Optuna engine: a worker loop over one RDB storage, safe for any number of processes.

Each iteration takes the study claim, counts trials, and either starts one (popping an enqueued trial
first: the baseline, grid points, retries of dead workers' trials), waits for running ones, or stops at
the target. Heartbeats mark dead workers' trials failed and re-queue them once.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import optuna
from marstune.tuning.claim import StudyClaim
from marstune.tuning.engines import RunOptions, RunSummary
from marstune.tuning.engines._study import best_trial, counts, create, create_or_join, join
from marstune.tuning.errors import DataError, MissingExtraError, SpecError, StorageError, TuneError
from marstune.tuning.interrupts import StopRequest
from marstune.tuning.local_workers import DEADLINE_ENV
from marstune.tuning.objective import Pruned, TrialContext, evaluate
from marstune.tuning.progress import Progress
from marstune.tuning.reaper import Reaper
from marstune.tuning.samplers import make_pruner, make_sampler
from marstune.tuning.space import Categorical, Int, Space
from marstune.tuning.spec import Spec
from marstune.tuning.storage import open_storage
from optuna.trial import TrialState

__all__ = ["create", "create_or_join", "join", "run", "suggest"]  # create/join: for `tune run --workers`

FATAL = (
    DataError,
    SpecError,
    StorageError,
    MissingExtraError,
)  # stop the run; everything else fails one trial
MAX_FAILS_IN_A_ROW = 10
POLL_SECONDS = 2.0


class TrialFailed(Exception):
    """Marks a trial FAIL in Optuna (caught by study.optimize) while the study goes on."""


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, p in space.params.items():
        if isinstance(p, Categorical):
            params[name] = trial.suggest_categorical(name, list(p.choices))
        elif isinstance(p, Int):
            params[name] = trial.suggest_int(name, p.low, p.high, step=p.step, log=p.log)
        else:
            params[name] = trial.suggest_float(name, p.low, p.high, log=p.log)
    return params


def _deadline(timeout: float | None) -> float | None:
    """When to stop starting trials (epoch seconds): the run's, for a child of `run_local_workers` (so
    search.timeout counts from `tune run`, not from each recycled process), else this process's own."""
    inherited = os.environ.get(DEADLINE_ENV)
    if inherited:
        return float(inherited)
    return time.time() + timeout if timeout else None


def next_action(c: dict[TrialState, int], target: int, grid: bool) -> str:
    """'run', 'wait' (others' trials may still fail and need a re-run) or 'stop'."""
    done = c[TrialState.COMPLETE] + c[TrialState.PRUNED]
    if grid:
        return "run" if c[TrialState.WAITING] else ("wait" if c[TrialState.RUNNING] else "stop")
    if done >= target:
        return "stop"
    if c[TrialState.WAITING]:
        return "run"
    return "wait" if done + c[TrialState.RUNNING] >= target else "run"


def run(spec: Spec, storage_url: str, options: RunOptions) -> RunSummary:
    storage = open_storage(storage_url, create=options.create, heartbeat=True)
    if options.create:
        study = create_or_join(spec, storage, storage_url, dict(options.get("data_info", {})))
        study = optuna.load_study(
            study_name=spec.study,
            storage=storage,
            sampler=make_sampler(spec.search.sampler, spec.train.seed),
            pruner=make_pruner(spec.search.pruner),
        )
    else:
        study, spec = join(storage, spec.study, options.get("data_path"))
    target = int(study.user_attrs["target_trials"])
    grid = spec.search.sampler == "grid"
    progress = Progress(spec.study, target, quiet=options.quiet, epochs=spec.train.epochs)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    started, ran, failed, fails_in_a_row = time.monotonic(), 0, 0, 0
    last_reason = ""
    stops = StopRequest()
    reaper = Reaper(study, storage, storage_url)
    max_trials = int(options.get("max_trials") or 0)
    deadline = _deadline(spec.search.timeout)
    with stops:
        while not (max_trials and ran >= max_trials):
            stops.check()
            if deadline is not None and time.time() > deadline:
                break
            claim = StudyClaim(storage, storage_url, spec.study)
            with claim:
                stops.check()
                c = counts(study)
                action = next_action(c, target, grid)
                if action == "wait":
                    optuna.storages.fail_stale_trials(study)  # a dead worker's trial comes back as WAITING
                    claim.release()
                    with stops.interruptible():
                        time.sleep(POLL_SECONDS)
                    continue
                if action == "stop":
                    break
                done = c[TrialState.COMPLETE] + c[TrialState.PRUNED]
                objective = _Objective(
                    spec,
                    claim,
                    progress,
                    worker,
                    options.threads,
                    done,
                    stops,
                    reaper,
                    tensorboard_dir=options.get("tensorboard_dir"),
                )
                study.optimize(objective, n_trials=1, catch=(TrialFailed,))
            ran += 1
            if objective.failed:
                failed += 1
                fails_in_a_row += 1
                last_reason = objective.failed
                if fails_in_a_row >= MAX_FAILS_IN_A_ROW:
                    raise TuneError(f"{fails_in_a_row} trials in a row failed; last: {last_reason}")
            else:
                fails_in_a_row = 0
    c = counts(study)
    best = best_trial(study)
    recycle = bool(max_trials and ran >= max_trials and next_action(c, target, grid) != "stop")
    return RunSummary(
        study=spec.study,
        target=target,
        finished=c[TrialState.COMPLETE] + c[TrialState.PRUNED],
        ran_here=ran,
        failed_here=failed,
        best_value=best.value if best else None,
        best_number=best.number if best else None,
        best_params=dict(best.params) if best else None,
        seconds=time.monotonic() - started,
        recycle=recycle,
    )


class _Objective:
    """Optuna's objective: params from the space, context for `evaluate`, reasons into user attributes."""

    def __init__(
        self,
        spec: Spec,
        claim: StudyClaim,
        progress: Progress,
        worker: str,
        threads: int,
        done: int,
        stops: StopRequest,
        reaper: Reaper,
        tensorboard_dir: str | None = None,
    ) -> None:
        self.spec, self.claim, self.progress, self.worker = spec, claim, progress, worker
        self.threads, self.done, self.stops, self.reaper = threads, done, stops, reaper
        self.failed = ""
        self.tensorboard_dir = tensorboard_dir

    def __call__(self, trial: optuna.Trial) -> float:
        self.claim.release()  # the trial exists now: other workers may claim theirs
        params = suggest(trial, self.spec.space)
        config = self.spec.config_for(params)
        frozen = trial.study._storage.get_trial(trial._trial_id)  # noqa: SLF001 - Trial hides system attrs
        retry_of = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        trial.set_user_attr("config", config)
        trial.set_user_attr("worker", self.worker)
        trial.set_user_attr("engine", "optuna")
        if retry_of is not None:
            trial.set_user_attr("retry_of", retry_of)
        best = best_trial(trial.study)
        self.progress.trial_started(trial.number, self.done, params, best.value if best else None)

        def report(epoch: int, value: float) -> bool:
            trial.report(value, epoch)
            self.progress.epoch(trial.number, epoch, value)
            self.reaper.maybe()  # dead peers' trials are noticed while this one trains, not after it
            return trial.should_prune()

        ctx = TrialContext(
            trial.number,
            report,
            first_attempt=retry_of is None,
            threads=self.threads,
            tensorboard_dir=self.tensorboard_dir,
        )
        started = time.perf_counter()
        try:
            with self.stops.interruptible():
                value = evaluate(config, self.spec, ctx)
        except Pruned as exc:
            self._attrs(trial, ctx.attrs, started)
            self.progress.trial_finished(trial.number, "pruned", None)
            raise optuna.TrialPruned(str(exc)) from None
        except FATAL:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C or SIGTERM)")
            raise
        except Exception as exc:  # one trial's failure (NaN, OOM, unbuildable config): the study goes on
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
            self._attrs(trial, ctx.attrs, started)
            trial.set_user_attr("fail_reason", reason)
            self.failed = reason
            self.progress.trial_finished(trial.number, "failed", None, reason)
            raise TrialFailed(reason) from None
        self._attrs(trial, ctx.attrs, started)
        self.progress.trial_finished(trial.number, "complete", value)
        return value

    @staticmethod
    def _attrs(trial: optuna.Trial, attrs: dict[str, Any], started: float) -> None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("wall_seconds", round(time.perf_counter() - started, 3))
