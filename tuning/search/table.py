"""Tabular replay of recorded runs (bench/curves/runs.csv): no model in between.

A replayed trial of configuration c draws one of c's recorded replicates (seeded by the trial) and
reports that run's own validation mIoU epoch by epoch, each epoch charged that run's recorded CPU
seconds: what NAS-Bench-201, LCBench and HPOBench's tabular benchmarks do. `objective.kind: replay`
with `objective.surrogate` naming a .csv file plays it through every engine.

A configuration the table does not hold (a grid corner left out, or a recording still partial) is
replayed as its nearest recorded configuration: the fewest parameters changed, ties by the grid's order.
The trial's `replayed` attribute names the configuration and replicate that were played, so a benchmark
scores what was really run. Standard library and numpy only (the product imports it).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# runs.csv's own columns; every other column is a hyperparameter.
RUN_COLUMNS = ("config_id", "replicate", "epoch", "val_miou", "test_miou", "cpu_seconds", "wall_seconds")
REQUIRED = RUN_COLUMNS[:6]  # wall_seconds is kept when recorded, never read
MAX_BYTES = 200 << 20


@dataclass(frozen=True)
class RecordedRun:
    """One training of one configuration: per epoch 1..E its validation and test mIoU and CPU seconds."""

    config_id: str
    replicate: int
    val: np.ndarray
    test: np.ndarray
    seconds: np.ndarray


def _value(text: str) -> Any:
    """A hyperparameter cell as the space spells it: 16 -> int, 0.2 -> float, relu -> str."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _ordered(values: set[Any]) -> list[Any]:
    """Numbers in numeric order, names in alphabetical order."""
    if all(isinstance(v, int | float) for v in values):
        return sorted(values)
    return sorted(values, key=str)


class TableReplay:
    """The recorded runs of a grid; `curve(params, seed)` is what `objective.kind: replay` calls."""

    def __init__(self, rows: list[dict[str, str]], params: list[str]) -> None:
        if not rows:
            raise ValueError("it holds no recorded run")
        self.params = params
        per_run: dict[tuple[str, int], list[dict[str, str]]] = {}
        self.configs: dict[str, dict[str, Any]] = {}
        for row in rows:
            config = {p: _value(row[p]) for p in params}
            if self.configs.setdefault(row["config_id"], config) != config:
                raise ValueError(f"config_id {row['config_id']} names two configurations")
            per_run.setdefault((row["config_id"], int(row["replicate"])), []).append(row)
        epochs = {len(r) for r in per_run.values()}
        if len(epochs) != 1:
            raise ValueError(
                f"runs hold different numbers of epochs {sorted(epochs)}; a run is whole or absent"
            )
        self.epochs = epochs.pop()
        self.runs: dict[str, list[RecordedRun]] = {}
        for (cid, replicate), run_rows in sorted(per_run.items()):
            run_rows.sort(key=lambda r: int(r["epoch"]))
            if [int(r["epoch"]) for r in run_rows] != list(range(1, self.epochs + 1)):
                raise ValueError(f"{cid} replicate {replicate}: epochs must be 1..{self.epochs} once each")
            arrays = [
                np.array([float(r[k]) for r in run_rows]) for k in ("val_miou", "test_miou", "cpu_seconds")
            ]
            if not all(np.all(np.isfinite(a)) for a in arrays) or np.any(arrays[2] < 0):
                raise ValueError(f"{cid} replicate {replicate}: a non-finite score or negative seconds")
            self.runs.setdefault(cid, []).append(RecordedRun(cid, replicate, *arrays))
        self.order = sorted(self.configs)
        # The replay's contract with check_replay: every parameter's recorded choices.
        self.features: list[dict[str, Any]] = [
            {"param": p, "kind": "onehot", "choices": _ordered({c[p] for c in self.configs.values()})}
            for p in params
        ]

    @classmethod
    def from_csv(cls, path: str | Path) -> TableReplay:
        path = Path(path).expanduser()
        if path.exists() and not path.is_file():
            raise ValueError("not a regular file")
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES >> 20} MB; a recorded table is far smaller")
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            missing = [c for c in REQUIRED if c not in columns]
            if missing:
                raise ValueError(f"a runs table needs the columns {list(REQUIRED)}; missing {missing}")
            rows = list(reader)
        return cls(rows, [c for c in columns if c not in RUN_COLUMNS])

    def config_id(self, params: Mapping[str, Any]) -> str:
        """The recorded configuration a trial of `params` replays: itself, else the nearest recorded."""
        wanted = {p: params[p] for p in self.params}
        for cid in self.order:
            if self.configs[cid] == wanted:
                return cid
        return min(self.order, key=lambda cid: sum(self.configs[cid][p] != wanted[p] for p in self.params))

    def run_for(self, params: Mapping[str, Any], seed: int) -> RecordedRun:
        """The replicate a trial with this seed replays: drawn uniformly, the same for the same seed."""
        cid = self.config_id(params)
        key = json.dumps({"config": cid, "seed": int(seed)}).encode()
        draw = int.from_bytes(hashlib.sha256(key).digest()[:8], "little")
        runs = self.runs[cid]
        return runs[draw % len(runs)]

    def identify(self, params: Mapping[str, Any], seed: int) -> dict[str, Any]:
        run = self.run_for(params, seed)
        return {"config_id": run.config_id, "replicate": run.replicate}

    def curve(self, params: Mapping[str, Any], seed: int) -> list[tuple[float, float]]:
        """(val_miou, seconds) per epoch 1..epochs of the replicate this seed draws."""
        run = self.run_for(params, seed)
        return [(float(v), float(s)) for v, s in zip(run.val, run.seconds, strict=True)]

    def score(self, config_id: str) -> float:
        """The configuration's true score: the mean test mIoU of its replicates at the last epoch."""
        return float(np.mean([r.test[-1] for r in self.runs[config_id]]))

    def kept_score(self, config_id: str, replicate: int, epoch: int) -> float:
        """The test mIoU of one recorded run at one epoch (1-based): the model that run would export."""
        run = next(r for r in self.runs[config_id] if r.replicate == replicate)
        return float(run.test[epoch - 1])
