"""Target 1: compute to a fixed target, on replayed real learning curves, side by side with the peers.

The task is the recorded learning curves of our own space (bench/curves/: real U-Net trainings, 12
epochs each), replayed by their fitted surrogate through the real engines (`objective.kind: replay`:
Optuna, Ray Tune, Keras Tuner; the same worker loops, samplers, pruners, early stopping and storage).
Every replayed epoch is charged the CPU seconds it took when recorded.

- The fixed target is the 95th percentile of the last-epoch mIoU over the recorded design (the
  surrogate's noise-free mean at each recorded configuration), the same for every method and seed.
- What a method holds after each trial is what `tune export-best` would export then: its completed
  trial with the best observed value. Its TRUE score is the surrogate's noise-free last-epoch mean.
- Compute to the target: epochs and recorded seconds, over all trials in order, until the held
  configuration's true score first reaches the target (median and interquartile range over seeds).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import REPO, Outcome, make_spec, positive_int, say, section, sqlite_url, workdir

SURROGATE = REPO / "bench" / "curves" / "surrogate.json"
CURVES = REPO / "bench" / "curves" / "unet-synthetic.json"
FIGURE = REPO / "docs" / "img" / "search-anytime.png"
TRIALS = 100
SEEDS = 20
EPOCHS = 12  # the recorded budget: "random search at the full budget"
SHORT_EPOCHS = 4  # a short-budget search, then the top 3 re-checked at the full budget
RECHECK_K = 3
RANDOM = "random, full budget (seed report)"
PLAIN_TPE = "Optuna TPE out of the box"


@dataclass(frozen=True)
class Method:
    label: str
    engine: str  # optuna | ray | keras-tuner | plain-optuna (Optuna's own defaults, no service)
    sampler: str
    pruner: str = "none"
    patience: int = 0
    epochs: int = EPOCHS
    recheck: bool = False
    ours: bool = False


def methods() -> list[Method]:
    from marstune.tuning.config.spec import DEFAULTS

    search, patience = DEFAULTS["search"], DEFAULTS["train"]["patience"]
    epochs = min(DEFAULTS["train"]["epochs"], EPOCHS)  # the default budget a trial, as `tune run` trains
    ours = f"{search['sampler']} + {search['pruner']}, patience {patience}, {epochs} epochs"
    return [
        Method(RANDOM, "optuna", "random"),
        Method("grid (its first 100 of 288 points)", "optuna", "grid"),
        Method(PLAIN_TPE, "plain-optuna", "tpe"),
        Method(
            f"{ours} (our default)",
            "optuna",
            search["sampler"],
            search["pruner"],
            patience,
            epochs,
            ours=True,
        ),
        Method(
            f"tpe + hyperband, patience {patience}, {epochs} epochs",
            "optuna",
            "tpe",
            "hyperband",
            patience,
            epochs,
        ),
        Method("gp", "optuna", "gp"),
        Method("cma-es", "optuna", "cmaes"),
        Method(
            f"tpe + median, {SHORT_EPOCHS} epochs + recheck", "optuna", "tpe", "median", 0, SHORT_EPOCHS, True
        ),
        Method("Ray ASHA + random", "ray", "random", "hyperband"),
        Method("Ray ASHA + OptunaSearch (tpe)", "ray", "tpe", "hyperband"),
        Method("Keras Tuner Hyperband", "keras-tuner", "hyperband"),
        Method("Keras Tuner BayesianOptimization", "keras-tuner", "bayes"),
    ]


@dataclass
class Run:
    """One method, one seed: per trial in order, its params, observed value (None unless COMPLETE),
    epochs trained and recorded seconds charged."""

    params: list[dict[str, Any]] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    exported_override: dict[str, Any] | None = None  # the recheck's winner
    extra: tuple[int, float] = (0, 0.0)  # the recheck's epochs and seconds

    def held(self) -> list[dict[str, Any] | None]:
        """After each trial: the configuration `export-best` would export (best observed value)."""
        out, best, best_value = [], None, -math.inf
        for params, value in zip(self.params, self.values, strict=True):
            if value is not None and value > best_value:
                best, best_value = params, value
            out.append(best)
        return out


def _recorded_space() -> dict[str, Any]:
    """The space the curves were recorded over (the replay answers for it alone)."""
    import yaml

    return dict(yaml.safe_load((REPO / "bench" / "curves" / "spec.yaml").read_text())["space"])


def _spec(method: Method, name: str, seed: int, trials: int) -> Any:
    return make_spec(
        name,
        {
            "space": _recorded_space(),
            "objective": {"kind": "replay", "surrogate": str(SURROGATE)},
            "train": {"epochs": method.epochs, "patience": method.patience, "seed": seed},
            "search": {
                "engine": "optuna" if method.engine == "plain-optuna" else method.engine,
                "sampler": method.sampler,
                "pruner": method.pruner,  # Ray: hyperband = ASHA from epoch 1 in thirds
                "trials": trials,
            },
        },
    )


def _plain_optuna(spec: Any, url: str, seed: int) -> None:
    """Optuna as a user gets it: TPESampler() with its defaults, no pruner, study.optimize."""
    import optuna

    from marstune.tuning.search.objective import TrialContext, evaluate

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(study_name=spec.study, storage=url, direction="maximize", sampler=sampler)
    distributions = spec.space.to_optuna()

    def objective(trial: optuna.Trial) -> float:
        config = {name: trial._suggest(name, dist) for name, dist in distributions.items()}  # noqa: SLF001

        def report(epoch: int, value: float) -> bool:
            trial.report(value, epoch)
            return False

        ctx = TrialContext(trial.number, report)
        value = evaluate(spec.config_for(config), spec, ctx)
        trial.set_user_attr("compute_seconds", ctx.attrs["compute_seconds"])
        return value

    study.optimize(objective, n_trials=spec.search.trials)


def run_method(method: Method, seed: int, trials: int, folder: Path) -> Run:
    from marstune.tuning.search.engines import ENGINES, load_engine

    name = f"{method.engine}-{method.sampler}-{method.pruner}-{method.epochs}-{seed}"
    url = sqlite_url(folder, f"{name}.db")
    spec = _spec(method, name, seed, trials)
    if method.engine == "plain-optuna":
        _plain_optuna(spec, url, seed)
    else:
        options_type = ENGINES[method.engine].options
        extra = {"max_trials": trials} if method.engine == "optuna" else {}  # grid stops at 100 points
        load_engine(method.engine).run(spec, url, options_type(quiet=True, **extra))
    found = _read(url, name)
    if method.recheck:
        from marstune.tuning.search.recheck import recheck

        done = recheck(url, name, RECHECK_K, EPOCHS, folder / name)
        found.exported_override = done[0].config
        found.extra = (RECHECK_K * EPOCHS, sum(_charged(c.config, EPOCHS, None) for c in done))
    return found


_REPLAY: list[Any] = []


def replay() -> Any:
    if not _REPLAY:
        from marstune.tuning.search.replay import Replay

        _REPLAY.append(Replay.from_json(SURROGATE))
    return _REPLAY[0]


def searched(params: dict[str, Any]) -> dict[str, Any]:
    return {f["param"]: params[f["param"]] for f in replay().features}


def true_score(params: dict[str, Any]) -> float:
    return float(replay().mean_curve(searched(params))[-1])


def _charged(params: dict[str, Any], epochs: int, recorded: float | None) -> float:
    """The trial's charged seconds; a trial stopped from outside (Ray's ASHA) never stored its own, so
    it is charged the surrogate's typical seconds of the epochs it ran."""
    if recorded is not None:
        return float(recorded)
    return float(replay().mean_seconds(searched(params))[:epochs].sum())


def _read(url: str, name: str) -> Run:
    from optuna.trial import TrialState

    from marstune.tuning.study.storage import open_storage

    storage = open_storage(url)
    trials = sorted(storage.get_all_trials(storage.get_study_id_from_name(name)), key=lambda t: t.number)
    run = Run()
    for t in trials:
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED) or not t.params:
            continue
        epochs = len(t.intermediate_values)
        run.params.append(dict(t.params))
        run.values.append(t.value if t.state == TrialState.COMPLETE else None)
        run.epochs.append(epochs)
        run.seconds.append(_charged(t.params, epochs, t.user_attrs.get("compute_seconds")))
    storage.engine.dispose()
    return run


def reach(run: Run, target: float) -> tuple[int, float] | None:
    """(epochs, seconds) until the held configuration's true score first reaches `target`."""
    epochs = seconds = 0.0
    for i, held in enumerate(run.held()):
        epochs, seconds = epochs + run.epochs[i], seconds + run.seconds[i]
        if held is not None and true_score(held) >= target:
            return int(epochs), seconds
    if run.exported_override is not None and true_score(run.exported_override) >= target:
        return int(epochs) + run.extra[0], seconds + run.extra[1]
    return None


def exported(run: Run) -> float:
    held = run.exported_override or run.held()[-1]
    return true_score(held) if held is not None else 0.0


def fixed_target() -> float:
    import json

    import numpy as np

    configs = json.loads(CURVES.read_text())["configs"]
    return float(np.percentile([true_score(c["params"]) for c in configs], 95))


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """Median and interquartile range; an unreached seed counts as infinite compute."""
    import numpy as np

    # Rank-based quartiles: interpolating between two infinite values would give NaN.
    low, high = np.percentile(values, [25, 75], method="inverted_cdf")
    return float(low), statistics.median(values), float(high)


def slow(method: Method) -> bool:
    """Minutes a 100-trial study rather than seconds: Keras Tuner's BayesianOptimization refits its GP
    on every trial, Ray starts a cluster per study, Optuna's GP fits with torch."""
    return method.engine in ("ray", "keras-tuner") or method.sampler == "gp"


def _run_all(
    chosen: list[Method], seeds: dict[str, list[int]], trials: int, jobs: int
) -> dict[str, list[Run]]:
    """Every method over its seeds, `jobs` studies at once (each its own process and database)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    runs: dict[tuple[str, int], Run] = {}
    started = time.perf_counter()
    with workdir("search") as folder:
        if jobs <= 1:
            for method in chosen:
                for seed in seeds[method.label]:
                    runs[method.label, seed] = run_method(method, seed, trials, folder)
                say(f"  ran {method.label}: {time.perf_counter() - started:.0f} s so far")
        else:
            # spawn: Ray and TensorFlow do not survive a fork; the slowest methods start first.
            order = sorted(chosen, key=lambda m: (not slow(m), m.label))
            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {
                    (m.label, seed): pool.submit(run_method, m, seed, trials, folder)
                    for m in order
                    for seed in seeds[m.label]
                }
                for key, future in futures.items():
                    runs[key] = future.result()
            say(f"  ran {len(runs)} studies in {time.perf_counter() - started:.0f} s ({jobs} at once)")
    return {m.label: [runs[m.label, seed] for seed in seeds[m.label]] for m in chosen}


def run(
    quick: bool = False,
    seeds: int = SEEDS,
    only: Callable[[Method], bool] | None = None,
    jobs: int = 2,
    trials: int = TRIALS,
    slow_seeds: int | None = None,
) -> Outcome:
    from bench.search_figure import anytime, anytime_png, worst_gap

    seed_list = list(range(1 if quick else seeds))
    trials, jobs = (6, 1) if quick else (trials, jobs)
    chosen = [m for m in methods() if only is None or only(m) or m.ours or m.label in (RANDOM, PLAIN_TPE)]
    if quick:
        chosen = [m for m in chosen if m.engine in ("optuna", "plain-optuna")]
    target = fixed_target()
    section("TARGET 1: search efficiency on replayed real learning curves")
    say(
        f"task: the recorded curves of our space ({CURVES.relative_to(REPO)}), replayed by "
        f"{SURROGATE.relative_to(REPO)} through the real engines; {trials} trials a study, seeds {seed_list}",
        f"fixed target: last-epoch mIoU {target:.4f} (95th percentile over the recorded design)",
    )
    few = list(range(min(slow_seeds or seeds, len(seed_list))))
    per_method = {m.label: few if slow(m) else seed_list for m in chosen}
    if few != seed_list:
        say(f"the slow methods ({', '.join(m.label for m in chosen if slow(m))}) over seeds {few} only")
    results = _run_all(chosen, per_method, trials, jobs)
    rows = _table(results, target, trials)
    for label, runs in results.items():  # does the re-check help? the same runs, export without and with
        pairs = [
            (true_score(r.held()[-1]), true_score(r.exported_override)) for r in runs if r.exported_override
        ]
        if pairs:
            before, after = (statistics.median(side) for side in zip(*pairs, strict=True))
            better, worse = sum(a > b + 1e-12 for b, a in pairs), sum(a < b - 1e-12 for b, a in pairs)
            say(
                f"{label}: true last-epoch mIoU of the export, medians: {before:.4f} without the re-check, "
                f"{after:.4f} with it; better in {better} of {len(pairs)} seeds, worse in {worse}"
            )
    curves = anytime(results, true_score)
    if len(seed_list) >= SEEDS and trials >= TRIALS:  # the README's figure only from a full-size run
        anytime_png(curves, target, FIGURE)
        say(f"anytime figure: {FIGURE.relative_to(REPO)}")
    ours = next(m.label for m in chosen if m.ours)
    mine = rows[ours]["seconds"][1]

    def fewer(label: str) -> float:
        """How many times less compute (recorded seconds, medians) ours needs than `label`."""
        theirs = rows.get(label, {}).get("seconds", (0, math.nan, 0))[1]
        if not math.isfinite(mine):
            return 0.0
        return math.inf if not math.isfinite(theirs) else theirs / mine

    vs_random, vs_tpe = fewer(RANDOM), fewer(PLAIN_TPE)
    gap = worst_gap(curves, ours)
    peers = {label: row["seconds"][1] for label, row in rows.items() if label != ours}
    best_peer = min(peers, key=lambda label: peers[label])
    say(f"best other method to the target: {best_peer} ({peers[best_peer] / 60:.1f} CPU-min, median)")
    say(
        f"our default: {vs_random:.2f}x less compute to the target than random search (target >= 3x), "
        f"{vs_tpe:.2f}x less than Optuna's out-of-the-box TPE (target >= 1.5x); at worst "
        f"{gap:.0%} behind the best other method's median anytime score (target <= 10%)"
    )
    met = vs_random >= 3.0 and (vs_tpe >= 1.5 or PLAIN_TPE not in rows) and gap <= 0.10
    return Outcome(
        1,
        "search on replayed real curves",
        f"{vs_random:.2f}x vs random, {vs_tpe:.2f}x vs TPE, {gap:.0%} behind",
        ">= 3x, >= 1.5x, <= 10%",
        met,
        "the figures come from the replayed recorded curves; if another method wins, the evidence says "
        "to change the default (see the table above)",
    )


def _table(results: dict[str, list[Run]], target: float, trials: int) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    head = f"{'method':<52} {'reached':>7} {'epochs to target':>22} {'CPU-min to target':>24}"
    say("", f"{head} {'exported':>9}")
    for label, runs in results.items():
        found = [reach(r, target) for r in runs]
        epochs = [f[0] if f else math.inf for f in found]
        seconds = [f[1] if f else math.inf for f in found]
        e, s = quartiles(epochs), quartiles(seconds)
        rows[label] = {"epochs": e, "seconds": s}
        out = statistics.median(exported(r) for r in runs)
        say(
            f"{label:<52} {sum(f is not None for f in found):>3}/{len(runs):<3} "
            f"{e[1]:>7.0f} [{e[0]:>5.0f}-{e[2]:>5.0f}] "
            f"{s[1] / 60:>8.1f} [{s[0] / 60:>6.1f}-{s[2] / 60:>6.1f}] {out:>9.4f}"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench search", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds", type=positive_int, default=SEEDS, help=f"seeds per method (default {SEEDS})"
    )
    parser.add_argument("--only", default="", help="run only methods whose label contains this (and ours)")
    parser.add_argument(
        "--trials", type=positive_int, default=TRIALS, help=f"trials a study (default {TRIALS})"
    )
    parser.add_argument(
        "--jobs", type=positive_int, default=2, help="studies at once (default 2: one a core)"
    )
    parser.add_argument("--slow-seeds", type=positive_int, help="fewer seeds for Ray, Keras Tuner and GP")
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes, not the figures")
    args = parser.parse_args(argv)
    only = (lambda m: args.only.lower() in m.label.lower()) if args.only else None
    outcome = run(args.quick, args.seeds, only, args.jobs, args.trials, args.slow_seeds)
    say(outcome.line())
    return 0 if outcome.met else 1


if __name__ == "__main__":
    sys.exit(main())
