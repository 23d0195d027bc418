"""The exported learning curves (bench/curves/unet-synthetic.json) as arrays, for fitting and ranking."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import REPO

CURVES = REPO / "bench" / "curves" / "unet-synthetic.json"


@dataclass(frozen=True)
class Curves:
    """Whole curves only: row i is configuration params[i], column t is epoch t + 1."""

    params: list[dict[str, Any]]
    miou: np.ndarray  # (n, T) validation mIoU over classes 1..4
    cpu_seconds: np.ndarray  # (n, T) process CPU seconds of the epoch (train + validation)
    seconds: np.ndarray  # (n, T) wall seconds of the epoch, as measured under the recording's load
    space: dict[str, Any]  # the study's search space (spec.space)
    design_size: int  # configurations in the recording's design, complete or not
    skipped: int  # complete trials left out: fewer epochs than the budget or a missing score

    @property
    def n(self) -> int:
        return len(self.params)

    @property
    def epochs(self) -> int:
        return int(self.miou.shape[1])

    def subset(self, rows: np.ndarray | list[int]) -> Curves:
        rows = list(rows)
        return Curves(
            [self.params[i] for i in rows],
            self.miou[rows],
            self.cpu_seconds[rows],
            self.seconds[rows],
            self.space,
            self.design_size,
            self.skipped,
        )


def curves_from_doc(doc: dict[str, Any]) -> Curves:
    recipe = doc["recipe"]
    spec = recipe.get("spec") or {}
    budget = int(spec.get("train", {}).get("epochs") or max(len(c["epochs"]) for c in doc["configs"]))
    whole = [
        c
        for c in doc["configs"]
        if len(c["epochs"]) == budget
        and all(r["val_miou"] is not None and math.isfinite(r["val_miou"]) for r in c["epochs"])
        and all(r["cpu_seconds"] for r in c["epochs"])
    ]
    column = lambda key: np.asarray([[r[key] for r in c["epochs"]] for c in whole], dtype=float)  # noqa: E731
    return Curves(
        params=[dict(c["params"]) for c in whole],
        miou=column("val_miou").reshape(len(whole), budget),
        cpu_seconds=column("cpu_seconds").reshape(len(whole), budget),
        seconds=column("seconds").reshape(len(whole), budget),
        space=spec.get("space") or {},
        design_size=int(recipe.get("design", {}).get("size") or len(doc["configs"])),
        skipped=len(doc["configs"]) - len(whole),
    )


def load_curves(path: Path = CURVES) -> Curves:
    if not path.exists():
        raise SystemExit(f"error: no curves file at {path}; run `python -m bench curves` first")
    return curves_from_doc(json.loads(path.read_text()))
