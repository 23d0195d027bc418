"""The anytime figure of target 1: the true last-epoch mIoU of what each method holds, against compute."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class _Run(Protocol):
    seconds: list[float]

    def held(self) -> list[dict[str, Any] | None]: ...


def anytime_png(
    results: Mapping[str, Sequence[_Run]],
    score: Callable[[dict[str, Any]], float],
    target: float,
    out: Path,
) -> None:
    """One line per method: the median over seeds (band: interquartile range) of the held
    configuration's true score, on a shared grid of charged CPU-hours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    longest = max(sum(r.seconds) for runs in results.values() for r in runs) / 3600
    grid = np.geomspace(0.01, longest, 200)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for label, runs in results.items():
        curves = np.stack([_on_grid(r, score, grid) for r in runs])
        median = np.nanmedian(curves, axis=0)
        ax.plot(grid, median, label=label, lw=2.2 if "default" in label else 1.2)
        low, high = np.nanpercentile(curves, [25, 75], axis=0)
        ax.fill_between(grid, low, high, alpha=0.08)
    ax.axhline(target, color="black", ls="--", lw=1, label=f"fixed target {target:.3f}")
    ax.set(xscale="log", xlabel="compute charged (CPU-hours of the recorded epochs)")
    ax.set(ylabel="true last-epoch val mIoU of what export-best would export")
    ax.set_title("Anytime search on replayed real learning curves (median over seeds, IQR band)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if str(out) != "/dev/null":
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    plt.close(fig)


def _on_grid(run: _Run, score: Callable[[dict[str, Any]], float], grid: np.ndarray) -> np.ndarray:
    spent = np.cumsum(run.seconds) / 3600
    values = np.array([score(h) if h is not None else np.nan for h in run.held()])
    index = np.searchsorted(spent, grid, side="right") - 1
    return np.where(index >= 0, values[np.clip(index, 0, None)], np.nan)
