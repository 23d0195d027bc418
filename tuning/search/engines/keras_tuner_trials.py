"""The trial side of the Keras Tuner engine: run one configuration through `evaluate`, and write each
finished Keras Tuner trial into the Optuna storage.

Keras Tuner keeps its own project files (oracle state, one folder per trial); the Optuna storage stays
the single source of truth. Each finished Keras Tuner trial is written there once, keyed on
(project, Keras Tuner trial id), so a resumed run never records a trial twice. Before Keras Tuner ends
a trial, the engine writes `tune_record.json` into the trial's folder: if the process dies between
Keras Tuner saving the trial and the storage write, the next run finds the record and adds it.
This file does not import keras_tuner (only keras_tuner_engine.py does, and translates the exceptions).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from marstune.tuning.config.space import Space
from marstune.tuning.config.spec import Spec
from marstune.tuning.errors import FatalError, TrialFailed, one_line
from marstune.tuning.outputs import write_atomically
from marstune.tuning.search import failures
from marstune.tuning.search.interrupts import StopRequest
from marstune.tuning.search.keeping import ModelKeeper
from marstune.tuning.search.objective import TrialContext, evaluate
from marstune.tuning.search.progress import Progress
from marstune.tuning.search.tracking import MlflowTracker
from marstune.tuning.study import artifacts, tables
from marstune.tuning.study.lifecycle import best_trial, counts, finished, worker_name
from marstune.tuning.study.tables import FailKind
from marstune.tuning.study.trial_attrs import CONFIG_ATTR, stored_attrs

ENGINE = "keras-tuner"
RECORD_FILE = "tune_record.json"
# Study user attribute: sampler -> project name (a folder under studies/<study>/keras_tuner).
PROJECTS_ATTR = "keras_tuner_projects"


def projects_root(study: str) -> Path:
    """Keras Tuner's `directory=`: the study's folder under studies/ (beside the default database)."""
    return Path("studies") / study / "keras_tuner"


@dataclass
class TrialRecord:
    """What one Keras Tuner trial contributes to the storage (also its tune_record.json)."""

    kt_id: str
    params: dict[str, Any]
    config: dict[str, Any]
    started: str  # ISO timestamps: the dashboard shows durations
    finished: str = ""
    value: float | None = None
    intermediate: dict[int, float] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    fail_reason: str = ""
    links: dict[str, str] = field(default_factory=dict)  # trial system attributes: its kept model

    def save(self, folder: Path) -> None:
        # Atomic: a crash leaves the old record or the new one.
        write_atomically(folder / RECORD_FILE, json.dumps(dataclasses.asdict(self), indent=1, default=str))

    @classmethod
    def load(cls, folder: Path) -> TrialRecord | None:
        path = folder / RECORD_FILE
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        raw["intermediate"] = {int(k): float(v) for k, v in raw.get("intermediate", {}).items()}
        return cls(**raw)


def now() -> str:
    return datetime.datetime.now().isoformat()


def choose_project(study: optuna.Study, sampler: str) -> tuple[str, str]:
    """The project name for this study and sampler, and a warning if earlier project files are gone.

    A random token makes the name unique per study, so a study deleted and made again (or the same
    name in another storage) never reloads a stale project. If the study recorded trials from a project
    whose files are missing (another working directory, deleted folder), a new project starts: reusing
    the name would make the new project's trial ids collide with the recorded ones.
    """
    projects = dict(study.user_attrs.get(PROJECTS_ATTR) or {})
    name = projects.get(sampler)
    warning = ""
    folder = projects_root(study.study_name) / name if name else None
    if folder is not None and not folder.exists() and recorded_ids(study, name):
        warning = (
            f"Keras Tuner project {folder} is missing (run from another folder?); starting a new "
            "Keras Tuner project, the study keeps its trials"
        )
        name = None
    if name is None:
        name = f"{sampler}-{uuid.uuid4().hex[:8]}"
        projects[sampler] = name
        study.set_user_attr(PROJECTS_ATTR, projects)
    return name, warning


def recorded_ids(study: optuna.Study, project: str) -> dict[str, int]:
    """Keras Tuner trial id -> Optuna trial number, for the trials of `project` already in the storage."""
    return {
        str(t.user_attrs["keras_tuner_trial_id"]): t.number
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("keras_tuner_project") == project and "keras_tuner_trial_id" in t.user_attrs
    }


def add_to_study(
    study: optuna.Study, space: Space, record: TrialRecord, complete: bool, project: str, sampler: str
) -> int:
    """Write one finished Keras Tuner trial into the storage; returns its Optuna trial number."""
    user, epoch_system = stored_attrs(record.attrs)
    attrs = {
        **user,
        "engine": ENGINE,
        "keras_tuner_trial_id": record.kt_id,
        "keras_tuner_project": project,
        "keras_tuner_sampler": sampler,
    }
    system: dict[str, Any] = {
        **(dict(record.links) if complete else {}),
        **epoch_system,
        CONFIG_ATTR: record.config,
    }
    if not complete:
        attrs["fail_reason"] = record.fail_reason or "Keras Tuner marked the trial failed"
        system[tables.FAIL_KIND_ATTR] = str(FailKind.ERROR)
    frozen = optuna.trial.create_trial(
        state=TrialState.COMPLETE if complete else TrialState.FAIL,
        value=record.value if complete else None,
        params=record.params,
        distributions=space.to_optuna(),
        intermediate_values=record.intermediate,
        user_attrs=attrs,
        system_attrs=system,
    )
    # create_trial stamps both times "now"; the real ones give the dashboard true durations.
    frozen.datetime_start = datetime.datetime.fromisoformat(record.started)
    frozen.datetime_complete = datetime.datetime.fromisoformat(record.finished or now())
    study.add_trial(frozen)
    for t in reversed(study.get_trials(deepcopy=False)):  # its number (add_trial returns none)
        if (
            t.user_attrs.get("keras_tuner_project") == project
            and t.user_attrs["keras_tuner_trial_id"] == record.kt_id
        ):
            return t.number
    raise AssertionError("unreachable: the trial was just added")


@dataclass
class Job:
    """One `run`: the spec, the study, its project, and this process's counters."""

    spec: Spec
    study: optuna.Study
    project: str
    progress: Progress
    threads: int
    target: int
    started: float = field(default_factory=time.monotonic)
    recorded: dict[str, int] = field(default_factory=dict)  # Keras Tuner id -> Optuna number
    resumed: set[str] = field(default_factory=set)  # ids re-run after an interruption
    expect_baseline: bool = False  # the baseline is not in the study yet: mark it when it comes
    stops: StopRequest = field(default_factory=StopRequest)
    ran: int = 0
    failed: int = 0
    tensorboard_dir: str | None = None
    worker: str = field(default_factory=worker_name)
    keeper: ModelKeeper | None = None
    tracker: MlflowTracker | None = None

    def finished(self) -> int:
        return finished(counts(self.study))

    def budget_left(self) -> int:
        """Asked before each new trial: a safe point to act on Ctrl-C/SIGTERM (nothing half written)."""
        self.stops.check()
        timeout = self.spec.search.timeout
        if timeout and time.monotonic() - self.started > timeout:
            return 0
        return self.target - self.finished()

    def run_trial(self, kt_id: str, values: dict[str, Any], folder: Path) -> float:
        """Train one configuration; raises TrialFailed (the study goes on) or a FATAL TuneError."""
        # Plain Python values (the Bayesian oracle returns numpy floats): JSON, YAML export, the dashboard.
        params = {
            k: v.item() if hasattr(v, "item") else v for k, v in values.items() if k in self.spec.space.params
        }
        record = TrialRecord(kt_id, params, self.spec.config_for(params), started=now())
        spec = self.spec
        if "tuner/epochs" in values:  # a hyperband round: its epoch budget replaces train.epochs
            epochs = int(values["tuner/epochs"])
            spec = dataclasses.replace(spec, train=spec.train.model_copy(update={"epochs": epochs}))
            past = values.get("tuner/trial_id")
            record.attrs["hyperband"] = {
                "epochs": epochs,
                "bracket": values.get("tuner/bracket"),
                "round": values.get("tuner/round"),
                "continues_trial": self.recorded.get(past) if past is not None else None,
            }
        c = counts(self.study)
        number = sum(c.values())  # the Optuna number this trial will get (one process adds trials)
        best = best_trial(self.study)
        self.progress.trial_started(
            number, c[TrialState.COMPLETE] + c[TrialState.PRUNED], params, best.value if best else None
        )

        run_id = self.tracker.start(number, record.config) if self.tracker else None

        def report(epoch: int, value: float) -> bool:
            record.intermediate[epoch] = value
            self.progress.epoch(number, epoch, value)
            if self.tracker:
                self.tracker.epoch(run_id, epoch, value)
            return False  # Keras Tuner has no pruner

        ctx = TrialContext(
            number,
            report,
            first_attempt=kt_id not in self.resumed,
            threads=self.threads,
            tensorboard_dir=self.tensorboard_dir,
            keep=self.keeper.decide if self.keeper is not None else None,
        )
        clock = time.perf_counter()
        try:
            with self.stops.interruptible():  # a signal stops training at once; the trial re-runs on resume
                record.value = float(evaluate(record.config, spec, ctx))
        except FatalError:
            raise
        except Exception as exc:  # one trial's failure (NaN, unbuildable config): the study goes on
            record.fail_reason = one_line(exc)
        record.attrs.update(ctx.attrs)
        record.attrs.update(worker=self.worker, wall_seconds=round(time.perf_counter() - clock, 3))
        saved = self.keeper.file if self.keeper is not None else None
        if self.tracker:
            state = "failed" if record.fail_reason else "complete"
            model = saved if saved and saved.is_file() else None
            self.tracker.finish(run_id, state, record.value, model, epochs=ctx.attrs.get("epoch_log") or ())
        if saved is not None and saved.is_file():  # into the study's store now, linked when stored
            record.links = artifacts.stored_link(self.study, saved)
            saved.unlink()
        if self.expect_baseline and params == self.baseline():
            record.attrs["enqueued_as"] = "baseline"  # the key the Optuna engine uses for its baseline
            self.expect_baseline = False
        record.finished = now()
        record.save(folder)  # before Keras Tuner ends the trial: a crash in between loses nothing
        if record.fail_reason:
            raise TrialFailed(record.fail_reason)
        return record.value

    def baseline(self) -> dict[str, Any]:
        return {k: self.spec.baseline[k] for k in self.spec.space.params if k in self.spec.baseline}

    def record(self, kt_id: str, status: str, folder: Path) -> TrialRecord | None:
        """Add a trial Keras Tuner has ended (COMPLETED/FAILED) to the storage unless it is there already."""
        if kt_id in self.recorded or status not in ("COMPLETED", "FAILED"):
            return None
        record = TrialRecord.load(folder)
        if record is None:  # the trial never reached its record (cannot happen for an ended trial)
            return None
        complete = status == "COMPLETED"
        number = add_to_study(
            self.study, self.spec.space, record, complete, self.project, self.spec.search.sampler
        )
        self.recorded[kt_id] = number
        return record

    def finish(self, kt_id: str, status: str, folder: Path) -> None:
        """After Keras Tuner ended a trial: store it, print it, count failures in a row."""
        record = self.record(kt_id, status, folder)
        if record is None:
            return
        number = self.recorded[kt_id]
        self.ran += 1
        if status == "COMPLETED":
            if record.links and self.keeper is not None:
                self.keeper.prune(self.study._storage)  # noqa: SLF001 - back to the top K kept models
            self.progress.trial_finished(number, "complete", record.value)
            return
        self.failed += 1
        reason = record.fail_reason or "Keras Tuner marked the trial failed (no finite mIoU)"
        self.progress.trial_finished(number, "failed", None, reason)
        failures.check(self.study)  # the study's streak, as every engine: raises TooManyFailures
