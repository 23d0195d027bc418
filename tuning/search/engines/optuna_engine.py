"""The Optuna engine: a worker loop over one RDB storage, safe for any number of processes.

Each iteration takes the study claim, counts trials, and either starts one (popping an enqueued trial
first: the baseline, grid points, retries of interrupted or dead workers' trials), waits for running
ones, or stops at the target. Heartbeats mark dead workers' trials failed and re-queue them once; the
failure rule (search/failures.py) stops every worker when the study's last trials all failed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from marstune.tuning.config.space import Categorical, Int, Space
from marstune.tuning.config.spec import DEFAULTS, Spec
from marstune.tuning.errors import FatalError, Pruned, TrialFailed, one_line
from marstune.tuning.search import failures
from marstune.tuning.search.engines import OptunaOptions, RunSummary
from marstune.tuning.search.interrupts import StopRequest
from marstune.tuning.search.joining import join
from marstune.tuning.search.keeping import ModelKeeper
from marstune.tuning.search.objective import TrialContext, evaluate
from marstune.tuning.search.progress import Progress
from marstune.tuning.search.reaper import Reaper
from marstune.tuning.search.samplers import make_pruner, make_sampler
from marstune.tuning.search.tracking import MlflowTracker
from marstune.tuning.study import lifecycle
from marstune.tuning.study.claim import StudyClaim
from marstune.tuning.study.lifecycle import FailKind
from marstune.tuning.study.storage import open_storage

POLL_SECONDS = 2.0
# The sampler proposed only configurations the study already has this many times running: the space
# is exhausted for it (a small all-discrete space), so this worker stops.
MAX_DUPLICATES_IN_A_ROW = 20


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


def next_action(c: dict[TrialState, int], target: int, grid: bool) -> str:
    """'run', 'wait' (others' trials may still fail and need a re-run) or 'stop'."""
    done = lifecycle.finished(c)
    if grid:
        return "run" if c[TrialState.WAITING] else ("wait" if c[TrialState.RUNNING] else "stop")
    if done >= target:
        return "stop"
    if c[TrialState.WAITING]:
        return "run"
    return "wait" if done + c[TrialState.RUNNING] >= target else "run"


def _open(spec: Spec, storage_url: str, options: OptunaOptions) -> tuple[optuna.Study, Spec, list[str]]:
    """Create or join the study (`tune run`) or join it with its stored spec (`tune worker`)."""
    storage = open_storage(storage_url, create=options.create, heartbeat=True)
    notes: list[str] = []
    if options.create:
        study, notes = lifecycle.create_or_join(
            spec, storage, storage_url, options.data, explicit_target=options.explicit_target
        )
    else:
        study, spec = join(storage, storage_url, spec.study, options.data_path)
    stream = lifecycle.claim_seed_stream(study, storage_url)
    sampler = make_sampler(spec.search.sampler, spec.train.seed, stream)
    loaded = optuna.load_study(
        study_name=spec.study, storage=storage, sampler=sampler, pruner=make_pruner(spec.search.pruner)
    )
    return loaded, spec, notes


def run(spec: Spec, storage_url: str, options: OptunaOptions) -> RunSummary:
    study, spec, notes = _open(spec, storage_url, options)
    target = lifecycle.target_of(study)
    grid = spec.search.sampler == "grid"
    progress = Progress(
        spec.study,
        target,
        quiet=options.quiet,
        epochs=spec.train.epochs,
        run_started=options.run_started,
        done_at_start=options.done_at_start,
    )
    for note in notes:
        progress.note(note)
    started, ran, failed, duplicates = time.monotonic(), 0, 0, 0
    stops = StopRequest()
    reaper = Reaper(study, storage_url)
    deadline = options.deadline or (time.time() + spec.search.timeout if spec.search.timeout else None)
    keeper = ModelKeeper(storage_url, spec.study, spec.search.keep_models)
    tracker = MlflowTracker(options.mlflow, spec.study) if options.mlflow else None
    objective = _Objective(spec, progress, options, stops, reaper, keeper, tracker)
    with stops, _closing(keeper):
        try:
            failures.check(study)  # a study stopped for failing is not restarted blindly
            while not (options.max_trials and ran >= options.max_trials):
                stops.check()
                if deadline is not None and time.time() > deadline:
                    break
                claim = StudyClaim(study._storage, storage_url, spec.study)  # noqa: SLF001
                with claim:
                    stops.check()
                    c = lifecycle.counts(study)
                    action = next_action(c, target, grid)
                    if action == "stop":
                        break
                    if action == "wait":
                        optuna.storages.fail_stale_trials(study)  # a dead worker's trial comes back WAITING
                        claim.release()
                        with stops.interruptible():
                            time.sleep(POLL_SECONDS)
                        continue
                    objective.begin(claim, lifecycle.finished(c))
                    study.optimize(objective, n_trials=1, catch=(TrialFailed,))
                if objective.kept:
                    keeper.prune(study._storage)  # noqa: SLF001 - back to the top K kept models
                if objective.duplicate:
                    duplicates += 1
                    if duplicates >= MAX_DUPLICATES_IN_A_ROW:
                        progress.note(
                            f"the {spec.search.sampler} sampler proposed only configurations the study "
                            f"already has ({duplicates} in a row): the space looks exhausted; stopping"
                        )
                        break
                    continue
                duplicates = 0
                ran += 1
                if objective.failed:
                    failed += 1
                    failures.check(study)
        except KeyboardInterrupt:
            objective.requeue_interrupted(study)
            raise
    c = lifecycle.counts(study)
    best = lifecycle.best_trial(study)
    recycle = bool(
        options.max_trials and ran >= options.max_trials and next_action(c, target, grid) != "stop"
    )
    return RunSummary(
        study=spec.study,
        target=target,
        finished=lifecycle.finished(c),
        ran_here=ran,
        failed_here=failed,
        best_value=best.value if best else None,
        best_number=best.number if best else None,
        best_params=dict(best.params) if best else None,
        seconds=time.monotonic() - started,
        recycle=recycle,
        states={s.name.lower(): n for s, n in c.items()},
    )


class _Objective:
    """Optuna's objective: params from the space, context for `evaluate`, reasons into user attributes."""

    def __init__(
        self,
        spec: Spec,
        progress: Progress,
        options: OptunaOptions,
        stops: StopRequest,
        reaper: Reaper,
        keeper: ModelKeeper,
        tracker: MlflowTracker | None = None,
    ) -> None:
        self.spec, self.progress, self.options = spec, progress, options
        self.stops, self.reaper, self.keeper, self.tracker = stops, reaper, keeper, tracker
        self.run_id: str | None = None
        self.kept = False
        self.worker = lifecycle.worker_name()
        self.claim: StudyClaim | None = None
        self.done = 0
        self.failed = ""
        self.duplicate = False
        self.current: int | None = None  # the trial id in flight, for a re-queue after an interrupt

    def begin(self, claim: StudyClaim, done: int) -> None:
        self.claim, self.done, self.failed, self.duplicate, self.kept = claim, done, "", False, False

    def __call__(self, trial: optuna.Trial) -> float:
        assert self.claim is not None
        self.claim.release()  # the trial exists now: other workers may claim theirs
        self.current = trial._trial_id  # noqa: SLF001
        params = suggest(trial, self.spec.space)
        config = self.spec.config_for(params)
        frozen = trial.study._storage.get_trial(trial._trial_id)  # noqa: SLF001 - Trial hides system attrs
        retry_of = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        retry_of = frozen.user_attrs.get("retry_of", retry_of)
        trial.set_user_attr("config", config)
        trial.set_user_attr("worker", self.worker)
        trial.set_user_attr("engine", "optuna")
        if retry_of is not None:
            trial.set_user_attr("retry_of", retry_of)
        elif lifecycle.ENQUEUED_AS not in frozen.user_attrs:
            same = lifecycle.duplicates_of(trial.study, params, trial.number)
            if same is not None:  # sampled, not queued: a repeat would only cost a trial's compute
                self.duplicate = True
                self._fail(trial, FailKind.DUPLICATE, f"duplicate of trial {same}; the sampler drew again")
                raise TrialFailed("duplicate")
        best = lifecycle.best_trial(trial.study)
        self.progress.trial_started(trial.number, self.done, params, best.value if best else None)
        self.run_id = self.tracker.start(trial.number, config) if self.tracker else None

        def report(epoch: int, value: float) -> bool:
            trial.report(value, epoch)
            self.progress.epoch(trial.number, epoch, value)
            if self.tracker:
                self.tracker.epoch(self.run_id, epoch, value)
            self.reaper.maybe()  # dead peers' trials are noticed while this one trains, not after it
            return trial.should_prune()

        ctx = TrialContext(
            trial.number,
            report,
            first_attempt=retry_of is None,
            threads=self.options.threads,
            tensorboard_dir=self.options.tensorboard_dir,
            keep=self.keeper.decide,
        )
        started = time.perf_counter()
        try:
            with self.stops.interruptible():
                value = evaluate(config, self.spec, ctx)
        except Pruned as exc:
            self._attrs(trial, ctx.attrs, started)
            self._track("pruned", None)
            self.progress.trial_finished(trial.number, "pruned", None)
            raise optuna.TrialPruned(str(exc)) from None
        except FatalError:
            raise
        except KeyboardInterrupt:
            self._fail(
                trial, FailKind.INTERRUPTED, "interrupted (Ctrl-C or SIGTERM); queued again if enqueued"
            )
            raise
        except Exception as exc:  # one trial's failure (NaN, OOM, unbuildable config): the study goes on
            reason = one_line(exc)
            self._attrs(trial, ctx.attrs, started)
            self._fail(trial, FailKind.ERROR, reason)
            self._track("failed", None)
            self.failed = reason
            self.progress.trial_finished(trial.number, "failed", None, reason)
            raise TrialFailed(reason) from None
        self._attrs(trial, ctx.attrs, started)
        self._track("complete", value, self.keeper.file)
        self.kept = self.keeper.store(trial) is not None  # linked while the trial still runs
        self.progress.trial_finished(trial.number, "complete", value)
        self.current = None
        return value

    def _track(self, state: str, value: float | None, model: Path | None = None) -> None:
        if self.tracker:
            self.tracker.finish(self.run_id, state, value, model)

    def _fail(self, trial: optuna.Trial, kind: FailKind, reason: str) -> None:
        lifecycle.mark_failed(trial.study, trial._trial_id, kind, reason)  # noqa: SLF001

    def requeue_interrupted(self, study: optuna.Study) -> None:
        """After Ctrl-C / SIGTERM: the baseline or a grid point that was cut short is queued again."""
        if self.current is not None:
            trial = study._storage.get_trial(self.current)  # noqa: SLF001
            if trial.state == TrialState.FAIL:
                lifecycle.requeue_interrupted(study, trial)
            self.current = None

    @staticmethod
    def _attrs(trial: optuna.Trial, attrs: dict[str, Any], started: float) -> None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("wall_seconds", round(time.perf_counter() - started, 3))


@contextmanager
def _closing(keeper: ModelKeeper) -> Iterator[None]:
    try:
        yield
    finally:
        keeper.close()


def placeholder_spec(study: str) -> Spec:
    """A spec naming only the study, for `tune worker`: the real one is read from the study."""
    from marstune.tuning.config.spec import spec_from_stored

    return spec_from_stored({"study": study or DEFAULTS["study"]})
