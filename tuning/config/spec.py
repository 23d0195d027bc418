"""Study specs: one configuration drives a run (nanoGPT style).

Defaults live here, each with the reason for it. A spec file (YAML, `yaml.safe_load` only) overrides
them, then `--set key=value` flags override the file. Unknown keys are errors. The resolved spec is
printed at the start of a run and stored on the study, so any trial can be reproduced from the database.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, ValidationInfo, field_validator

from marstune.models.settings import LOSS_NAMES
from marstune.tuning.config.space import (
    LOSS_KEYS,
    MODEL_KEYS,
    TRAIN_KEYS,
    TUNABLE,
    Space,
    parse_space,
    trained_as,
)
from marstune.tuning.errors import SpecError

DEFAULT_SPEC_PATH = Path("studies/unet.yaml")

DEFAULTS: dict[str, Any] = {
    "study": "unet-mars",
    # The seed report's space; filters double per level (16 -> 16,32,64,128).
    "space": {
        "base_filters": {"type": "categorical", "choices": [8, 16, 32]},
        "levels": {"type": "int", "low": 2, "high": 5},
        "kernel": {"type": "categorical", "choices": [3, 5]},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5, "grid": [0.0, 0.2, 0.4]},
        "activation": {"type": "categorical", "choices": ["relu", "elu", "gelu", "swish"]},
        # The loss is searched too: big rock is 0.13% of the pixels, and the score averages it with the
        # others, so a loss that ignores it caps the score (models/losses.py, bench/losses.py).
        "loss": {"type": "categorical", "choices": list(LOSS_NAMES)},
        "class_weight_exponent": {"type": "float", "low": 0.0, "high": 1.0, "grid": [0.5]},
        "focal_gamma": {"type": "float", "low": 0.5, "high": 4.0, "grid": [2.0]},
    },
    # The seed report's best; enqueued first in every new study so each study is compared with it. Its
    # loss keys come from the `loss` section (the seed's cross-entropy unless the spec says otherwise).
    "baseline": {
        "base_filters": 16,
        "levels": 4,
        "kernel": 3,
        "dropout": 0.2,
        "activation": "relu",
    },
    "train": {
        "epochs": 10,  # the U-Net plateaus after ~10 epochs on the challenge set; pruning cuts bad ones
        "batch_size": 32,  # fits an 8 GB GPU for every config in the space; fast on CPU too
        "optimizer": "adam",
        "learning_rate": 1.0e-3,  # Adam's default; the seed report used it
        "patience": 3,  # early stopping on val mIoU: 3 flat epochs rarely recover
        "val_fraction": 0.15,  # ~390 validation images on the real set: a stable mIoU estimate
        "seed": 0,
        "augment": True,  # flips along x and y, as the seed report
        "max_items": None,  # use only the first N pairs: cheap trials and tests, same code path
        "threads": 0,  # TF intra-op threads; 0 = all cores divided by local workers
        "mixed_precision": "auto",  # auto = on when a GPU is present (fp16 halves memory, 2-3x speed)
    },
    "data": {
        "path": None,  # an .npz in the challenge layout; None = built-in synthetic terrain
        "clean": True,  # drop the ~4% contamination (unrelated pictures sharing one mask)
        "synthetic_items": 600,  # synthetic pairs when no path is given: ~10 s an epoch on 2 cores
    },
    "search": {
        "engine": "optuna",
        "sampler": "tpe",  # Bayesian by default; needs ~10 trials before it beats random
        "pruner": "median",  # stop trials whose mIoU is below the median at the same epoch
        "trials": 20,  # target number of finished (complete or pruned) trials
        "timeout": None,  # seconds; None = until the target
        # A worker process is replaced by a fresh one after this many trials: TensorFlow keeps memory of
        # every fitted model (~40-60 MB), which would add up to gigabytes over a long study. 0 = never.
        "trials_per_process": 5,
        # Completed trials whose best-epoch model is kept (Optuna's artifact store), best first; a kept
        # model falling out of the top K is deleted. 0 = keep none. The models feed export-best,
        # `tune predict --study`, the report's examples and `tune pix2pix --warm-start`.
        "keep_models": 5,
        "artifacts": None,  # kept models' folder; None = studies/<study>/artifacts; clusters: a shared path
    },
    # The loss when a study does not search it: the seed's cross-entropy, so studies stay comparable.
    "loss": {
        "name": "crossentropy",  # crossentropy, weighted_crossentropy, focal or dice_crossentropy
        # Class weights = training-set frequency ** -exponent (background ignored, capped at 20x):
        # 0 = unweighted, 0.5 = inverse square root, 1 = inverse frequency.
        "class_weight_exponent": 0.5,
        "focal_gamma": 2.0,  # focal only; Lin et al.'s best value
    },
    "objective": {
        # unet = train the model; analytic = a closed-form stand-in for service tests; replay = the
        # recorded learning curves of this space, replayed by a fitted surrogate (bench/curves/)
        "kind": "unet",
        # replay only: the fitted surrogate's JSON, or a recorded runs table (.csv, bench/curves/runs.csv:
        # each trial replays one recorded run of its configuration, no model in between)
        "surrogate": "bench/curves/surrogate.json",
        "sleep": 0.0,  # analytic only: seconds per epoch, to mimic training time
        "fail_trials": [],  # analytic only: trial numbers whose first attempt raises (fault injection)
        "fail_every_attempt": False,  # analytic only: the retries of fail_trials raise too
        # analytic only: 0 = the smooth closed form; > 0 = a harder, seeded task for bench/ (per-config
        # offsets of ~2x this, per-config learning speeds, per-epoch noise of this standard deviation)
        "noise": 0.0,
    },
}


_NUMBERS = (int, float, int | None, float | None)


class _Section(BaseModel):
    # No inf or nan in any setting: an infinite gamma or rate passes `ge=0` and fails every trial later.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, value: Any, info: ValidationInfo) -> Any:
        """`focal_gamma: true` is a slip, not 1.0 (pydantic's lax mode would take it)."""
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and field.annotation in _NUMBERS:
            raise ValueError("must be a number, not true/false")
        return value


class TrainSpec(_Section):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"]
    learning_rate: float = Field(gt=0)
    patience: int = Field(ge=0)
    val_fraction: float = Field(gt=0, lt=1)
    seed: int = Field(ge=0, le=2**31 - 1)  # what every seeded library (numpy, Optuna's samplers) accepts
    augment: bool
    max_items: int | None = Field(ge=4)
    threads: int = Field(ge=0)
    mixed_precision: Literal["auto", "on", "off"]


class DataSpec(_Section):
    path: str | None
    clean: bool
    synthetic_items: int = Field(ge=8)


class SearchSpec(_Section):
    engine: str
    sampler: str
    pruner: str
    trials: int = Field(ge=1)
    timeout: float | None = Field(gt=0)
    trials_per_process: int = Field(ge=0)
    keep_models: int = Field(ge=0)
    artifacts: str | None


class LossSpec(_Section):
    name: str
    class_weight_exponent: float = Field(ge=0)
    focal_gamma: float = Field(ge=0)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        from marstune.models.settings import LOSS_NAMES  # the one list of loss names

        if name not in LOSS_NAMES:
            raise ValueError(f"must be one of {', '.join(LOSS_NAMES)}")
        return name

    def as_params(self) -> dict[str, Any]:
        """The loss keys of a trial's configuration (what the space calls them)."""
        return {"loss": self.name, **self.model_dump(exclude={"name"})}


class ObjectiveSpec(_Section):
    kind: Literal["unet", "analytic", "replay"]
    surrogate: str
    sleep: float = Field(ge=0)
    fail_trials: list[Annotated[StrictInt, Field(ge=0)]]  # strict: `[true]` is a slip, not trial 1
    fail_every_attempt: bool
    noise: float = Field(ge=0, le=0.2)


@dataclass(frozen=True)
class Spec:
    """A resolved, validated study spec. `raw` is the plain dict that is logged and stored."""

    study: str
    space: Space
    baseline: dict[str, Any]
    train: TrainSpec
    data: DataSpec
    search: SearchSpec
    objective: ObjectiveSpec
    raw: dict[str, Any]
    loss: LossSpec = LossSpec.model_validate(DEFAULTS["loss"])
    # The spec file it was read from: not part of the spec (a copy elsewhere makes the same study), only
    # repeated in the commands that hints suggest.
    file: str | None = None

    def config_for(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's full configuration: the baseline with the searched params on top."""
        return {**self.baseline, **params}

    def to_yaml(self) -> str:
        return spec_yaml(self.raw)


def spec_yaml(raw: Mapping[str, Any]) -> str:
    """A resolved spec as people read it (`tune run --verbose`, `tune status --spec`)."""
    return yaml.safe_dump(dict(raw), sort_keys=False, default_flow_style=None, width=100)


def _merge(base: dict[str, Any], override: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Deep-merge `override` into a copy of `base`; keys absent from `base` are errors."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key not in base:
            raise SpecError(f"unknown key `{key}` ({where}); valid keys: {sorted(base)}")
        if key in ("space", "baseline") or not isinstance(base[key], dict):
            out[key] = copy.deepcopy(value)  # replaced whole: a space is a definition, not a patch
        elif not isinstance(value, Mapping):
            raise SpecError(f"`{key}` must be a mapping, got {value!r} ({where})")
        else:
            out[key] = _merge(base[key], value, f"{where}, {key}")
    return out


def yaml_problem(exc: yaml.YAMLError) -> str:
    """' at line L, column C: <problem>' of a YAML error, for one-line messages."""
    mark = getattr(exc, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    # a !!python/... tag is refused by design: say so, and only then
    tags = "; only plain YAML is read (no !!tags)" if "constructor for the tag" in problem else ""
    return f"{at}: {problem}{tags}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no tags that run code) that refuses a key given twice in one mapping: by
    default the last would silently win, so a second `loss:` section would replace the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` merges a mapping in; its keys may be overridden on purpose
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"`{key}` is given twice; keep one", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads `1e-4` as the string "1e-4": a float needs a dot there (`1.0e-4`). Learning rates
# are written 1e-4 everywhere, so an exponent without a dot is a float here too, as in YAML 1.2.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def safe_load_unique(text: str) -> object:
    """yaml.safe_load, with duplicate keys as errors: what reads every spec and exported config."""
    loader = _UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_spec_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read spec file {path}: {exc.strerror}; pass --spec PATH") from None
    except UnicodeDecodeError:
        raise SpecError(
            f"spec file {path} is not a text (UTF-8) YAML file; pass --spec PATH of the study spec YAML"
        ) from None
    try:
        raw = safe_load_unique(text)
    except yaml.YAMLError as exc:
        raise SpecError(
            f"{path}: not valid YAML{yaml_problem(exc)}; fix the file, or pass --spec PATH"
        ) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec must be a mapping of sections, got {type(raw).__name__}")
    return raw


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """`["train.epochs=3", "search.sampler=random"]` -> nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set expects key=value (e.g. --set train.epochs=3), got {item!r}")
        try:
            value = safe_load_unique(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise SpecError(f"--set {item!r}: the value is not plain YAML{yaml_problem(exc)}") from None
        _nest(key.strip(), value, into=out, item=item)
    return out


def _apply_set(raw: dict[str, Any], item: str) -> dict[str, Any]:
    """One `--set`: `space.levels.high=9` changes that bound of the space in hand, `space.levels={...}`
    replaces that parameter's definition, `space={...}` (the section itself) replaces the whole space,
    like a spec file's `space:` does."""
    nested = parse_set([item])
    section, _, inside = item.partition("=")[0].strip().partition(".")
    if section == "space" and inside and "." not in inside and isinstance(raw.get(section), dict):
        return {**raw, section: {**raw[section], inside: nested[section][inside]}}
    if section in ("space", "baseline") and inside and isinstance(raw.get(section), dict):
        return {**raw, section: _patched(raw[section], nested[section])}
    return _merge(raw, nested, "--set")


def _patched(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `patch` merged in, new keys allowed (a new parameter); _validate checks the result."""
    out = copy.deepcopy(dict(base))
    for key, value in patch.items():
        both = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = _patched(out[key], value) if both else copy.deepcopy(value)
    return out


def _nest(dotted: str, value: Any, into: dict[str, Any] | None = None, item: str = "") -> dict[str, Any]:
    """Place `value` at `a.b.c` inside `into` (a new dict by default)."""
    out = {} if into is None else into
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpecError(f"--set {item or dotted!r} conflicts with another value for `{part}`")
    node[parts[-1]] = value
    return out


def _validate(raw: dict[str, Any], source: str) -> Spec:
    study = raw["study"]
    check_study_name(study, f"{source}, study")
    space = parse_space(raw["space"], f"{source}, space")
    sections = {}
    for name, model in (
        ("train", TrainSpec),
        ("data", DataSpec),
        ("search", SearchSpec),
        ("objective", ObjectiveSpec),
        ("loss", LossSpec),
    ):
        try:
            sections[name] = model.model_validate(raw[name])
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in (name, *err["loc"]))
            message = err["msg"].removeprefix("Value error, ")
            raise SpecError(f"{field}: {message}, got {err.get('input')!r} ({source})") from None
    baseline = raw["baseline"]
    if not isinstance(baseline, dict):
        raise SpecError(f"`baseline` must be a mapping of parameter -> value ({source}, baseline)")
    missing = [k for k in MODEL_KEYS if k not in baseline]
    unknown = sorted(set(baseline) - set(TUNABLE))
    if missing or unknown:
        raise SpecError(
            f"`baseline` must give {list(MODEL_KEYS)}; missing {missing}, unknown {unknown} ({source})"
        )
    # The baseline is the seed's model with the spec's loss unless it names its own loss keys.
    # So is a searched learning rate or batch size: the train section's, not a random draw.
    loss = sections["loss"].as_params()
    check_one_loss(space, loss, baseline, source)
    train = {k: getattr(sections["train"], k) for k in TRAIN_KEYS if k in space.params}
    full = {**loss, **train, **baseline}
    check_training_values(space, full, f"{source}, space")
    outside = [k for k, p in space.params.items() if k in full and not p.contains(full[k])]
    if outside:
        given = [_set_by(k, baseline) for k in outside]
        raise SpecError(
            f"baseline values for {outside} lie outside the space ({source}); set {', '.join(given)} "
            "inside the space, or widen the space"
        )
    check_buildable(space, baseline, f"{source}, space")
    try:
        from marstune.models.unet import ModelConfigError, validate_config

        validate_config(baseline)
    except ModelConfigError as exc:
        raise SpecError(f"{exc} ({source}, baseline)") from None
    check_reachable(space, sections["search"], source)
    return Spec(study=study, space=space, baseline=full, raw=raw, **sections)


# ASCII only and short: the name becomes file names (studies/<name>.best.yaml, studies/<name>/...).
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_study_name(name: Any, where: str = "--study") -> str:
    if not (isinstance(name, str) and _STUDY_NAME.fullmatch(name)):
        shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:57] + "..."
        raise SpecError(
            f"study name must be 1-128 ASCII letters, digits, '-', '_' or '.', starting with a letter or "
            f"digit, got {shown} ({where})"
        )
    return name


def check_reachable(space: Space, search: SearchSpec, source: str) -> None:
    """A target above the number of configurations a small all-discrete space holds is never reached: the
    sampler would only propose repeats until the study stops (the grid sampler's target is the grid)."""
    distinct = space.distinct_configs()
    if search.sampler != "grid" and distinct is not None and search.trials > distinct:
        raise SpecError(
            f"search.trials {search.trials} is more than the {distinct} configuration(s) the space holds "
            f"({source}); pass --trials {distinct} or fewer, or widen the space"
        )


def _set_by(key: str, baseline: Mapping[str, Any]) -> str:
    """Where the baseline's value of `key` comes from: the baseline itself, or the loss/train section."""
    if key in baseline:
        return f"baseline.{key}"
    if key == "loss":
        return "loss.name"
    return f"loss.{key}" if key in LOSS_KEYS else f"train.{key}"


def check_one_loss(space: Space, loss: Mapping[str, Any], baseline: Mapping[str, Any], source: str) -> None:
    """A loss key the baseline names with another value than the `loss` section would silently override
    the section: in every trial when the space does not search it, in the baseline trial when the
    section was changed from its default."""
    default = LossSpec.model_validate(DEFAULTS["loss"]).as_params()
    clash = [
        k
        for k, v in loss.items()
        if k in baseline and baseline[k] != v and (v != default[k] or k not in space.params)
    ]
    if clash:
        names = {k: f"loss.{'name' if k == 'loss' else k}" for k in clash}
        said = ", ".join(f"{names[k]} = {loss[k]!r} but baseline.{k} = {baseline[k]!r}" for k in clash)
        raise SpecError(f"{said} ({source}); set both to the same value, or drop it from the baseline")
    if "loss" in space.params:
        return
    # One loss trains every trial: a key it never reads would only repeat the same model (trained_as).
    fixed = str(baseline.get("loss", loss["loss"]))
    for key in space.params:
        if key not in trained_as({"loss": fixed, key: 0}):
            readers = [name for name in LOSS_NAMES if key in trained_as({"loss": name, key: 0})]
            raise SpecError(
                f"space.{key} is searched but every trial trains with loss {fixed!r}, which never reads it "
                f"({source}); search space.loss too, set loss.name to one of {', '.join(readers)}, "
                f"or drop space.{key}"
            )


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _at_least(low: float, strict: bool = False) -> Callable[[object], bool]:
    return lambda v: _finite(v) and (v > low if strict else v >= low)  # type: ignore[operator]


# What a trial's loss and training keys may hold: checked on every choice and bound of the space and on
# the baseline, so a bad value is one line before the study exists, not ten failed trials.
_VALUE_RULES: dict[str, tuple[str, Callable[[object], bool]]] = {
    "loss": (f"one of {', '.join(LOSS_NAMES)}", lambda v: v in LOSS_NAMES),
    "class_weight_exponent": ("a finite number >= 0", _at_least(0)),
    "focal_gamma": ("a finite number >= 0", _at_least(0)),
    "learning_rate": ("a finite number > 0", _at_least(0, strict=True)),
    "batch_size": (
        "a whole number >= 1",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    ),
}


def check_training_values(space: Space, baseline: Mapping[str, Any], where: str) -> None:
    """Every value the space can give a loss or training key, and the baseline's, is one it takes."""
    for name, param in space.params.items():
        if name in _VALUE_RULES:
            what, ok = _VALUE_RULES[name]
            bad = [v for v in param.extremes() if not ok(v)]
            if bad:
                raise SpecError(f"`{name}` values must be {what}, got {bad} ({where}.{name})")
    for name, value in baseline.items():
        if name in _VALUE_RULES and not _VALUE_RULES[name][1](value):
            raise SpecError(f"baseline `{name}` must be {_VALUE_RULES[name][0]}, got {value!r} ({where})")


def check_buildable(space: Space, baseline: Mapping[str, Any], where: str) -> None:
    """Refuse a space holding values the U-Net cannot build (levels above what 64x128 allows, an
    unknown activation): every extreme of each model parameter is tried on the baseline, without Keras."""
    from marstune.models.unet import ModelConfigError, validate_config

    # Each parameter on the default baseline (a valid model), so a message names the range at fault;
    # then the spec's own baseline.
    fallback = {k: v for k, v in DEFAULTS["baseline"].items() if k in MODEL_KEYS}
    for name, param in space.params.items():
        if name not in MODEL_KEYS:
            continue
        for value in param.extremes():
            try:
                validate_config({**fallback, name: value})
            except ModelConfigError as exc:
                raise SpecError(f"{exc} ({where}.{name}); narrow the range") from None
    try:
        validate_config({**fallback, **{k: v for k, v in baseline.items() if k in MODEL_KEYS}})
    except ModelConfigError as exc:
        raise SpecError(f"{exc} (baseline); choose a baseline the U-Net can build") from None


def _flag_of(dotted: str) -> str:
    """The `tune run` flag that sets a dotted key, as typed: search.keep_models -> --keep-models."""
    return "--data" if dotted == "data.path" else f"--{dotted.rsplit('.', 1)[-1].replace('_', '-')}"


def load_spec(
    path: Path | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> Spec:
    """Defaults <- spec file <- `--set` overrides <- dedicated CLI flags (`--epochs` etc., dotted keys)."""
    source = "defaults"
    raw = copy.deepcopy(DEFAULTS)
    spec_file = str(path) if path is not None else None  # what hints repeat: the default needs no flag
    if path is None and DEFAULT_SPEC_PATH.exists():
        path = DEFAULT_SPEC_PATH
    if path is not None:
        source = str(path)
        raw = _merge(raw, read_spec_file(Path(path)), source)
    for item in overrides:
        raw = _apply_set(raw, item)
    for dotted, value in (flags or {}).items():
        if value is not None:
            raw = _merge(raw, _nest(dotted, value), _flag_of(dotted))
    # An error names where the bad value came from: the file, and the --set keys and flags on top of it.
    given = [f"--set {item.partition('=')[0].strip()}" for item in overrides]
    given += [_flag_of(dotted) for dotted, value in (flags or {}).items() if value is not None]
    source = f"{source} with {', '.join(given)}" if given else source
    if raw["objective"].get("kind") == "replay" and isinstance(raw["objective"].get("surrogate"), str):
        # Resolved here, once: Ray trials, workers and `export-best --recheck` run in other folders.
        raw["objective"]["surrogate"] = str(Path(raw["objective"]["surrogate"]).absolute())
    return dataclasses.replace(_validate(raw, source), file=spec_file)


def spec_from_stored(raw: Mapping[str, Any]) -> Spec:
    """Rebuild a spec from a study's stored attributes (what `tune worker` uses: no spec file needed)."""
    return _validate(_merge(copy.deepcopy(DEFAULTS), raw, "stored spec"), "stored spec")


def study_spec(name: str, raw: Mapping[str, Any] | None, data_path: str | None = None) -> Spec:
    """The spec an Optuna-engine study was made with (its stored attribute), for a `tune worker`.

    `data_path` points this worker at its own copy of the data (its fingerprint is checked on joining).
    """
    from marstune.tuning.errors import StorageError

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
    return spec_from_stored(raw)
