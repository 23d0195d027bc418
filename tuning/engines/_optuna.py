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
from optuna.trial import TrialState

from tuning.claim import StudyClaim
from tuning.engines import RunOptions, RunSummary
from tuning.errors import DataError, MissingExtraError, SpecError, StorageError, TuneError
from tuning.interrupts import StopRequest
from tuning.objective import Pruned, TrialContext, evaluate
from tuning.progress import Progress
from tuning.reaper import Reaper
from tuning.samplers import make_pruner, make_sampler
from tuning.space import Categorical, Int, Space
from tuning.spec import Spec, spec_from_stored
from tuning.storage import load_study, open_storage

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


def initial_trials(spec: Spec) -> list[dict[str, Any]]:
    """What every new study starts with: the baseline, then (grid) every other grid point once."""
    baseline = {k: spec.baseline[k] for k in spec.space.params if k in spec.baseline}
    if spec.search.sampler != "grid":
        return [baseline]
    points = spec.space.grid()
    return [baseline] + [p for p in points if p != baseline] if baseline in points else points


def _comparable(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k not in ("search", "study")}


def create_or_join(
    spec: Spec,
    storage: Any,
    url: str,
    data_info: dict[str, Any],
    *,
    enqueue: bool = True,
    sampler: optuna.samplers.BaseSampler | None = None,
) -> optuna.Study:
    """Create the study (once, under the claim) with its spec, target and initial trials.

    Engines whose own algorithm picks every configuration (Keras Tuner) pass enqueue=False (no baseline
    or grid points waiting in the storage) and a `sampler`, since their sampler names are not Optuna's.
    """
    if spec.search.sampler == "grid":
        spec.space.grid()  # a float without `grid:` points is refused before the study exists
    with StudyClaim(storage, url, spec.study):
        study = optuna.create_study(
            study_name=spec.study,
            storage=storage,
            direction="maximize",
            load_if_exists=True,
            sampler=sampler or make_sampler(spec.search.sampler, spec.train.seed),
            pruner=make_pruner(spec.search.pruner),
        )
        stored = study.user_attrs.get("spec")
        if stored is not None and _comparable(stored) != _comparable(spec.raw):
            diff = sorted(k for k in _comparable(spec.raw) if stored.get(k) != spec.raw.get(k))
            raise SpecError(
                f"study {spec.study!r} exists with a different spec (sections {diff} differ); "
                "use another --study or the spec it was made with"
            )
        if stored is None:
            for params in initial_trials(spec) if enqueue else []:
                study.enqueue_trial(
                    params,
                    user_attrs={
                        "enqueued_as": "baseline"
                        if params == initial_trials(spec)[0]
                        else spec.search.sampler
                    },
                )
            for key, value in data_info.items():
                study.set_user_attr(key, value)
        target = spec.space.grid_size() if spec.search.sampler == "grid" else spec.search.trials
        study.set_user_attr("spec", spec.raw)
        study.set_user_attr("target_trials", target)
    return study


def create(spec: Spec, storage_url: str, data_info: dict[str, Any]) -> None:
    """Create and initialise the study without running a trial (the parent of `tune run --workers K`)."""
    storage = open_storage(storage_url, create=True)
    try:
        create_or_join(spec, storage, storage_url, data_info)
    finally:
        storage.engine.dispose()  # the parent only waits from here on: it keeps no idle connection


def join(storage: Any, name: str, data_path: str | None = None) -> tuple[optuna.Study, Spec]:
    """Load a running study and its spec from the stored attributes (workers need no spec file).

    `data_path` points this worker at its own copy of the data; its fingerprint must match the study's.
    """
    study = load_study(storage, name)
    raw = study.user_attrs.get("spec")
    if raw is None:
        raise StorageError(
            f"study {name!r} was not made by `tune run` (no stored spec); start it with `tune run`"
        )
    engine = (raw.get("search") or {}).get("engine", "optuna")
    if engine != "optuna":
        raise SpecError(
            f"study {name!r} is run by the {engine} engine; continue it with "
            f"`tune run --engine {engine} --study {name}`"
        )
    if data_path is not None:
        raw = {**raw, "data": {**raw.get("data", {}), "path": data_path}}
    spec = spec_from_stored(raw)
    _check_same_data(spec, study.user_attrs.get("data_fingerprint"))
    sampler = make_sampler(
        spec.search.sampler, spec.train.seed + os.getpid()
    )  # workers must not repeat draws
    return optuna.load_study(
        study_name=name, storage=storage, sampler=sampler, pruner=make_pruner(spec.search.pruner)
    ), spec


def _check_same_data(spec: Spec, fingerprint: str | None) -> None:
    """A worker training on other data than the study's would mix incomparable scores into it."""
    if spec.objective.kind != "unet" or not fingerprint:
        return
    from tuning.objective import prepare_data

    found = prepare_data(spec).fingerprint
    if found != fingerprint:
        where = spec.data.path or "the built-in synthetic set"
        raise DataError(
            f"this worker's data ({where}, fingerprint {found}) is not the study's (fingerprint "
            f"{fingerprint}); pass --data with the file the study was started on"
        )


_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL)


def counts(study: optuna.Study) -> dict[TrialState, int]:
    """Trials per state, read fresh from the database in one GROUP BY.

    `get_n_trials` loads every trial of the study (five times per loop here): 0.15 s per loop at 40
    trials on PostgreSQL and growing with the study, all of it spent while holding the claim.
    """
    import sqlalchemy

    storage, sid = study._storage, study._study_id  # noqa: SLF001
    rdb = getattr(storage, "_backend", storage)  # optuna wraps an RDBStorage in a cache
    engine = getattr(rdb, "engine", None)
    if engine is None:
        return {s: storage.get_n_trials(sid, s) for s in _COUNTED}
    query = sqlalchemy.text("SELECT state, COUNT(*) FROM trials WHERE study_id = :sid GROUP BY state")
    with engine.connect() as conn:
        found = {str(state): int(n) for state, n in conn.execute(query, {"sid": sid})}
    return {s: found.get(s.name, 0) for s in _COUNTED}


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
    with stops:
        while True:
            stops.check()
            if spec.search.timeout and time.monotonic() - started > spec.search.timeout:
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
    best = _best(study)
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
    )


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


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
        best = _best(trial.study)
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
