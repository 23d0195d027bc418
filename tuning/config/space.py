"""The ONE search-space definition: parsed from the spec, turned into every engine's form.

A space is a mapping `name -> Param`. Bounds are inclusive everywhere. The same object becomes Optuna
distributions, a finite grid, Keras Tuner HyperParameters and a Ray Tune search space, so every engine
searches exactly the same set of configurations.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from marstune.tuning.constants import MODEL_KEYS
from marstune.tuning.errors import SpecError

# What a trial may tune. Model keys go to build_unet; training keys to the optimizer and the data pipeline.
TRAIN_KEYS = ("learning_rate", "batch_size")
# The loss and its class weighting (models/losses.py): searchable like the model; the spec's `loss`
# section gives the values when a study does not search them.
LOSS_KEYS = ("loss", "class_weight_exponent", "focal_gamma")
TUNABLE = MODEL_KEYS + TRAIN_KEYS + LOSS_KEYS
# The build_loss argument each loss key sets; models/settings.LOSS_PARAMETERS says which loss reads it.
_LOSS_ARGUMENT = {"class_weight_exponent": "class_weights", "focal_gamma": "focal_gamma"}
_ENUMERABLE = 100_000  # spaces up to this size are counted point by point (a larger one is never reached)

Scalar = int | float | str | bool


@dataclass(frozen=True)
class Categorical:
    choices: tuple[Scalar, ...]

    def contains(self, value: Any) -> bool:
        return value in self.choices

    def grid(self) -> tuple[Scalar, ...]:
        return self.choices

    def extremes(self) -> tuple[Scalar, ...]:
        return self.choices


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    step: int = 1
    log: bool = False

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, int) and self.low <= value <= self.high and (value - self.low) % self.step == 0
        )

    def grid(self) -> tuple[int, ...]:
        return tuple(range(self.low, self.high + 1, self.step))

    def extremes(self) -> tuple[int, ...]:
        return (self.low, self.high)


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False
    values: tuple[float, ...] | None = None  # `grid:` points; floats have no natural grid

    def contains(self, value: Any) -> bool:
        return isinstance(value, int | float) and self.low <= value <= self.high

    def grid(self) -> tuple[float, ...]:
        if self.values is None:
            raise SpecError("a float parameter needs `grid:` values for the grid sampler")
        return self.values

    def extremes(self) -> tuple[float, ...]:
        return (self.low, self.high)


Param = Categorical | Int | Float


def _fail(where: str, message: str) -> SpecError:
    return SpecError(f"{message} ({where})")


def _number(raw: Mapping[str, Any], key: str, where: str, kind: type) -> Any:
    value = raw.get(key)
    ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
    # inf and nan are floats, but no sampler can draw from an unbounded range (Optuna overflows).
    if not ok or isinstance(value, bool) or (ok and not math.isfinite(value)):
        raise _fail(
            f"{where}.{key}",
            f"`{key}` must be a{'n int' if kind is int else ' finite number'}, got {value!r}",
        )
    return float(value) if kind is float else value


def parse_param(name: str, raw: Any, where: str) -> Param:
    """Parse one `{type: ..., ...}` entry; every rule violation names the field and the fix."""
    if not isinstance(raw, Mapping):
        raise _fail(where, f"`{name}` must be a mapping like {{type: int, low: 2, high: 5}}, got {raw!r}")
    kind = raw.get("type")
    allowed = {
        "categorical": {"type", "choices"},
        "int": {"type", "low", "high", "step", "log"},
        "float": {"type", "low", "high", "log", "grid"},
    }
    if kind not in allowed:
        raise _fail(f"{where}.type", f"`type` must be one of categorical, int, float; got {kind!r}")
    unknown = sorted(set(raw) - allowed[kind])
    if unknown:
        raise _fail(
            where, f"unknown key(s) {unknown} for a {kind} parameter; allowed: {sorted(allowed[kind])}"
        )
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise _fail(f"{where}.choices", f"`choices` must be a non-empty list, got {choices!r}")
        if len(set(map(repr, choices))) != len(choices):
            raise _fail(f"{where}.choices", f"`choices` has duplicates: {choices}")
        if not all(isinstance(c, int | float | str | bool) for c in choices):
            raise _fail(f"{where}.choices", f"`choices` must be numbers or strings, got {choices!r}")
        return Categorical(tuple(choices))
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise _fail(f"{where}.log", f"`log` must be true or false, got {log!r}")
    number = int if kind == "int" else float
    low, high = _number(raw, "low", where, number), _number(raw, "high", where, number)
    if low > high:
        raise _fail(where, f"`low` ({low}) must be <= `high` ({high})")
    if log and low <= 0:
        raise _fail(f"{where}.low", f"a log-scaled range needs `low` > 0, got {low}")
    if kind == "int":
        step = raw.get("step", 1)
        if not isinstance(step, int) or isinstance(step, bool) or step < 1:
            raise _fail(f"{where}.step", f"`step` must be a positive int, got {step!r}")
        return Int(low, high, step, log)
    grid = raw.get("grid")
    if grid is not None:
        numbers = all(isinstance(g, int | float) and not isinstance(g, bool) for g in grid or ())
        if not isinstance(grid, list) or not grid or not numbers:
            raise _fail(f"{where}.grid", f"`grid` must be a non-empty list of numbers, got {grid!r}")
        outside = [g for g in grid if not low <= g <= high]
        if outside:
            raise _fail(f"{where}.grid", f"`grid` values {outside} lie outside [{low}, {high}]")
        grid = tuple(float(g) for g in grid)
    return Float(low, high, log, grid)


@dataclass(frozen=True)
class Space:
    params: Mapping[str, Param]

    def __iter__(self) -> Iterator[str]:
        return iter(self.params)

    def contains(self, config: Mapping[str, Any]) -> bool:
        """True if every searched parameter of `config` lies in the space (bounds inclusive)."""
        return all(name in config and p.contains(config[name]) for name, p in self.params.items())

    def grid(self) -> list[dict[str, Scalar]]:
        """Every grid point once, in a stable order (ints and categoricals enumerate; floats use `grid:`)."""
        return _distinct_points(list(self.params), self._grid_axes())

    def grid_size(self) -> int:
        return len(self.grid())

    def product_size(self) -> int:
        """The points of the whole product of the grid axes, repeats included: what a grid that does not
        know `trained_as` (Keras Tuner's) walks."""
        return math.prod(len(axis) for axis in self._grid_axes())

    def distinct_configs(self) -> int | None:
        """How many different configurations a sampler can draw; None when a float range makes it endless."""
        found = [_values(p) for p in self.params.values()]
        axes = [a for a in found if a is not None]
        if len(axes) < len(found):
            return None
        count = math.prod(len(a) for a in axes)
        if "loss" not in self.params or count > _ENUMERABLE:
            return count
        return len(_distinct_points(list(self.params), axes))

    def _grid_axes(self) -> list[tuple[Scalar, ...]]:
        axes = []
        for name, param in self.params.items():
            try:
                axes.append(param.grid())
            except SpecError as exc:
                raise SpecError(f"{exc} (space.{name})") from None
        return axes

    def to_optuna(self) -> dict[str, Any]:
        """Optuna distributions, for `trial._suggest`-free sampling via `study.ask(fixed_distributions)`."""
        import optuna.distributions as d

        out: dict[str, Any] = {}
        for name, p in self.params.items():
            if isinstance(p, Categorical):
                out[name] = d.CategoricalDistribution(p.choices)
            elif isinstance(p, Int):
                out[name] = d.IntDistribution(p.low, p.high, log=p.log, step=p.step)
            else:
                out[name] = d.FloatDistribution(p.low, p.high, log=p.log)
        return out


def trained_as(point: Mapping[str, Any]) -> dict[str, Any]:
    """What a configuration trains: its keys less a loss key its loss does not read, so crossentropy
    with focal_gamma 1 and with focal_gamma 3 are one configuration (the grid runs it once; a sampler's
    second draw of it is a duplicate)."""
    from marstune.models.settings import LOSS_PARAMETERS  # no Keras: the names only

    reads = LOSS_PARAMETERS.get(point["loss"], ()) if isinstance(point.get("loss"), str) else None
    if reads is None:
        return dict(point)
    return {k: v for k, v in point.items() if k not in _LOSS_ARGUMENT or _LOSS_ARGUMENT[k] in reads}


def _distinct_points(names: list[str], axes: list[tuple[Scalar, ...]]) -> list[dict[str, Scalar]]:
    """The product of the axes, in order, keeping the first point of each `trained_as`: crossentropy x
    focal_gamma [1, 3] is one configuration."""
    points: list[dict[str, Scalar]] = []
    seen: set[tuple[tuple[str, Scalar], ...]] = set()
    for values in itertools.product(*axes):
        point = dict(zip(names, values, strict=True))
        trains = tuple(trained_as(point).items())
        if trains not in seen:
            seen.add(trains)
            points.append(point)
    return points


def _values(param: Param) -> tuple[Scalar, ...] | None:
    """The values of one parameter; None for a float range (endless), one value when low == high."""
    if isinstance(param, Float):
        return (param.low,) if param.low == param.high else None
    return param.grid()


def parse_space(raw: Any, where: str = "space") -> Space:
    if not isinstance(raw, Mapping) or not raw:
        raise _fail(where, f"`space` must be a non-empty mapping of parameter -> definition, got {raw!r}")
    unknown = sorted(set(raw) - set(TUNABLE))
    if unknown:
        raise _fail(where, f"unknown parameter(s) {unknown}; tunable parameters are {list(TUNABLE)}")
    return Space({name: parse_param(name, raw[name], f"{where}.{name}") for name in raw})
