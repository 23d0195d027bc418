"""One Optuna trial of a worker: ask under the study claim, heartbeat, evaluate, tell.

Our own ask/tell rather than `study.optimize(n_trials=1)`, for two cases Optuna's loop turns into a
crash: a trial that a live peer failed as stale while this worker was still running it (after a
database stall) is dropped here in one line instead of "Cannot tell a FAIL trial"; and a trial started
under a claim that a database restart took away is checked against the target again.
"""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import optuna
from optuna.trial import TrialState

from marstune.tuning.config.space import Categorical, Int, Space
from marstune.tuning.config.spec import Spec
from marstune.tuning.errors import (
    DiskFull,
    FatalError,
    Pruned,
    StorageError,
    TrialFailed,
    is_disk_full,
    one_line,
)
from marstune.tuning.search.objective import TrialContext, evaluate
from marstune.tuning.study import lifecycle
from marstune.tuning.study.claim import StudyClaim
from marstune.tuning.study.disk import full_disk_line
from marstune.tuning.study.settings import grace_period
from marstune.tuning.study.tables import FailKind
from marstune.tuning.study.trial_attrs import CONFIG_ATTR, stored_attrs

if TYPE_CHECKING:
    from marstune.tuning.search.engines import OptunaOptions
    from marstune.tuning.search.interrupts import StopRequest
    from marstune.tuning.search.keeping import ModelKeeper
    from marstune.tuning.search.progress import Progress
    from marstune.tuning.search.reaper import Reaper
    from marstune.tuning.search.tracking import MlflowTracker

UpdateFinished = optuna.exceptions.UpdateFinishedTrialError


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


class Heartbeat:
    """A thread that records the trial's heartbeat every interval until the trial ends. Its storage call
    never raises (study/resilient.py): a beat missed in an outage is simply the next one."""

    def __init__(self, storage: Any, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial_id}", daemon=True)

    def _beat(self) -> None:
        every = self.storage.get_heartbeat_interval()
        while True:
            self.storage.record_heartbeat(self.trial_id)
            if every is None or self.stop.wait(every):
                return

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


@dataclass
class Goal:
    """What the worker loop decided under the claim: the target, and whether the search is a grid."""

    target: int
    grid: bool
    url: str


@dataclass(frozen=True)
class Outcome:
    """How a trial this worker ran ended, for the worker loop (optuna_engine)."""

    kind: Literal["complete", "pruned", "failed", "duplicate", "surplus", "reaped"]
    reason: str = ""  # failed: why (its fail_reason)
    kept: bool = False  # complete: its model was kept, so the study is pruned back to the top K


def run_trial(study: optuna.Study, objective: _Objective) -> Outcome:
    """Ask (the claim is held), run the objective with heartbeats, tell; how the trial ended."""
    with warnings.catch_warnings():  # "heartbeat ... supposed to be used with Study.optimize": ours beats
        warnings.simplefilter("ignore", UserWarning)
        trial = study.ask()
    value: float | None = None
    state: TrialState | None = TrialState.FAIL
    error: BaseException | None = None
    with Heartbeat(study._storage, trial._trial_id):  # noqa: SLF001
        try:
            value, state = objective(trial), TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except TrialFailed:
            pass
        except UpdateFinished:
            state = None  # a peer failed it as stale while this process ran it
        except StorageError:
            raise  # the storage gave up after $TUNE_DB_RETRY_SECONDS: telling would wait as long again
        except BaseException as exc:  # fatal errors and interrupts: told FAIL, then raised
            error = exc
    if error is not None and is_disk_full(error):
        raise objective.disk_full(trial, error) from None
    reaped = state is None
    if state is not None:
        told = study.tell(
            trial, value if state == TrialState.COMPLETE else None, state=state, skip_if_finished=True
        )
        reaped = told.state == TrialState.FAIL and state != TrialState.FAIL  # failed before this tell
    if reaped:
        objective.dropped(trial.number, value)
    if error is not None:
        raise error
    objective.stop_if_no_room(trial.number)
    assert objective.outcome is not None, "every trial that ends without raising records its outcome"
    return objective.outcome


class _Objective:
    """Params from the space, context for `evaluate`, reasons into user attributes; how the trial ended
    in `outcome` (Optuna's objective returns only the value), which run_trial returns."""

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
        self.run_id: str | None = None  # the trial's MLflow run
        self.worker = lifecycle.worker_name()
        self.claim: StudyClaim | None = None
        self.goal: Goal | None = None
        self.done = 0
        self.outcome: Outcome | None = None
        self.current: int | None = None  # the trial id in flight, for a re-queue after an interrupt

    def begin(self, claim: StudyClaim, done: int, goal: Goal) -> None:
        self.claim, self.done, self.goal = claim, done, goal
        self.outcome = None

    def __call__(self, trial: optuna.Trial) -> float:
        assert self.claim is not None
        held = self.claim.release()  # the trial exists now: other workers may claim theirs
        self.current = trial._trial_id  # noqa: SLF001
        frozen = trial.study._storage.get_trial(trial._trial_id)  # noqa: SLF001 - Trial hides system attrs
        queued = lifecycle.ENQUEUED_AS in frozen.user_attrs
        if not held and not queued and self._past_target(trial):
            self.outcome = Outcome("surplus")
            reason = "started while a database restart took the study claim away; the target is covered"
            self._fail(trial, FailKind.SURPLUS, reason)
            raise TrialFailed("surplus")
        params = suggest(trial, self.spec.space)
        config = self.spec.config_for(params)
        retry_of = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        retry_of = frozen.user_attrs.get("retry_of", retry_of)
        trial.storage.set_trial_system_attr(trial._trial_id, CONFIG_ATTR, config)  # noqa: SLF001
        trial.set_user_attr("worker", self.worker)
        trial.set_user_attr("engine", "optuna")
        if retry_of is not None:
            trial.set_user_attr("retry_of", retry_of)
            self.keeper.forget_inherited(trial, frozen.system_attrs)
        elif not queued:
            same = lifecycle.duplicates_of(trial.study, params, trial.number)
            if same is not None:  # sampled, not queued: a repeat would only cost a trial's compute
                self.outcome = Outcome("duplicate")
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
            self._track("pruned", None, epochs=ctx.attrs.get("epoch_log"))
            self.progress.trial_finished(trial.number, "pruned", None)
            self.outcome = Outcome("pruned")
            raise optuna.TrialPruned(str(exc)) from None
        except (FatalError, UpdateFinished):
            raise
        except KeyboardInterrupt:
            self._fail(
                trial, FailKind.INTERRUPTED, "interrupted (Ctrl-C or SIGTERM); queued again if enqueued"
            )
            self._track("failed", None)
            raise
        except Exception as exc:  # one trial's failure (NaN, OOM, unbuildable config): the study goes on
            if is_disk_full(exc):
                raise  # not the configuration's fault: run_trial marks it so and the run stops
            reason = one_line(exc)
            self._attrs(trial, ctx.attrs, started)
            self._fail(trial, FailKind.ERROR, reason)
            self._track("failed", None, epochs=ctx.attrs.get("epoch_log"))
            self.outcome = Outcome("failed", reason)
            self.progress.trial_finished(trial.number, "failed", None, reason)
            raise TrialFailed(reason) from None
        self._attrs(trial, ctx.attrs, started)
        self._track("complete", value, self.keeper.file, epochs=ctx.attrs.get("epoch_log"))
        kept = self.keeper.store(trial) is not None  # linked while the trial still runs
        self.outcome = Outcome("complete", kept=kept)
        self.progress.trial_finished(trial.number, "complete", value)
        self.current = None
        return value

    def _track(
        self, state: str, value: float | None, model: Path | None = None, *, epochs: list | None = None
    ) -> None:
        if self.tracker:
            self.tracker.finish(self.run_id, state, value, model, epochs=epochs or ())

    def _past_target(self, trial: optuna.Trial) -> bool:
        """Under a fresh claim: would this trial take the study past its target? (grid: never; its
        trials are all queued)."""
        assert self.goal is not None
        if self.goal.grid:
            return False
        storage = trial.study._storage  # noqa: SLF001
        with StudyClaim(storage, self.goal.url, trial.study.study_name):
            c = lifecycle.counts(trial.study)
            return lifecycle.finished(c) + c[TrialState.RUNNING] > self.goal.target

    def dropped(self, number: int, value: float | None) -> None:
        """The trial was failed by a live peer (its heartbeats stopped reaching the storage): one line."""
        self.outcome, self.current = Outcome("reaped"), None
        result = "" if value is None else f" (value {value:.4f})"
        self.progress.note(
            f"trial {number}: another worker failed it as stale while this one ran it (no heartbeat reached "
            f"the storage for {grace_period()} s); its result{result} is dropped and its retry runs it again"
        )

    def stop_if_no_room(self, number: int) -> None:
        """The trial completed but its model could not be kept (a full disk): stop, naming the disk."""
        no_room, self.keeper.no_room = self.keeper.no_room, None
        if no_room is not None:
            assert self.goal is not None
            line = full_disk_line(self.goal.url, *no_room)
            raise DiskFull(f"{line}; trial {number} completed without its kept model")

    def disk_full(self, trial: optuna.Trial, exc: BaseException) -> DiskFull:
        """A disk filled while this trial ran: mark it as the storage's fault (FailKind.STORAGE, not
        counted by the failure streak; an enqueued trial is queued again) where the database can still
        take the write, and return the one line that stops the run."""
        assert self.goal is not None
        line = full_disk_line(self.goal.url, exc)
        self.current = None
        try:
            self._fail(trial, FailKind.STORAGE, f"stopped by a full disk: {line}")
            trial.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            self._track("failed", None)
        except Exception as again:  # the database's own disk: nothing can be written to it now
            if not is_disk_full(again):
                raise
            line += (
                f"; trial {trial.number} stays RUNNING until then (the database could not record why), and "
                "is failed as stale and run again once there is room"
            )
        return DiskFull(line)

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
        user, system = stored_attrs(attrs)
        for key, value in user.items():
            trial.set_user_attr(key, value)
        for key, value in system.items():
            trial.storage.set_trial_system_attr(trial._trial_id, key, value)  # noqa: SLF001
        trial.set_user_attr("wall_seconds", round(time.perf_counter() - started, 3))
