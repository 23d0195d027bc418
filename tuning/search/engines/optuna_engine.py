"""The Optuna engine: a worker loop over one RDB storage, safe for any number of processes.

Each iteration takes the study claim, counts trials, and either starts one (popping an enqueued trial
first: the baseline, grid points, retries of interrupted or dead workers' trials), waits for running
ones, or stops at the target. Heartbeats mark dead workers' trials failed and re-queue them once; the
failure rule (search/failures.py) stops every worker when the study's last trials all failed. The
storage rides out a database outage (study/resilient.py); one trial is run by optuna_trial.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing, contextmanager

import optuna
from optuna.trial import TrialState

from marstune.tuning.config.spec import DEFAULTS, Spec
from marstune.tuning.search import failures
from marstune.tuning.search.engines import OptunaOptions, RunSummary
from marstune.tuning.search.engines.optuna_trial import Goal, _Objective, run_trial, suggest
from marstune.tuning.search.interrupts import StopRequest
from marstune.tuning.search.joining import join
from marstune.tuning.search.keeping import ModelKeeper
from marstune.tuning.search.progress import Progress
from marstune.tuning.search.reaper import Reaper
from marstune.tuning.search.redraw import RedrawSampler
from marstune.tuning.search.samplers import make_pruner, make_sampler
from marstune.tuning.search.tracking import MlflowTracker
from marstune.tuning.study import lifecycle
from marstune.tuning.study.claim import StudyClaim
from marstune.tuning.study.disk import full_disk_named
from marstune.tuning.study.outage import Retrier, retrier_of
from marstune.tuning.study.storage import open_storage

POLL_SECONDS = 2.0
# The sampler proposed only configurations the study already has this many times running: the space
# is exhausted for it (a small all-discrete space), so this worker stops.
MAX_DUPLICATES_IN_A_ROW = 20


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
    storage = open_storage(storage_url, create=options.create, heartbeat=True, retry=True)
    notes: list[str] = []
    if options.create:
        study, notes = lifecycle.create_or_join(
            spec, storage, storage_url, options.data, explicit_target=options.explicit_target
        )
    else:
        study, spec = join(storage, storage_url, spec.study, options.data_path)
    stream = lifecycle.claim_seed_stream(study, storage_url)
    sampler = RedrawSampler(
        make_sampler(spec.search.sampler, spec.train.seed, stream), spec.train.seed + stream
    )
    loaded = optuna.load_study(
        study_name=spec.study, storage=storage, sampler=sampler, pruner=make_pruner(spec.search.pruner)
    )
    return loaded, spec, notes


def run(spec: Spec, storage_url: str, options: OptunaOptions) -> RunSummary:
    with full_disk_named(storage_url):  # a full disk anywhere (ask, the claim, a kept model): one line
        return _run(spec, storage_url, options)


def _run(spec: Spec, storage_url: str, options: OptunaOptions) -> RunSummary:
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
    retry = retrier_of(study._storage)  # noqa: SLF001
    if isinstance(retry, Retrier):
        retry.stop_check = stops.check  # Ctrl-C / SIGTERM end a wait for the database too
    reaper = Reaper(study, storage_url, lifecycle.worker_name(), progress.note)
    deadline = options.deadline or (time.time() + spec.search.timeout if spec.search.timeout else None)
    keeper = ModelKeeper(storage_url, spec.study, spec.search.keep_models)
    tracker = (
        MlflowTracker(options.mlflow, spec.study, storage_url, quiet=options.quiet)
        if options.mlflow
        else None
    )
    objective = _Objective(spec, progress, options, stops, reaper, keeper, tracker)
    goal = Goal(target, grid, storage_url)
    with stops, _closing(keeper), closing(progress):  # the live bar goes before the summary
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
                    # another `tune run --trials N` on the study may have changed its target meanwhile
                    now = lifecycle.target_of(study)
                    if now != goal.target:
                        progress.note(f"study {spec.study}: another run changed the target to {now} trials")
                    target = goal.target = progress.target = now
                    action = next_action(c, target, grid)
                    if action == "stop":
                        break
                    if action == "wait":
                        claim.release()
                        reaper.now()  # a dead worker's trial comes back WAITING
                        with stops.interruptible():
                            time.sleep(POLL_SECONDS)
                        continue
                    objective.begin(claim, lifecycle.finished(c), goal)
                    outcome = run_trial(study, objective)
                if outcome.kept:
                    keeper.prune(study._storage)  # noqa: SLF001 - back to the top K kept models
                duplicate = outcome.kind == "duplicate"
                study.sampler.redraw = duplicate  # type: ignore[attr-defined] - RedrawSampler
                if duplicate:
                    duplicates += 1
                    if duplicates >= MAX_DUPLICATES_IN_A_ROW:
                        progress.note(
                            f"the {spec.search.sampler} sampler proposed only configurations the study "
                            f"already has ({duplicates} in a row): the space looks exhausted; stopping"
                        )
                        break
                    continue
                duplicates = 0
                if outcome.kind == "surplus":
                    continue
                ran += 1
                if outcome.kind == "failed":
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


__all__ = ["next_action", "placeholder_spec", "run", "suggest"]  # suggest: optuna_trial's
