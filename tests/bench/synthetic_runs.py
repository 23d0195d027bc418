"""A small recorded table in runs.csv's layout with a known truth: the tests of the tabular task read it.

Every configuration of a small grid has a true final level (from its parameters), each replicate its
own offset and epoch noise; seconds grow with the model. The test mIoU follows the validation curve with
its own noise, so a run's best validation epoch is not always its best test epoch.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Any

import numpy as np

from bench.grid import RUN_COLUMNS

GRID: dict[str, list[Any]] = {
    "loss": ["crossentropy", "focal"],
    "base_filters": [8, 16, 32],
    "levels": [2, 4],
    "kernel": [3],
    "dropout": [0.0, 0.2],
    "activation": ["relu"],
}


def level(p: dict[str, Any]) -> float:
    return (
        0.25
        + 0.04 * np.log2(p["base_filters"] / 8)
        + 0.03 * (p["levels"] == 4)
        + 0.02 * (p["loss"] == "focal")
        + 0.01 * (p["kernel"] == 5)
        - 0.05 * p["dropout"]
    )


def write_runs(
    path: Path,
    replicates: int = 3,
    epochs: int = 12,
    seed: int = 0,
    drop: int = 0,
    grid: dict[str, list[Any]] | None = None,
) -> list[dict[str, Any]]:
    """Write the table (of GRID, or `grid` with the same parameters); `drop` leaves out the last
    configurations (a partial recording). Returns the configurations written, in config_id order."""
    grid = grid or GRID
    rng = np.random.default_rng(seed)
    configs = [dict(zip(grid, point, strict=True)) for point in itertools.product(*grid.values())]
    kept = configs[: len(configs) - drop]
    t = np.arange(1, epochs + 1)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*RUN_COLUMNS, *grid], lineterminator="\n")
        writer.writeheader()
        for k, p in enumerate(kept):
            for r in range(replicates):
                final = level(p) + 0.01 * rng.standard_normal()
                val = final * (1 - np.exp(-t / 3)) + 0.01 * rng.standard_normal(epochs)
                test = val + 0.01 * rng.standard_normal(epochs)
                cost = 0.5 * (p["base_filters"] / 8) ** 2 * (1 + 0.5 * (p["levels"] == 4))
                for e in range(epochs):
                    writer.writerow(
                        {
                            "config_id": f"c{k:03d}",
                            "replicate": r,
                            "epoch": e + 1,
                            "val_miou": round(float(val[e]), 5),
                            "test_miou": round(float(test[e]), 5),
                            "cpu_seconds": round(cost * (1.5 if e == 0 else 1.0), 3),
                            "wall_seconds": round(cost, 3),
                            **p,
                        }
                    )
    return kept
