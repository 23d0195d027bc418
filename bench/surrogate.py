"""`python -m bench surrogate`: fit the replay surrogate on the recorded curves, check it on recorded
configurations it was not fitted on, and write bench/curves/surrogate.json.

Printed, every figure measured in this run on the curves file named in the first line:
- each candidate mean model, fitted with one configuration (or one fold) held out: Spearman rank
  correlation with the held-out recorded value at the last epoch and at epoch 3, and RMSE over epochs;
  the ceiling beside them (recorded values against their own smooth trend: the noise alone costs that);
- the seconds model held out the same way (error of a trial's total CPU seconds);
- the noise model: epoch-to-epoch differences of the recorded curves against replayed ones;
- the ranking question (bench/ranking.py).
The exported model is kron-gp unless --model says otherwise: the one model in which a run's own offset
and the epoch noise's size and memory are estimated together (in trend-gp the run's offset cannot be
told from white noise). When another candidate predicts held-out curves better, a line says so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import ks_2samp, spearmanr

from bench import ranking
from bench._common import REPO, refuse_same_file
from bench.curves_data import CURVES, Curves, load_curves
from bench.curves_export import dump_json
from bench.ranking import rho_rows
from bench.surrogate_fit import (
    CANDIDATES,
    EXPORTABLE,
    design_matrix,
    features_from_space,
    fit_mean,
    fit_seconds,
    fit_surrogate,
    poly_smooth,
    trend_degree,
)
from marstune.tuning.search.replay import GPMean, Replay

OUT = REPO / "bench" / "curves" / "surrogate.json"
EARLY = 3  # the short budget the brief asks about: epoch 3
REPLAY_SEEDS = 20


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def folds_of(n: int, k: int) -> list[np.ndarray]:
    """Leave-one-config-out when k is 0 or >= n, else k interleaved folds (the design's order mixes
    Sobol points and corners, so interleaving spreads both over the folds)."""
    k = n if k <= 0 or k >= n else k
    return [np.arange(i, n, k) for i in range(k)]


def held_out(curves: Curves, kind: str, k: int) -> np.ndarray:
    """(n, T) mean curves, each predicted by `kind` fitted without its configuration's fold."""
    features = features_from_space(curves.space)
    X = design_matrix(curves, features)
    pred = np.empty_like(curves.miou)
    for test in folds_of(curves.n, k):
        train = np.setdiff1d(np.arange(curves.n), test)
        predict, _ = fit_mean(kind, curves.subset(train), features)
        pred[test] = predict(X[test])
    return pred


def held_out_seconds(curves: Curves, k: int) -> np.ndarray:
    features = features_from_space(curves.space)
    X = design_matrix(curves, features)
    pred = np.empty_like(curves.cpu_seconds)
    for test in folds_of(curves.n, k):
        train = np.setdiff1d(np.arange(curves.n), test)
        mean = GPMean(fit_seconds(X[train], curves.cpu_seconds[train], features).doc, features)
        pred[test] = np.exp(np.stack([mean(x) for x in X[test]]))  # through the exported form
    return pred


def load_sensitivity(curves: Curves) -> dict[str, float]:
    """How an epoch's CPU and wall seconds move with the load it met (wall / CPU: with one thread, the
    time it waited for a core), compared within each configuration (its other epochs are the same work)."""
    cpu, wall = np.log(curves.cpu_seconds[:, 1:]), np.log(curves.seconds[:, 1:])  # epoch 1 builds graphs
    load = wall - cpu
    x = load - load.mean(1, keepdims=True)
    slope = lambda y: float((x * (y - y.mean(1, keepdims=True))).sum() / max((x**2).sum(), 1e-12))  # noqa: E731
    ratio = np.exp(load)
    return {
        "ratio_p10": float(np.percentile(ratio, 10)),
        "ratio_p90": float(np.percentile(ratio, 90)),
        "cpu_change": 2.0 ** slope(cpu) - 1.0,
        "wall_change": 2.0 ** slope(wall) - 1.0,
    }


def bootstrap_ci(a: np.ndarray, b: np.ndarray, draws: int = 1000) -> tuple[float, float]:
    """90% interval of Spearman's rho over configurations resampled: with a few dozen of them, one
    figure alone says too little."""
    if len(a) < 3:
        return (float("nan"), float("nan"))
    idx = np.random.default_rng(0).integers(0, len(a), (draws, len(a)))
    rho = rho_rows(a[idx], b[idx])
    lo, hi = np.nanpercentile(rho, [5, 95])
    return (float(lo), float(hi))


def mean_scores(curves: Curves, pred: np.ndarray) -> dict[str, float]:
    y, last = curves.miou, curves.epochs - 1
    early = min(EARLY, curves.epochs) - 1
    return {
        "spearman_last": spearman(pred[:, last], y[:, last]),
        "spearman_last_ci90": bootstrap_ci(pred[:, last], y[:, last]),
        "spearman_epoch3": spearman(pred[:, early], y[:, early]),
        "rmse_all": float(np.sqrt(((pred - y) ** 2).mean())),
        "rmse_last": float(np.sqrt(((pred[:, last] - y[:, last]) ** 2).mean())),
    }


def noise_check(curves: Curves, replay: Replay) -> dict[str, Any]:
    """Epoch-to-epoch differences, recorded vs replayed at the same configurations (REPLAY_SEEDS each;
    in-sample: the noise model was measured on these curves)."""
    recorded = np.diff(curves.miou, axis=1)
    replayed = np.stack(
        [
            np.diff([m for m, _ in replay.curve(p, seed)])
            for p in curves.params
            for seed in range(REPLAY_SEEDS)
        ]
    )
    qs = [5, 25, 50, 75, 95]

    def describe(d: np.ndarray) -> dict[str, Any]:
        lag1 = float(np.corrcoef(d[:, 1:].ravel(), d[:, :-1].ravel())[0, 1]) if d.shape[1] > 2 else 0.0
        return {
            "quantiles": [round(float(v), 4) for v in np.percentile(d, qs)],
            "sd": round(float(d.std()), 4),
            "drops_below_-0.05": round(float((d < -0.05).mean()), 3),
            "lag1": round(lag1, 3),
        }

    seconds = np.stack([[s for _, s in replay.curve(p, seed)] for p in curves.params for seed in range(5)])
    return {
        "recorded": describe(recorded),
        "replayed": describe(replayed),
        "ks_distance": round(float(ks_2samp(recorded.ravel(), replayed.ravel()).statistic), 3),
        "cpu_seconds_epoch_sd_ratio": round(
            float(
                np.diff(np.log(seconds[:, 1:]), axis=1).std()
                / np.diff(np.log(curves.cpu_seconds[:, 1:])).std()
            ),
            3,
        ),
    }


def single_run_ceiling(curves: Curves, replay: Replay, draws: int = 100) -> dict[str, float]:
    """The rank correlation a perfect surrogate could reach against recordings of one run per
    configuration, by the fitted model itself: its configuration means against replayed runs (their own
    offsets and epoch noise) at the recorded configurations, median over draws. Approximate: the fitted
    means are shrunk a little, which lowers it."""
    means = np.stack([replay.mean_curve(p) for p in curves.params])
    early = min(EARLY, curves.epochs) - 1
    runs = [
        np.array([[m for m, _ in replay.curve(p, 10_000 + d)] for p in curves.params]) for d in range(draws)
    ]
    return {
        "last": float(np.median([spearman(means[:, -1], r[:, -1]) for r in runs])),
        "early": float(np.median([spearman(means[:, early], r[:, early]) for r in runs])),
    }


def _rounded(scores: dict[str, Any]) -> dict[str, Any]:
    return {k: [round(x, 4) for x in v] if isinstance(v, tuple) else round(v, 4) for k, v in scores.items()}


def _fmt(v: float) -> str:
    return "  n/a" if v != v else f"{v:5.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench surrogate", description=__doc__.splitlines()[0])
    parser.add_argument("--curves", type=Path, default=CURVES, help=f"the curves file (default {CURVES})")
    parser.add_argument("--out", type=Path, default=OUT, help=f"the surrogate file (default {OUT})")
    parser.add_argument("--folds", type=int, default=0, help="k folds over configurations (0: leave one out)")
    parser.add_argument("--model", choices=EXPORTABLE, help="export this model, whatever validation says")
    parser.add_argument("--plot", type=Path, help="also draw recorded vs replayed curves to this PNG")
    args = parser.parse_args(argv)
    refuse_same_file(args.out, "--out", (args.curves, "curves file (--curves)"))
    if args.plot is not None:
        refuse_same_file(args.plot, "--plot", (args.curves, "curves file (--curves)"), (args.out, "--out"))
    if args.folds == 1 or args.folds < 0:
        parser.error("--folds must be 0 (leave one out) or >= 2")
    curves = load_curves(args.curves)
    k = curves.n if args.folds <= 0 else min(args.folds, curves.n)
    print(f"curves: {args.curves} -- {curves.n} whole curves of {curves.epochs} epochs "
          f"({curves.design_size} in the design; {curves.skipped} left out)")  # fmt: skip
    if curves.n < 10:
        print(f"WARNING: {curves.n} configurations: rank correlations over so few mean little")
    print(f"\n== mean models, held out ({'leave-one-config-out' if k == curves.n else f'{k}-fold'}) ==")
    print(
        "model      rho@last (90% bootstrap)  rho@3  rmse(all)  rmse@last   (vs the held-out recorded values)"
    )
    preds = {kind: held_out(curves, kind, k) for kind in CANDIDATES}
    scores = {kind: mean_scores(curves, pred) for kind, pred in preds.items()}
    for kind, s in scores.items():
        lo, hi = s["spearman_last_ci90"]
        rho = f"{_fmt(s['spearman_last'])} [{_fmt(lo)}, {_fmt(hi)}]"
        rmse = f"{s['rmse_all']:8.4f}  {s['rmse_last']:9.4f}"
        print(f"{kind:9s}  {rho}    {_fmt(s['spearman_epoch3'])}  {rmse}")
    smooth, _ = poly_smooth(curves.miou, trend_degree(curves.miou))
    ceiling = mean_scores(curves, smooth)
    rho = f"{_fmt(ceiling['spearman_last'])}{' ' * 16}"
    print(f"ceiling    {rho}    {_fmt(ceiling['spearman_epoch3'])}  {ceiling['rmse_all']:8.4f}  "
          f"{ceiling['rmse_last']:9.4f}   (own smooth trend)")  # fmt: skip
    chosen = args.model or "kron-gp"
    print(f"exported: {chosen} ({'--model' if args.model else 'the default'})")
    best = min(CANDIDATES, key=lambda kind: scores[kind]["rmse_all"])
    if best != chosen:
        gap = scores[chosen]["rmse_all"] - scores[best]["rmse_all"]
        print(f"note: {best} predicts held-out curves better (RMSE over all epochs {gap:.4f} lower)"
              + (f"; `--model {best}` exports it" if best in EXPORTABLE else ""))  # fmt: skip

    secs = held_out_seconds(curves, k)
    total_err = np.abs(secs.sum(1) / curves.cpu_seconds.sum(1) - 1.0)
    print("\n== seconds model (CPU seconds per epoch), held out the same way ==")
    print(f"trial total CPU seconds: median error {np.median(total_err):.1%}, max {total_err.max():.1%}; "
          f"rho {_fmt(spearman(secs.sum(1), curves.cpu_seconds.sum(1)))}")  # fmt: skip
    load = load_sensitivity(curves)
    print(f"why CPU seconds: an epoch's wall/CPU ratio ranged {load['ratio_p10']:.2f}-"
          f"{load['ratio_p90']:.2f} (p10-p90) with the machine's load; where it doubled, CPU seconds changed "
          f"{load['cpu_change']:+.1%} and wall seconds {load['wall_change']:+.1%} "
          "(within-configuration fit, epochs 2+)")  # fmt: skip

    doc = fit_surrogate(curves, chosen)
    replay = Replay(doc)
    noise = noise_check(curves, replay)
    print(
        f"\n== noise: epoch-to-epoch differences, recorded vs replayed ({REPLAY_SEEDS} seeds per config) =="
    )
    print(f"noise model: sd = exp({doc['noise']['miou']['log_sd']} . [1, level, log epoch]), "
          f"AR(1) {doc['noise']['miou']['ar1']}, recorded quantiles")  # fmt: skip
    for side in ("recorded", "replayed"):
        d = noise[side]
        print(f"{side:9s} quantiles 5/25/50/75/95% {d['quantiles']}  sd {d['sd']:.4f}  "
              f"drops<-0.05 {d['drops_below_-0.05']:.1%}  lag-1 corr {d['lag1']:+.2f}")  # fmt: skip
    print(f"KS distance {noise['ks_distance']}; replayed/recorded sd of epoch-to-epoch log CPU seconds "
          f"{noise['cpu_seconds_epoch_sd_ratio']}")  # fmt: skip
    replayed_last = np.stack(
        [[replay.curve(p, s)[-1][0] for p in curves.params] for s in range(REPLAY_SEEDS)]
    )
    rho_noisy = np.median([spearman(row, curves.miou[:, -1]) for row in replayed_last])
    print(f"replayed (noisy) last epoch vs recorded: median rho {_fmt(float(rho_noisy))} (in-sample)")
    ceiling_run = single_run_ceiling(curves, replay)
    levels = np.stack([replay.mean_curve(p) for p in curves.params])
    epoch_sd = float(np.sqrt(np.mean([replay.noise_sd(level) ** 2 for level in levels])))
    print(f"run-to-run sd {doc['fit']['hyper_miou']['run_sd']:.4f} (a run's own offset, whole curve), epoch "
          f"noise sd {epoch_sd:.4f} (RMS at the recorded configurations), per-run jumpiness "
          f"{replay.run_log_sd:.2f} (log sd): even a perfect surrogate would rank single-run recordings at "
          "about "
          f"rho {ceiling_run['last']:.2f} (last epoch), {ceiling_run['early']:.2f} "
          f"(epoch {EARLY})")  # fmt: skip

    doc["validation"] = {
        "held_out": "leave-one-config-out" if k == curves.n else f"{k}-fold over configurations",
        "configs": curves.n,
        "means": {kind: _rounded(s) for kind, s in scores.items()},
        "ceiling": _rounded(ceiling),
        "seconds_total_median_error": round(float(np.median(total_err)), 4),
        "load_sensitivity": {k: round(v, 4) for k, v in load.items()},
        "noise": noise,
        "single_run_ceiling": {k: round(v, 4) for k, v in ceiling_run.items()},
    }
    args.out.write_text(dump_json(doc) + "\n")
    print(f"\nwrote {args.out} ({chosen}, fitted on {curves.n} configurations)")
    if args.plot:
        from bench.surrogate_plot import plot

        plot(curves, replay, args.plot, preds[chosen])
        print(f"wrote {args.plot}")
    print()
    ranking.report(curves)
    return 0


if __name__ == "__main__":
    sys.exit(main())
