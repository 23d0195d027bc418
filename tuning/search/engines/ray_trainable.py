"""What runs under Ray Tune's control: the trainable (on workers) and the searcher/scheduler (on the driver).

Only this file and ray_engine.py import ray; ray_engine.py imports this module only after it has set Ray's
environment up. The trainable gets the spec (its plain stored dict) and a config, never the storage: the
searcher on the driver writes every trial to the database, so no URL or password reaches a worker. The
searcher pickles (tuner.pkl, searcher checkpoints) without its storage and finds it again through
`DRIVERS` in the driver process.
"""

from __future__ import annotations

import json
import time
import warnings
from typing import Any

import optuna
import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from marstune.tuning.config.spec import Spec, spec_from_stored
from marstune.tuning.errors import Pruned, redact
from marstune.tuning.search import failures
from marstune.tuning.search.objective import TrialContext, evaluate
from marstune.tuning.study.lifecycle import mark_failed
from marstune.tuning.study.tables import FailKind
from marstune.tuning.study.trial_attrs import CONFIG_ATTR, stored_attrs

NUMBER_KEY = "_optuna_trial"  # the Optuna trial number, added to the config by the searcher
ATTEMPT_FILE = "tune-attempts"  # in the trial's directory on Ray's (shared) storage
DRIVERS: dict[str, Any] = {}  # study name -> ray_engine.Driver (storage, progress, counters)
FAIL_REASONS: dict[str, str] = {}  # Ray trial id -> one line, recorded by the scheduler for the searcher


class TrialError(Exception):
    """One line saying why a trial failed; the driver reads it back from Ray's error file."""


def _attempt() -> int:
    """1 on a trial's first run, 2 on its retry after a failure (or when an interrupted run resumes it).

    Counted in a file in the trial's own directory on Ray's storage, which every node sees (Ray needs a
    shared storage path for multi-node runs anyway); a worker's local dir would not survive a retry that
    lands on another node.
    """
    storage = tune.get_context().get_storage()
    fs, path = storage.storage_filesystem, f"{storage.trial_fs_path}/{ATTEMPT_FILE}"
    fs.create_dir(storage.trial_fs_path)
    try:
        with fs.open_input_stream(path) as f:
            previous = int(f.read().decode() or 0)
    except (OSError, ValueError):
        previous = 0
    with fs.open_output_stream(path) as f:
        f.write(str(previous + 1).encode())
    return previous + 1


def run_trial(
    config: dict[str, Any], spec_raw: dict[str, Any], threads: int, tensorboard_dir: str | None
) -> None:
    """One trial on a worker. Reports {final: 0, epoch, val_miou} per epoch, then {final: 1, attrs}."""
    spec = spec_from_stored(spec_raw)
    params = {k: config[k] for k in spec.space.params}
    attempt = _attempt()
    where = {
        "ray_node_ip": ray.util.get_node_ip_address(),
        "ray_node_id": ray.get_runtime_context().get_node_id(),
    }
    started = time.perf_counter()

    def report(epoch: int, value: float) -> bool:
        seconds = time.perf_counter() - started
        tune.report(
            {"final": 0, "epoch": epoch + 1, "val_miou": value, "attempt": attempt, "trial_seconds": seconds}
            | where
        )
        return False  # ASHA stops the trial from outside; the trainable never prunes itself

    ctx = TrialContext(
        int(config[NUMBER_KEY]), report, attempt == 1, threads=threads, tensorboard_dir=tensorboard_dir
    )
    try:
        best = evaluate(spec.config_for(params), spec, ctx)
    except Pruned:  # not raised while report() returns False; a stop, should a pruning path appear
        return
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else ""
        raise TrialError(f"{type(exc).__name__}: {text}"[:500]) from None
    final = {"final": 1, "epoch": int(ctx.attrs.get("epochs_run", spec.train.epochs)), "val_miou": best}
    final |= {"best_miou": best, "attempt": attempt, "trial_seconds": time.perf_counter() - started}
    tune.report(final | {"attrs": json.dumps(ctx.attrs)} | where)


def result_attrs(result: dict[str, Any]) -> dict[str, Any]:
    """User attributes from a trial's last Ray result (the trainable's final report carries `attrs`)."""
    attrs: dict[str, Any] = json.loads(result["attrs"]) if result.get("attrs") else {}
    if "trial_seconds" in result:
        attrs["wall_seconds"] = round(float(result["trial_seconds"]), 3)
    if "attempt" in result:
        attrs["attempt"] = int(result["attempt"])
    return attrs


def trial_dirname(trial: Any) -> str:
    return f"trial-{trial.config.get(NUMBER_KEY, 'x')}-{trial.trial_id}"


def _error_line(trial: Any) -> str:
    """The one-line reason from Ray's error file of a trial (the TrialError raised above)."""
    try:
        with open(trial.error_file) as f:
            lines = [line.strip() for line in f if line.strip()]
    except (OSError, TypeError):
        return "the trial's Ray worker failed"
    tagged = [line.split("TrialError: ", 1)[1] for line in lines if "TrialError: " in line]
    return redact(tagged[-1] if tagged else lines[-1] if lines else "unknown error")[:500]


class _Hooks:
    """Scheduler part shared by ASHA and FIFO: skip the final bookkeeping report, note why trials fail."""

    last_epoch = 0  # ASHA: its top rung may fall on the last epoch; a trial that got there is not pruned

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if result.get("final") or (self.last_epoch and result.get("epoch", 0) >= self.last_epoch):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)  # type: ignore[misc]

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        FAIL_REASONS[trial.trial_id] = _error_line(trial)  # read before the searcher is told (Ray's order)
        super().on_trial_error(tune_controller, trial)  # type: ignore[misc]


class Asha(_Hooks, ASHAScheduler):
    pass


class Fifo(_Hooks, FIFOScheduler):
    pass


def make_scheduler(spec: Spec) -> TrialScheduler:
    """median/hyperband -> ASHA (median: halve from epoch 2; hyperband: thirds from epoch 1); none -> FIFO."""
    if spec.search.pruner == "none":
        return Fifo()
    grace, factor = (min(2, spec.train.epochs), 2) if spec.search.pruner == "median" else (1, 3)
    # max_t past the last epoch, and _Hooks skips it: reaching the end is completion, not an ASHA stop.
    asha = Asha(
        time_attr="epoch",
        metric="val_miou",
        mode="max",
        max_t=spec.train.epochs + 1,
        grace_period=grace,
        reduction_factor=factor,
    )
    asha.last_epoch = spec.train.epochs
    return asha


class StudySearch(OptunaSearch):
    """OptunaSearch on our study, recording states and user attributes as the Optuna engine does."""

    def __init__(self, spec: Spec, experiment: str) -> None:
        driver = DRIVERS[spec.study]
        self._experiment, self._numbers = experiment, {}
        super().__init__(
            space=spec.space.to_optuna(),
            metric="val_miou",
            mode="max",
            sampler=driver.sampler,
            study_name=spec.study,
            storage=driver.storage,
        )

    # --- pickling: never the storage (its URL holds the password); numbers instead of trial objects
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_numbers"] = {tid: t.number for tid, t in self._ot_trials.items()}
        for key in ("_ot_study", "_storage", "_sampler", "_ot_trials"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._ot_study = self._storage = self._sampler = None
        self._ot_trials = {}

    def _attach(self) -> Any:
        if self._ot_study is None:
            driver = DRIVERS[self._study_name]
            self._storage, self._sampler = driver.storage, driver.sampler
            self._ot_study = optuna.load_study(
                study_name=self._study_name,
                storage=self._storage,
                sampler=self._sampler,
                pruner=optuna.pruners.NopPruner(),
            )
            for tid, number in self._numbers.items():
                self._ot_trials[tid] = optuna.Trial(self._ot_study, self._trial_id(number))
        return DRIVERS[self._study_name]

    def save(self, checkpoint_path: str) -> None:
        # JSON, not a pickle: Ray's searcher checkpoint file needs only which Ray trial is which Optuna trial.
        state = {
            "trials": {tid: t.number for tid, t in self._ot_trials.items()},
            "completed": sorted(self._completed_trials),
        }
        with open(checkpoint_path, "w") as f:
            json.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            state = json.load(f)
        self._ot_study, self._ot_trials, self._numbers = None, {}, dict(state["trials"])
        self._completed_trials = set(state["completed"])
        self._attach()
        known = set(self._numbers.values())
        for tid, number in self._numbers.items():
            if self._ot_study.trials[number].state.is_finished():  # finished after the last checkpoint:
                self._completed_trials.add(tid)  # Ray may run it again; its results are ignored
        for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("ray_experiment") == self._experiment and t.number not in known:
                # Asked after the last checkpoint of a run that was killed: Ray will not resume it.
                lost = optuna.Trial(self._ot_study, self._trial_id(t.number))
                reason = "lost with its Ray driver (not in the run's last checkpoint)"
                mark_failed(self._ot_study, lost._trial_id, FailKind.INTERRUPTED, reason)  # noqa: SLF001
                self._ot_study.tell(lost, state=TrialState.FAIL)

    def _trial_id(self, number: int) -> int:
        sid = self._storage.get_study_id_from_name(self._study_name)
        return self._storage.get_trial_id_from_study_id_trial_number(sid, number)

    # --- the trial lifecycle
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        driver = self._attach()
        if driver.deadline is not None and time.monotonic() > driver.deadline:
            return Searcher.FINISHED  # search.timeout: start nothing new; running trials finish
        in_flight = len(set(self._ot_trials) - self._completed_trials)
        if driver.done >= driver.target or driver.stop_reason:
            return Searcher.FINISHED  # e.g. trials that finished after a killed run's last checkpoint
        if driver.done + in_flight >= driver.target:
            return None  # enough running; ask again if one of them fails
        config = super().suggest(trial_id)
        if not isinstance(config, dict):
            return config
        trial = self._ot_trials[trial_id]
        trial.storage.set_trial_system_attr(trial._trial_id, CONFIG_ATTR, driver.spec.config_for(config))  # noqa: SLF001
        trial.set_user_attr("engine", "ray")
        trial.set_user_attr("ray_experiment", self._experiment)
        trial.set_user_attr("ray_trial_id", trial_id)
        driver.progress.trial_started(trial.number, driver.done, config, driver.best)
        return {**config, NUMBER_KEY: trial.number}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        driver = self._attach()
        trial = self._ot_trials.get(trial_id)
        if trial is None or result.get("final") or trial_id in self._completed_trials:
            return
        self._report(trial, result)
        if "ray_node_id" in result and trial_id not in driver.placed:
            driver.placed.add(trial_id)
            self._place(trial, result)
        driver.progress.epoch(trial.number, int(result["epoch"]) - 1, float(result["val_miou"]))

    @staticmethod
    def _place(trial: optuna.Trial, result: dict[str, Any]) -> None:
        trial.set_user_attr("worker", f"ray:{result['ray_node_ip']}")
        trial.set_user_attr("ray_node_id", result["ray_node_id"])

    @staticmethod
    def _report(trial: optuna.Trial, result: dict[str, Any]) -> None:
        # A retried trial reports its first epochs again: Optuna keeps the first values (and warns).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            trial.report(float(result["val_miou"]), int(result["epoch"]) - 1)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        driver = self._attach()
        trial = self._ot_trials.get(trial_id)
        if trial is None or trial_id in self._completed_trials:
            return
        result = result or {}
        user, system = stored_attrs(result_attrs(result))
        for key, value in user.items():
            trial.set_user_attr(key, value)
        for key, value in system.items():
            trial.storage.set_trial_system_attr(trial._trial_id, key, value)  # noqa: SLF001
        if "ray_node_id" in result:  # the node of the attempt that finished (a retry may move)
            self._place(trial, result)
        value, reason = None, ""
        if error or "val_miou" not in result:
            state = TrialState.FAIL
            reason = FAIL_REASONS.pop(trial_id, "" if error else "stopped by Ray before it reported")
            reason = reason or "the trial's Ray worker failed"
            mark_failed(self._ot_study, trial._trial_id, FailKind.ERROR, reason)  # noqa: SLF001
        elif result.get("final"):
            state, value = TrialState.COMPLETE, float(result["best_miou"])
        else:  # stopped by ASHA before its last epoch: OptunaSearch would say COMPLETE
            state = TrialState.PRUNED
            self._report(trial, result)
        self._ot_study.tell(trial, value, state=state)
        self._completed_trials.add(trial_id)
        driver.record(trial.number, state.name.lower(), value, reason)
        if state == TrialState.FAIL:
            driver.stop_reason = failures.stop_reason(self._ot_study)  # the study's streak, as every engine
