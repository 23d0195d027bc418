"""The tabular benchmark's grid (bench/curves/grid.yaml): its configurations, their ids, the ones left out
on a CPU, and the order the recorder trains them in. Shared by `python -m bench record` and the tests."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import REPO

GRID_FILE = REPO / "bench" / "curves" / "grid.yaml"
RUNS_FILE = REPO / "bench" / "curves" / "runs.csv"
# runs.csv's own columns, before one column per hyperparameter.
RUN_COLUMNS = ("config_id", "replicate", "epoch", "val_miou", "test_miou", "cpu_seconds", "wall_seconds")

Config = dict[str, Any]


@dataclass(frozen=True)
class Grid:
    values: dict[str, list[Any]]  # parameter -> its grid values, in the file's order
    fixed: dict[str, Any]  # settings every configuration trains with (the loss keys' grid values)
    replicates: int
    epochs: int
    synthetic_items: int
    val_fraction: float
    test_items: int
    test_seed: int
    cpu_left_out: list[dict[str, Any]]
    cheap_first: float  # configurations of relative_cost <= this are recorded before the others (0: no band)

    @property
    def params(self) -> list[str]:
        return list(self.values)

    def configurations(self) -> list[tuple[str, Config]]:
        """(config_id, configuration) for the whole product, in product order; ids c000, c001, ..."""
        product = itertools.product(*self.values.values())
        return [(f"c{k:03d}", dict(zip(self.values, point, strict=True))) for k, point in enumerate(product)]

    def left_out_on_cpu(self, config: Mapping[str, Any]) -> bool:
        return any(all(config.get(k) == v for k, v in rule.items()) for rule in self.cpu_left_out)


def load_grid(path: Path = GRID_FILE) -> Grid:
    import yaml

    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("grid"), dict):
        raise ValueError(f"{path}: expected a mapping with a `grid:` section of parameter -> values")
    values = {str(k): list(v) for k, v in doc["grid"].items()}
    if any(not v for v in values.values()):
        raise ValueError(f"{path}: every grid parameter needs at least one value")
    data = doc["data"]
    return Grid(
        values=values,
        fixed=dict(doc.get("fixed") or {}),
        replicates=int(doc["replicates"]),
        epochs=int(doc["epochs"]),
        synthetic_items=int(data["synthetic_items"]),
        val_fraction=float(data["val_fraction"]),
        test_items=int(data["test_items"]),
        test_seed=int(data["test_seed"]),
        cpu_left_out=[dict(r) for r in doc.get("cpu_left_out") or []],
        cheap_first=float(doc.get("cheap_first") or 0),
    )


def relative_cost(config: Mapping[str, Any]) -> float:
    """A convolution's work grows with filters^2 x kernel^2, and each level adds about as much as the
    first (twice the filters on a quarter of the pixels): an ordering of costs, not seconds."""
    return float(config["base_filters"] ** 2 * config["kernel"] ** 2 * config["levels"])


def _coordinates(grid: Grid, config: Mapping[str, Any]) -> list[float]:
    """Each parameter in [0, 1]: an ordered one by its position among the grid's values, the loss and
    other string choices one-hot (every two losses are equally far apart)."""
    out: list[float] = []
    for name, values in grid.values.items():
        if len(values) == 1:
            continue
        if all(isinstance(v, (int, float)) for v in values):
            out.append(values.index(config[name]) / (len(values) - 1))
        else:
            out += [(1.0 if config[name] == v else 0.0) / 2**0.5 for v in values]
    return out


def baseline_config(grid: Grid) -> Config:
    """The seed's baseline with the seed's loss: the configuration every study trains first."""
    from marstune.tuning.config.spec import DEFAULTS

    seed = {**DEFAULTS["baseline"], "loss": DEFAULTS["loss"]["name"]}
    return {name: seed[name] for name in grid.params}


def space_filling_order(grid: Grid, configs: Sequence[tuple[str, Config]]) -> list[tuple[str, Config]]:
    """Greedy maximin: first the baseline (every study trains it; else the configuration nearest the
    grid's centre), then each time the one farthest from all chosen so far (ties: the cheaper first),
    taken from the configurations of relative_cost <= grid.cheap_first while any is left, then from the
    rest. A recording cut short still spreads over the grid (its cheap part first)."""
    coords = {cid: _coordinates(grid, c) for cid, c in configs}
    centre = [sum(col) / len(col) for col in zip(*coords.values(), strict=True)]

    def dist(a: list[float], b: list[float]) -> float:
        return sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) ** 0.5

    remaining = list(configs)
    base = baseline_config(grid)
    first = min(
        remaining,
        key=lambda item: (item[1] != base, dist(coords[item[0]], centre), relative_cost(item[1]), item[0]),
    )
    chosen = [first]
    remaining.remove(first)
    nearest = {cid: dist(coords[cid], coords[first[0]]) for cid, _ in remaining}
    while remaining:
        cheap = [item for item in remaining if relative_cost(item[1]) <= grid.cheap_first]
        pick = max(
            cheap or remaining,
            key=lambda item: (round(nearest[item[0]], 9), -relative_cost(item[1]), item[0]),
        )
        chosen.append(pick)
        remaining.remove(pick)
        for cid, _ in remaining:
            nearest[cid] = min(nearest[cid], dist(coords[cid], coords[pick[0]]))
    return chosen
