"""`python -m bench tabular-stats`: the tables of the tabular benchmark, recomputed from search.csv.

Inputs: bench/results/search.csv (`python -m bench tabular`) and the recorded table it was run on.
- Targets: the 90th, 95th and 99th percentiles of the grid's true scores (per recorded configuration,
  the mean test mIoU of its replicates at the last epoch), the same for both scorings.
- Budgets: 4, 8, 16 and 32 full runs (a full run: the grid's average CPU seconds of one run over every
  recorded epoch), applied by cutting each seed's trials at the budget.
- Reached within a budget: the model held when the budget runs out (what `export-best` would export
  then) scores at least the target. Fraction of seeds, with a 90% bootstrap interval over seeds.
- Average runtime to the target (COCO's expected running time): the compute of every seed until its
  held model first scores at least the target, or the largest budget when it never does, summed, over
  the number of seeds that got there.
- Anytime: the median and the 5-95% band over seeds of the held model's true score after each budget.
- The evidence for the defaults: the mean true score at each budget with a 90% bootstrap interval, and
  our default minus random search (a 90% bootstrap interval of the difference).
Both scorings are printed: `config` (mean test mIoU of the held configuration's replicates at the last
epoch: what the final run trains) and `kept` (test mIoU of the very run replayed, at the epoch it kept:
what export-best ships).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench._common import positive_int, say, section
from bench.grid import RUNS_FILE
from bench.tabular_search import RESULTS, full_run_seconds

BUDGETS = (4, 8, 16, 32)  # in full runs
PERCENTILES = (90, 95, 99)
BOOTSTRAP = 2000
SCORINGS = ("config", "kept")


@dataclass
class Trace:
    """One method, one seed: per trial the cumulative seconds and the held model's two true scores."""

    seconds: np.ndarray
    scores: dict[str, np.ndarray]

    def at(self, budget: float, scoring: str) -> float:
        """The held model's true score when `budget` seconds are spent (nan: nothing held yet)."""
        # The last trial that fits: with a re-check, a row's seconds include the re-check it would run
        # if stopped there, so they need not grow from row to row.
        fits = np.flatnonzero(self.seconds <= budget)
        return float(self.scores[scoring][fits[-1]]) if fits.size else math.nan

    def first_reach(self, target: float, scoring: str, limit: float) -> float | None:
        """Seconds until the held model first scores >= target within `limit`; None if never."""
        hit = np.flatnonzero((self.scores[scoring] >= target) & (self.seconds <= limit))
        return float(self.seconds[hit[0]]) if hit.size else None


def read_results(path: Path) -> dict[str, dict[int, Trace]]:
    rows: dict[tuple[str, int], list[dict[str, str]]] = defaultdict(list)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        from bench.tabular_search import COLUMNS

        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks the columns {missing}; make it with `python -m bench tabular`")
        for row in reader:
            rows[row["method"], int(row["seed"])].append(row)
    out: dict[str, dict[int, Trace]] = defaultdict(dict)
    for (method, seed), trials in rows.items():
        trials.sort(key=lambda r: int(r["trial"]))

        def column(name: str, trials: list[dict[str, str]] = trials) -> np.ndarray:
            return np.array([float(r[name]) if r[name] != "" else math.nan for r in trials])

        out[method][seed] = Trace(
            column("cpu_seconds"), {"config": column("config_score"), "kept": column("kept_score")}
        )
    return dict(out)


def bootstrap(values: np.ndarray, rng: np.random.Generator, stat: str = "mean") -> tuple[float, float]:
    """A 90% percentile-bootstrap interval of the mean of `values` over seeds."""
    draws = rng.choice(values, size=(BOOTSTRAP, len(values)), replace=True)
    means = np.nanmean(draws, axis=1) if stat == "mean" else np.nanmedian(draws, axis=1)
    low, high = np.nanpercentile(means, [5, 95])
    return float(low), float(high)


def _ert(traces: list[Trace], target: float, scoring: str, limit: float) -> float:
    hits = [t.first_reach(target, scoring, limit) for t in traces]
    reached = [h for h in hits if h is not None]
    if not reached:
        return math.inf
    return (sum(reached) + limit * (len(hits) - len(reached))) / len(reached)


def report(results: dict[str, dict[int, Trace]], grid_scores: np.ndarray, unit: float) -> None:
    rng = np.random.default_rng(0)
    targets = {p: float(np.percentile(grid_scores, p)) for p in PERCENTILES}
    best = float(grid_scores.max())
    seeds = {m: len(s) for m, s in results.items()}
    say(
        f"grid: {len(grid_scores)} configurations; true scores {grid_scores.min():.4f}-{best:.4f}; "
        "targets " + ", ".join(f"p{p} {t:.4f}" for p, t in targets.items()),
        f"budget unit: one full run = {unit / 60:.2f} CPU-min; seeds per method: "
        + ", ".join(sorted({str(n) for n in seeds.values()})),
    )
    width = max(len(m) for m in results)
    for scoring in SCORINGS:
        for p in PERCENTILES:
            section(
                f"fraction of seeds whose held model reaches p{p} = {targets[p]:.4f} ({scoring} score) "
                "within the budget, 90% bootstrap interval"
            )
            say(f"{'method':<{width}}" + "".join(f"  {f'{b} runs':>17}" for b in BUDGETS))
            for method, by_seed in results.items():
                cells = []
                for b in BUDGETS:
                    hit = np.array([t.at(b * unit, scoring) >= targets[p] for t in by_seed.values()], float)
                    low, high = bootstrap(hit, rng)
                    cells.append(f"{hit.mean():.2f} [{low:.2f}-{high:.2f}]")
                say(f"{method:<{width}}" + "".join(f"  {c:>17}" for c in cells))
        limit = BUDGETS[-1] * unit
        section(f"average runtime to the target ({scoring} score), CPU-min, within {BUDGETS[-1]} runs")
        say(f"{'method':<{width}}" + "".join(f"  {f'p{p}':>9}" for p in PERCENTILES))
        for method, by_seed in results.items():
            erts = [_ert(list(by_seed.values()), targets[p], scoring, limit) / 60 for p in PERCENTILES]
            say(f"{method:<{width}}" + "".join(f"  {e:>9.1f}" for e in erts))
        section(f"anytime: held model's true {scoring} score, median [5%-95%] over seeds")
        say(f"{'method':<{width}}" + "".join(f"  {f'{b} runs':>21}" for b in BUDGETS))
        for method, by_seed in results.items():
            cells = []
            for b in BUDGETS:
                at = np.array([t.at(b * unit, scoring) for t in by_seed.values()])
                lo, mid, hi = np.nanpercentile(at, [5, 50, 95])
                cells.append(f"{mid:.4f} [{lo:.3f}-{hi:.3f}]")
            say(f"{method:<{width}}" + "".join(f"  {c:>21}" for c in cells))
    evidence(results, unit, rng, width)


def _ours_and_random(results: dict[str, dict[int, Trace]]) -> tuple[str | None, str | None]:
    """Our default's row and random search's (the first method whose name starts so)."""
    ours = next((m for m in results if m.startswith("default")), None)
    rand = next((m for m in results if m.startswith("random")), None)
    return ours, rand


def _diff_interval(a: np.ndarray, r: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    """mean(a) - mean(r) over independent seeds, and its 90% bootstrap interval."""
    draws_a = np.nanmean(rng.choice(a, (BOOTSTRAP, len(a))), axis=1)
    draws_r = np.nanmean(rng.choice(r, (BOOTSTRAP, len(r))), axis=1)
    low, high = np.nanpercentile(draws_a - draws_r, [5, 95])
    return float(np.nanmean(a) - np.nanmean(r)), float(low), float(high)


def evidence(results: dict[str, dict[int, Trace]], unit: float, rng: np.random.Generator, width: int) -> None:
    """What issue 20's item 6 asks of a default, per method: beat random search at equal compute on the
    configuration score (the 90% interval of the difference above 0 at every budget), and not lose to it
    on the kept model's score (the interval not below 0 at any budget)."""
    ours, rand = _ours_and_random(results)
    beats: dict[str, bool] = dict.fromkeys(results, True)
    holds: dict[str, bool] = dict.fromkeys(results, True)
    for scoring in SCORINGS:
        section(f"evidence: mean true {scoring} score at each budget, 90% bootstrap interval")
        say(f"{'method':<{width}}" + "".join(f"  {f'{b} runs':>22}" for b in BUDGETS))
        for method, by_seed in results.items():
            cells = []
            for b in BUDGETS:
                at = np.array([t.at(b * unit, scoring) for t in by_seed.values()])
                low, high = bootstrap(at, rng)
                cells.append(f"{np.nanmean(at):.4f} [{low:.4f}-{high:.4f}]")
            say(f"{method:<{width}}" + "".join(f"  {c:>22}" for c in cells))
        if rand is None:
            continue
        section(f"evidence: each method minus random search, mean true {scoring} score, 90% interval")
        say(f"{'method':<{width}}" + "".join(f"  {f'{b} runs':>26}" for b in BUDGETS))
        for method, by_seed in results.items():
            if method == rand:
                continue
            cells = []
            for b in BUDGETS:
                a = np.array([t.at(b * unit, scoring) for t in by_seed.values()])
                r = np.array([t.at(b * unit, scoring) for t in results[rand].values()])
                diff, low, high = _diff_interval(a, r, rng)
                mark = "+" if low > 0 else "-" if high < 0 else "="
                cells.append(f"{diff:+.4f} [{low:+.4f},{high:+.4f}] {mark}")
                if scoring == "config":
                    beats[method] &= low > 0
                else:
                    holds[method] &= high >= 0
            say(f"{method:<{width}}" + "".join(f"  {c:>26}" for c in cells))
    if rand is not None:
        fit = [m for m in results if m != rand and beats[m] and holds[m]]
        section(
            "candidates for the default: ahead of random on the config score at every budget, "
            "not behind it on the kept score at any"
        )
        say(*(f"  {m}{'  (our default)' if m == ours else ''}" for m in fit) if fit else ["  none"])


def figure(results: dict[str, dict[int, Trace]], targets: dict[int, float], unit: float, out: Path) -> None:
    """Anytime curves, one panel per scoring: the median over seeds of the held model's true score
    against compute (in full runs), with its 5-95% band, and the targets as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.geomspace(0.5, BUDGETS[-1], 120)
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5), sharey=True)
    colours = plt.get_cmap("tab20").colors
    for ax, scoring in zip(axes, SCORINGS, strict=True):
        for k, (method, by_seed) in enumerate(results.items()):
            curves = np.array([[t.at(b * unit, scoring) for b in grid] for t in by_seed.values()])
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # before a method's first result: all NaN
                low, mid, high = np.nanpercentile(curves, [5, 50, 95], axis=0)
            colour = colours[(2 * k) % 20 + (2 * k) // 20]
            bold = method in _ours_and_random(results)
            ax.plot(grid, mid, color=colour, lw=2.2 if bold else 1.0, label=method)
            if bold:
                ax.fill_between(grid, low, high, color=colour, alpha=0.12)
        for p, target in targets.items():
            ax.axhline(target, color="black", ls="--", lw=0.8)
            ax.annotate(f"p{p}", (grid[0], target), fontsize=7, va="bottom")
        ax.set(xscale="log", xlabel="compute charged (full 12-epoch runs of the grid's average cost)")
        ax.set_title(f"true {scoring} score of the held model: median, 5-95% band (default, random)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test mIoU")
    axes[1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench tabular-stats", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="search.csv (default: %(default)s)")
    parser.add_argument(
        "--runs", type=Path, default=RUNS_FILE, help="the recorded table (default: %(default)s)"
    )
    parser.add_argument("--figure", type=Path, help="also draw the anytime curves into this PNG")
    parser.add_argument("--min-seeds", type=positive_int, default=1, help="refuse methods with fewer seeds")
    args = parser.parse_args(argv)
    from marstune.tuning.search.table import TableReplay

    table = TableReplay.from_csv(args.runs)
    results = read_results(args.results)
    thin = [m for m, s in results.items() if len(s) < args.min_seeds]
    if thin:
        raise SystemExit(
            f"error: {thin} have fewer than {args.min_seeds} seeds; rerun `python -m bench tabular`"
        )
    runs = sum(len(r) for r in table.runs.values())
    say(f"recorded table {args.runs}: {len(table.runs)} configurations, {runs} runs")
    grid_scores = np.array([table.score(c) for c in table.order])
    unit = full_run_seconds(table)
    report(results, grid_scores, unit)
    if args.figure:
        figure(results, {p: float(np.percentile(grid_scores, p)) for p in PERCENTILES}, unit, args.figure)
        say(f"anytime figure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
