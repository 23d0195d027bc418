"""The Keras Tuner engine: its oracles choose configurations, `tuning.objective.evaluate` trains, and
every finished trial is also written into the one Optuna storage (see keras_tuner_trials.py).

`tune run --engine keras-tuner --sampler random|grid|bayes|hyperband`. The spec's space becomes
pre-registered HyperParameters (defaults = the baseline; `allow_new_entries=False`), and a Tuner
subclass overrides `run_trial` to call `evaluate` with a plain config: one training code path for every
engine (the analytic stand-in included), and the U-Net builder never sees the `hp` object.

Where this engine differs from the Optuna engine (by design, said in the README):
- no pruner: Keras Tuner has none; `hyperband` is its own schedule of epoch budgets. A hyperband round
  that continues an earlier trial retrains from scratch for its budget (the objective owns training, so
  there are no checkpoints to resume from); the trial's `hyperband` attribute names the one it continues.
- one process per study: Keras Tuner's parallel mode is its own gRPC service, not our storage.
- an interrupted trial is re-run with the same configuration on resume (Keras Tuner's retry queue)
  instead of being recorded as failed.
This is the only file that imports keras_tuner.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras_tuner as kt
from keras_tuner.src import config as kt_config

from marstune.tuning.config.space import Categorical, Int, Space, trained_as
from marstune.tuning.config.spec import Spec
from marstune.tuning.errors import FatalError, SpecError, TrialFailed
from marstune.tuning.search import failures
from marstune.tuning.search.engines import (
    KERAS_TUNER_SAMPLERS,
    KerasTunerOptions,
    RunSummary,
    check_space_for,
)
from marstune.tuning.search.engines.keras_tuner_trials import (
    Job,
    choose_project,
    projects_root,
    recorded_ids,
)
from marstune.tuning.search.keeping import ModelKeeper
from marstune.tuning.search.progress import Progress
from marstune.tuning.search.tracking import MlflowTracker
from marstune.tuning.study.lifecycle import best_trial, counts, create_or_join, finished, target_of
from marstune.tuning.study.storage import open_storage

OBJECTIVE = kt.Objective("val_miou", "max")  # best validation mIoU over a trial's epochs, as everywhere
BAYES_RANDOM_POINTS = 5  # random starts before the GP, as our Optuna GP/TPE (Keras Tuner: 3 x dims = 15)
HYPERBAND_FACTOR = 3
NO_LIMIT = 10**9  # Keras Tuner's own limits are off: the study target and search/failures.py govern


class _Fatal(kt.errors.FatalError):
    """Carries a run-stopping TuneError through Keras Tuner, which turns other exceptions into failures."""

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


def to_hyperparameters(space: Space, baseline: dict[str, Any], grid: bool = False) -> kt.HyperParameters:
    """The ONE space as Keras Tuner HyperParameters: same names and inclusive bounds, baseline defaults."""
    if grid:
        check_space_for("keras-tuner", "grid", space)
    hp = kt.HyperParameters()
    for name, p in space.params.items():
        default = baseline.get(name)
        if isinstance(p, Categorical):
            if len({type(c) for c in p.choices}) > 1:
                raise SpecError(
                    f"Keras Tuner needs the choices of `{name}` to share one type, got {list(p.choices)} "
                    f"(space.{name}); make them one type or use --engine optuna"
                )
            hp.Choice(name, list(p.choices), default=default)
        elif isinstance(p, Int) and not (grid and p.log):
            # Keras Tuner's step on a log scale is a factor; Optuna's log ints have step 1 (every integer).
            step = None if p.log else p.step
            hp.Int(name, p.low, p.high, step=step, sampling="log" if p.log else "linear", default=default)
        elif grid:  # floats (and log ints) enumerate their grid points, exactly as the Optuna grid does
            points = list(p.grid())
            hp.Choice(name, points, default=default if default in points else None)
        else:
            hp.Float(name, p.low, p.high, sampling="log" if p.log else "linear", default=default)
    return hp


class _StudyOracle:
    """Mixed into each Keras Tuner oracle: stop at the study's target; the baseline comes first."""

    budget_left: Callable[[], int]
    baseline_first: bool

    def create_trial(self, tuner_id: str) -> Any:
        if tuner_id not in self.ongoing_trials and self.budget_left() <= 0:
            return kt.engine.trial.Trial(self.get_space(), status="STOPPED")
        return super().create_trial(tuner_id)

    def _compute_values_hash(self, values: dict[str, Any]) -> str:
        # Keras Tuner redraws a configuration whose hash it has tried: hash what trains, so crossentropy
        # with another focal_gamma (which it never reads) is a repeat, not a new trial.
        return str(super()._compute_values_hash(trained_as(values)))

    def _random_values(self) -> dict[str, Any] | None:
        # Random, Bayesian and Hyperband draw every new configuration here; the first one of a new
        # project is the baseline (the HyperParameters' defaults), so each study is compared with it.
        if self.baseline_first and not self._tried_so_far:
            return {hp.name: hp.default for hp in self.hyperparameters.space}
        return super()._random_values()


class _GridOracle(_StudyOracle, kt.oracles.GridSearchOracle):
    def set_state(self, state: dict[str, Any]) -> None:
        # Keras Tuner does not save the grid's position, so a reloaded GridSearch stops at once. Rebuild
        # it: every tried configuration in grid order, each queued for its successor (tried ones are skipped).
        super().set_state(state)
        ids = sorted(
            self.start_order,
            key=functools.cmp_to_key(
                lambda a, b: self._compare(
                    self.trials[a].hyperparameters.values, self.trials[b].hyperparameters.values
                )
            ),
        )
        self._ordered_ids = type(self._ordered_ids)()
        for trial_id in ids:
            self._ordered_ids.insert(trial_id)
        self._populate_next = list(ids)


# One per name in engines.KERAS_TUNER_SAMPLERS (the registry; checked below).
_ORACLES: dict[str, type] = {
    "random": type("_RandomOracle", (_StudyOracle, kt.oracles.RandomSearchOracle), {}),
    "bayes": type("_BayesOracle", (_StudyOracle, kt.oracles.BayesianOptimizationOracle), {}),
    "hyperband": type("_HyperbandOracle", (_StudyOracle, kt.oracles.HyperbandOracle), {}),
    "grid": _GridOracle,
}


assert tuple(sorted(_ORACLES)) == KERAS_TUNER_SAMPLERS, "engines.KERAS_TUNER_SAMPLERS names every oracle"


def make_oracle(spec: Spec) -> Any:
    """The oracle of spec.search.sampler over the spec's space; new entries are refused."""
    sampler = spec.search.sampler
    if sampler not in _ORACLES:
        raise SpecError(
            f"the keras-tuner engine has no sampler {sampler!r}; "
            f"choose one of {', '.join(KERAS_TUNER_SAMPLERS)}"
        )
    kwargs: dict[str, Any] = {
        "objective": OBJECTIVE,
        "hyperparameters": to_hyperparameters(spec.space, spec.baseline, grid=sampler == "grid"),
        "allow_new_entries": False,  # a builder asking for an unknown entry is an error, not a new axis
        "seed": spec.train.seed % (2**31 - 1) + 1,  # Keras Tuner treats seed 0 as "pick one at random"
        "max_retries_per_trial": 0,
        "max_consecutive_failed_trials": NO_LIMIT,
    }
    if sampler == "hyperband":
        kwargs.update(max_epochs=spec.train.epochs, factor=HYPERBAND_FACTOR, hyperband_iterations=None)
    else:
        kwargs["max_trials"] = None  # the study's target, not Keras Tuner's count, decides when to stop
    if sampler == "bayes":
        kwargs["num_initial_points"] = BAYES_RANDOM_POINTS
    oracle = _ORACLES[sampler](**kwargs)
    oracle.verbose = 0  # our Progress prints the trial lines
    return oracle


class _Tuner(kt.Tuner):
    """Keras Tuner's trial loop and project files; each trial is one call of `evaluate`."""

    def __init__(self, oracle: Any, job: Job, **kwargs: Any) -> None:
        self.tune_job = job
        super().__init__(oracle, hypermodel=None, **kwargs)

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        folder = Path(self.get_trial_dir(trial.trial_id))
        try:
            value = self.tune_job.run_trial(trial.trial_id, dict(trial.hyperparameters.values), folder)
        except FatalError as exc:
            raise _Fatal(exc) from None
        except TrialFailed as exc:
            raise kt.errors.FailedTrialError(str(exc)) from None  # FAILED at once, no Keras Tuner retry
        return {OBJECTIVE.name: value}

    def on_trial_end(self, trial: Any) -> None:
        super().on_trial_end(trial)  # Keras Tuner ends and saves the trial first; then the storage gets it
        final = self.oracle.get_trial(trial.trial_id)
        self.tune_job.finish(final.trial_id, final.status, Path(self.get_trial_dir(trial.trial_id)))


def run(spec: Spec, storage_url: str, options: KerasTunerOptions) -> RunSummary:
    oracle = make_oracle(spec)  # a space Keras Tuner cannot take is refused before anything is written
    storage = open_storage(storage_url, create=True)
    study, notes = create_or_join(
        spec,
        storage,
        storage_url,
        options.data,
        explicit_target=options.explicit_target,
        enqueue=False,  # Keras Tuner's oracle proposes the baseline itself (its first trial)
    )
    failures.check(study)  # a study stopped for failing is not restarted blindly
    target = target_of(study)
    project, warning = choose_project(study, spec.search.sampler)
    progress = Progress(spec.study, target, quiet=options.quiet, epochs=spec.train.epochs)
    for note in notes:
        progress.note(note)
    if warning:
        progress.console.print(f"[yellow]warning:[/] {warning}")
    if spec.search.pruner != "none" and not options.quiet:
        progress.console.print(
            f"note: search.pruner={spec.search.pruner} does not apply to the keras-tuner engine "
            "(Keras Tuner has no pruner; --sampler hyperband schedules epochs itself)"
        )
    kt_config.DEBUG = os.environ.get("TUNE_DEBUG") == "1"  # else a traceback per failed trial
    job = Job(
        spec,
        study,
        project,
        progress,
        options.threads,
        target,
        tensorboard_dir=options.tensorboard_dir,
        keeper=ModelKeeper(storage_url, spec.study, spec.search.keep_models),
        tracker=MlflowTracker(options.mlflow, spec.study, storage_url, quiet=options.quiet)
        if options.mlflow
        else None,
    )
    job.recorded = recorded_ids(study, project)
    job.expect_baseline = not any(t.params == job.baseline() for t in study.get_trials(deepcopy=False))
    oracle.budget_left = job.budget_left
    oracle.baseline_first = job.expect_baseline
    with contextlib.redirect_stdout(sys.stderr):  # Keras Tuner prints "Reloading Tuner from ..." on stdout
        tuner = _Tuner(oracle, job, directory=str(projects_root(spec.study)), project_name=project)
    job.resumed = set(oracle._retry_queue)  # noqa: SLF001 - the trials an interruption cut short
    for trial in list(oracle.trials.values()):  # ended by Keras Tuner but not stored (died in between)
        job.record(trial.trial_id, trial.status, Path(tuner.get_trial_dir(trial.trial_id)))
    try:
        with job.stops:
            tuner.search(verbose=0)
    except _Fatal as exc:
        raise exc.original from None
    finally:
        job.keeper.close()
        progress.close()  # the live bar goes before the summary
    c = counts(study)
    done = finished(c)
    if done < target and job.budget_left() > 0 and not options.quiet:
        progress.console.print("note: Keras Tuner's oracle has no untried configuration left in this space")
    best = best_trial(study)
    return RunSummary(
        study=spec.study,
        target=target,
        finished=done,
        ran_here=job.ran,
        failed_here=job.failed,
        best_value=best.value if best else None,
        best_number=best.number if best else None,
        best_params=dict(best.params) if best else None,
        seconds=time.monotonic() - job.started,
        states={state.name.lower(): n for state, n in c.items()},
    )
