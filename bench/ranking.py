"""`python -m bench ranking`: how well a short budget ranks configurations, on the recorded curves.

For each budget k = 1..T, configurations are ranked by their best validation mIoU so far (best of epochs
1..k: what a search that stopped every trial at k would have recorded) and compared with the ranking at
the full budget, two ways:
  final = best over all epochs: the trial value the product stores, ranks and exports (the headline);
  final = last epoch: what a model exported at the end of training scores.
Also printed: a 90% bootstrap interval (configurations resampled) for the first correlation, and what
picking the top configuration at k costs in final mIoU (regret against the full budget's winner).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata, spearmanr

from bench.curves_data import CURVES, Curves, load_curves

BOOTSTRAP = 1000


def _rho(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def rho_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of a and b (m, n): Pearson of the ranks, ties averaged; the
    bootstrap needs thousands, and a resample repeats configurations (ties)."""
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    denom = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(1) / denom, np.nan)


def ranking_table(curves: Curves, seed: int = 0) -> list[dict[str, Any]]:
    y = curves.miou
    so_far = np.maximum.accumulate(y, axis=1)
    best_all, last = so_far[:, -1], y[:, -1]
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, curves.n, (BOOTSTRAP if curves.n >= 3 else 0, curves.n))
    rows = []
    for k in range(1, curves.epochs + 1):
        at_k = so_far[:, k - 1]
        boot = rho_rows(at_k[samples], best_all[samples])
        boot = boot[np.isfinite(boot)]
        pick = int(np.argmax(at_k))
        rows.append(
            {
                "k": k,
                "rho_best": _rho(at_k, best_all),
                "rho_last": _rho(at_k, last),
                "ci90": tuple(np.percentile(boot, [5, 95])) if len(boot) else (float("nan"),) * 2,
                "regret": float(best_all.max() - best_all[pick]),
                "winner_in_top3": bool(np.argmax(best_all) in np.argsort(-at_k)[:3]),
            }
        )
    return rows


def report(curves: Curves) -> list[dict[str, Any]]:
    rows = ranking_table(curves)
    print(f"== ranking at epoch k vs the full {curves.epochs} epochs ({curves.n} recorded configurations) ==")
    print(
        "ranked by the best val mIoU up to epoch k; final = best over all epochs (the trial's value) or last"
    )
    print(" k   rho(final=best)  90% bootstrap   rho(final=last)   regret of top@k   winner in top-3@k")
    for r in rows:
        lo, hi = r["ci90"]
        print(f"{r['k']:2d}   {r['rho_best']:14.2f}   [{lo:5.2f}, {hi:5.2f}]   {r['rho_last']:14.2f}   "
              f"{r['regret']:15.4f}   {'yes' if r['winner_in_top3'] else 'no'}")  # fmt: skip
    for level in (0.8, 0.9):
        k = next((r["k"] for r in rows if all(q["rho_best"] >= level for q in rows[r["k"] - 1 :])), None)
        print(
            f"rho(final=best) >= {level} from epoch {k} on"
            if k
            else f"rho(final=best) never holds >= {level}"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ranking", description=__doc__.splitlines()[0])
    parser.add_argument("--curves", type=Path, default=CURVES, help=f"the curves file (default {CURVES})")
    args = parser.parse_args(argv)
    curves = load_curves(args.curves)
    print(f"curves: {args.curves} -- {curves.n} whole curves ({curves.design_size} in the design)")
    report(curves)
    return 0


if __name__ == "__main__":
    sys.exit(main())
