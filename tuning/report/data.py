"""What a report shows, read from the storage into plain data (no plotting here).

Both renderers (plotly for the HTML, matplotlib for the PNGs) draw from these same structures, so a
PNG pasted into a slide shows exactly what the HTML shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marstune.tuning.constants import CLASS_NAMES, SCORED_CLASSES
from marstune.tuning.study.artifacts import kept_path
from marstune.tuning.study.lifecycle import stored_spec_raw
from marstune.tuning.study.trial_attrs import per_class_iou, trial_config

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str  # complete, pruned, fail, running, waiting
    value: float | None
    params: dict[str, Any]
    curve: list[tuple[int, float]]  # (epoch, validation mIoU) as reported each epoch
    epochs: int  # epochs trained (user attr epochs_run, else the reported epochs)
    train_seconds: float | None
    wall_seconds: float | None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in ("complete", "pruned")


@dataclass(frozen=True)
class StudyData:
    name: str
    sampler: str
    engine: str
    pruner: str
    kind: str  # the objective: unet, analytic or replay
    fingerprint: str
    source: str
    spec: dict[str, Any]
    trials: list[TrialRow]
    space: dict[str, dict[str, Any]]  # the stored space definition: parameter -> {type, choices|low,high}
    best_model: Path | None = None  # the best trial's kept model (study/artifacts.py), if any
    attrs: dict[str, Any] = field(default_factory=dict)  # the study's user attributes (e.g. its re-check)
    # The trials as read once (Optuna's own records): snapshot() makes the study Optuna's plots draw, so
    # a study that workers are still writing to is drawn as it was when these rows were read.
    frozen: list[FrozenTrial] = field(default_factory=list, repr=False)
    directions: list[str] = field(default_factory=lambda: ["maximize"])

    @property
    def label(self) -> str:
        return f"{self.name} ({self.sampler})"

    @property
    def complete(self) -> list[TrialRow]:
        return [t for t in self.trials if t.state == "complete" and t.value is not None]

    @property
    def best(self) -> TrialRow | None:
        return max(self.complete, key=lambda t: t.value or 0.0, default=None)

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)


def _row(t: FrozenTrial) -> TrialRow:
    attrs = dict(t.user_attrs)
    if (config := trial_config(t.system_attrs, attrs)) is not None:
        attrs["config"] = config  # what the report retrains (a system attribute now)
    curve = sorted((int(step), float(v)) for step, v in t.intermediate_values.items())
    epochs = attrs.get("epochs_run")
    return TrialRow(
        number=t.number,
        state=t.state.name.lower(),
        value=None if t.value is None else float(t.value),
        params=dict(t.params),
        curve=curve,
        epochs=int(epochs) if isinstance(epochs, int | float) else len(curve),
        train_seconds=attrs.get("train_seconds"),
        wall_seconds=attrs.get("wall_seconds"),
        attrs=attrs,
    )


def load_study_data(storage: BaseStorage, name: str) -> StudyData:
    from marstune.tuning.study.storage import load_study

    study = load_study(storage, name)
    attrs = study.user_attrs
    spec = stored_spec_raw(storage, study._study_id) or {}  # noqa: SLF001
    search = spec.get("search", {})
    frozen = study.get_trials(deepcopy=False)
    trials = [_row(t) for t in frozen]
    engines = sorted({str(t.attrs.get("engine")) for t in trials if t.attrs.get("engine")})
    return StudyData(
        name=name,
        sampler=str(search.get("sampler", "?")),
        engine=", ".join(engines) or str(search.get("engine", "optuna")),
        pruner=str(search.get("pruner", "?")),
        kind=str(spec.get("objective", {}).get("kind", "unet")),
        fingerprint=str(attrs.get("data_fingerprint", "unknown")),
        source=str(attrs.get("data_source", "unknown")),
        spec=spec,
        trials=sorted(trials, key=lambda t: t.number),
        space=dict(spec.get("space") or _space_from_trials(frozen)),
        best_model=_best_model(storage, study, frozen),
        attrs=dict(attrs),
        frozen=list(frozen),
        directions=[d.name.lower() for d in study.directions],
    )


def snapshot(study: StudyData) -> optuna.Study:
    """The study as it was read, in memory: what Optuna's plots and importances draw from. The live
    storage would show trials that finished after the rows were read (a running study), which the
    report's own tables and hover texts do not know."""
    import optuna

    copy = optuna.create_study(storage=optuna.storages.InMemoryStorage(), directions=study.directions)
    copy.add_trials(study.frozen)
    return copy


def _best_model(storage: BaseStorage, study: optuna.Study, frozen: list[FrozenTrial]) -> Path | None:
    complete = [t for t in frozen if t.state.name == "COMPLETE" and t.value is not None]
    if not complete:
        return None
    best = max(complete, key=lambda t: (t.value, -t.number))
    return kept_path(storage, study._study_id, best)  # noqa: SLF001


def _space_from_trials(trials: list[Any]) -> dict[str, dict[str, Any]]:
    """A study made outside `tune run` stores no spec: its trials' distributions describe the space."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    space: dict[str, dict[str, Any]] = {}
    for t in trials:
        for name, d in t.distributions.items():
            if name in space:
                continue
            if isinstance(d, CategoricalDistribution):
                space[name] = {"type": "categorical", "choices": list(d.choices)}
            else:
                kind = "int" if isinstance(d, IntDistribution) else "float"
                space[name] = {"type": kind, "low": d.low, "high": d.high}
    return space


def comparable_studies(storage: BaseStorage, data: StudyData) -> list[StudyData]:
    """Studies in the same storage on the same data (fingerprint) and objective: this one first."""
    from marstune.tuning.study.storage import study_names

    out = [data]
    for name in study_names(storage):
        if name == data.name:
            continue
        other = load_study_data(storage, name)
        if other.fingerprint == data.fingerprint and other.kind == data.kind and other.complete:
            out.append(other)
    return out


def cumulative_compute(study: StudyData) -> tuple[list[TrialRow], list[float], str]:
    """The finished trials in order and the compute spent up to each, with the compute's name.

    Compute is training seconds when every finished trial recorded them (real training), else epochs
    trained: a pruned trial costs its epochs too, which is where pruning and samplers differ.
    """
    finished = [t for t in study.trials if t.finished]
    seconds = all(t.train_seconds is not None for t in finished) and bool(finished)
    cost, total = [], 0.0
    for t in finished:
        total += float(t.train_seconds) if seconds else t.epochs  # type: ignore[arg-type]
        cost.append(total)
    return finished, cost, ("training seconds (cumulative)" if seconds else "epochs trained (cumulative)")


def best_so_far(study: StudyData) -> tuple[list[int], list[float], list[float], str]:
    """Best value after each finished trial: x as trial count and as cumulative compute."""
    finished, spent, label = cumulative_compute(study)
    xs, ys, cost, best = [], [], [], float("-inf")
    for k, (t, total) in enumerate(zip(finished, spent, strict=True), start=1):
        if t.state == "complete" and t.value is not None:
            best = max(best, t.value)
        if best > float("-inf"):
            xs.append(k)
            ys.append(best)
            cost.append(total)
    return xs, ys, cost, label


def _amount(value: float, seconds: bool) -> str:
    if not seconds:
        return f"{value:.0f}"
    if value < 120:
        return f"{value:.0f}s"
    return f"{value / 60:.0f}m" if value < 7200 else f"{value / 3600:.1f}h"


def compute_ticks(study: StudyData, ticks: int = 6) -> tuple[list[int], list[str], str] | None:
    """The history's compute axis: at up to `ticks` finished trial numbers (the last among them), the
    compute spent by then. None before a trial finished or while nothing was spent."""
    finished, spent, label = cumulative_compute(study)
    if not finished or spent[-1] <= 0:
        return None
    step = max(1, -(-len(finished) // ticks))  # ceil: at most `ticks` marks
    picks = sorted({*range(len(finished) - 1, -1, -step)})
    seconds = label.startswith("training seconds")
    return [finished[i].number for i in picks], [_amount(spent[i], seconds) for i in picks], label


def last_value(t: TrialRow) -> float | None:
    """Where a trial ended: its value, or for a pruned trial the last reported epoch."""
    if t.value is not None:
        return t.value
    return t.curve[-1][1] if t.curve else None


def axis_values(study: StudyData, name: str) -> tuple[list[Any] | None, list[float]]:
    """A parameter as numbers for parallel coordinates: categoricals become choice indices."""
    definition = study.space.get(name, {})
    rows = study.complete
    if definition.get("type") == "categorical":
        choices = list(definition.get("choices", []))
        for t in rows:  # a value outside the stored choices (edited spec) still gets an axis position
            if t.params.get(name) not in choices and name in t.params:
                choices.append(t.params[name])
        return choices, [float(choices.index(t.params[name])) if name in t.params else 0.0 for t in rows]
    return None, [float(t.params.get(name, float("nan"))) for t in rows]


# fANOVA fits a random forest: seeded, the HTML's figure and the PNG show the same numbers on every run.
IMPORTANCE_SEED = 0


def importance_evaluator() -> Any:
    """The importance evaluator of every report figure: fANOVA (Optuna's default is PED-ANOVA, which
    looks only at the top trials), seeded."""
    from optuna.importance import FanovaImportanceEvaluator

    return FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)


def importance_params(study: StudyData) -> tuple[list[str], str]:
    """The parameters whose importance can be computed (those that varied), or why there are none."""
    if len(study.complete) < 2:
        return (
            [],
            f"parameter importances need at least 2 complete trials; this study has {len(study.complete)}",
        )
    varied = [p for p in study.space if len({repr(t.params.get(p)) for t in study.complete}) > 1]
    if not varied:
        return [], "every complete trial used the same parameters: nothing to attribute the value to"
    return varied, ""


def importances(study: StudyData) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances of the parameters for the value; (None, why) when they cannot be computed."""
    import optuna

    varied, why = importance_params(study)
    if not varied:
        return None, why
    try:
        loaded = snapshot(study)
        evaluator = importance_evaluator()
        found = optuna.importance.get_param_importances(loaded, evaluator=evaluator, params=varied)
        return {name: float(value) for name, value in found.items()}, ""
    except (ValueError, RuntimeError) as exc:
        return None, f"parameter importances could not be computed: {str(exc).splitlines()[0]}"


def scored_mean(values: dict[str, float | None]) -> float | None:
    """The challenge score from per-class IoU: the mean over the terrain classes present (not background)."""
    present = [float(v) for k, v in values.items() if k in SCORED_CLASSES and v is not None]
    return sum(present) / len(present) if present else None


def per_class(study: StudyData) -> tuple[dict[str, float | None] | None, str]:
    best = study.best
    if best is None:
        return None, "no complete trial yet"
    values = per_class_iou(best.attrs)
    if not isinstance(values, dict):
        why = {
            "analytic": "the analytic objective does not segment",
            "replay": "the replayed curves hold the mean IoU only",
        }.get(study.kind, "not recorded")
        return None, f"trial {best.number} has no per-class IoU ({why})"
    return {name: values.get(name) for name in CLASS_NAMES}, ""
