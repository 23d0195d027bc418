"""The anytime figure of target 1: the true last-epoch mIoU of what each method holds, against compute."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class _Run(Protocol):
    seconds: list[float]

    def held(self) -> list[dict[str, Any] | None]: ...


@dataclass(frozen=True)
class Anytime:
    """Per method, the held configuration's true score on a shared grid of charged CPU-hours:
    median and interquartile range over seeds (NaN before a method's first completed trial)."""

    hours: np.ndarray
    quartiles: dict[str, np.ndarray]  # label -> (3, len(hours)): 25th, 50th, 75th percentile


def anytime(results: Mapping[str, Sequence[_Run]], score: Callable[[dict[str, Any]], float]) -> Anytime:
    longest = max(sum(r.seconds) for runs in results.values() for r in runs) / 3600
    hours = np.geomspace(min(0.01, longest / 2), longest, 200)
    out = {}
    for label, runs in results.items():
        curves = np.stack([_on_grid(r, score, hours) for r in runs])
        with warnings.catch_warnings():  # before any method's first result the column is all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            out[label] = np.nanpercentile(curves, [25, 50, 75], axis=0)
    return Anytime(hours, out)


def worst_gap(curves: Anytime, ours: str) -> float:
    """How far, at worst over the compute range, our median falls behind the best other method's
    median, as a fraction of that best (0.1 = 10% behind); compared where both have a result."""
    others = np.stack([q[1] for label, q in curves.quartiles.items() if label != ours])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        best = np.nanmax(others, axis=0)
    mine = curves.quartiles[ours][1]
    both = np.isfinite(mine) & np.isfinite(best) & (best > 0)
    return float(np.max(1.0 - mine[both] / best[both])) if both.any() else 1.0


def anytime_png(curves: Anytime, target: float, out: Path) -> None:
    """One line per method: the median over seeds (band: interquartile range)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = curves.hours
    fig, ax = plt.subplots(figsize=(9, 5.5))
    colours = plt.get_cmap("tab20").colors  # 12 methods: tab10 would give two methods one colour
    for k, (label, (low, median, high)) in enumerate(curves.quartiles.items()):
        colour = colours[(2 * k) % 20 + (2 * k) // 20]
        ax.plot(grid, median, label=label, color=colour, lw=2.2 if "default" in label else 1.2)
        ax.fill_between(grid, low, high, color=colour, alpha=0.08)
    ax.axhline(target, color="black", ls="--", lw=1, label=f"fixed target {target:.3f}")
    ax.set(xscale="log", xlabel="compute charged (CPU-hours of the recorded epochs)")
    ax.set(ylabel="true last-epoch val mIoU of what export-best would export")
    ax.set_title("Anytime search on replayed real learning curves (median over seeds, IQR band)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _on_grid(run: _Run, score: Callable[[dict[str, Any]], float], grid: np.ndarray) -> np.ndarray:
    spent = np.cumsum(run.seconds) / 3600
    values = np.array([score(h) if h is not None else np.nan for h in run.held()])
    index = np.searchsorted(spent, grid, side="right") - 1
    return np.where(index >= 0, values[np.clip(index, 0, None)], np.nan)
