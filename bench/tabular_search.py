"""`python -m bench tabular`: search efficiency on the tabular benchmark, per seed, into search.csv.

The task: the recorded runs of bench/curves/runs.csv (`python -m bench record`), no surrogate in
between. The space is the grid (every parameter a categorical over its recorded values); a trial of
configuration c replays one of c's recorded replicates (`objective.kind: replay` with the table,
tuning/search/table.py): that run's own validation mIoU epoch by epoch, charged that run's CPU seconds.

Each study runs the service's own search pieces in one process on an in-memory Optuna study: the
sampler and pruner factories of `tune run` (tuning/search/samplers.py), its redraw after a duplicate,
its duplicate test (study/lifecycle.duplicates_of), its space -> suggestion mapping and its objective
(`evaluate`: pruning and early stopping as a trained trial does). Every method gets the same rules
unless its name says otherwise: the baseline trial first, and a drawn configuration the study already
ran is not run again (not charged; the next draw is random), as `tune run` does. A study runs until
its charged CPU seconds pass the largest budget (or the grid is exhausted); budgets are applied
afterwards by cutting each study's trials at the budget, so all budgets come from the same studies.

Per (method, seed, trial) it writes bench/results/search.csv: cumulative CPU seconds, the configuration
`tune export-best` would export then (the completed trial with the best observed value: its config_id,
the replicate it replayed and the epoch its kept model comes from: the best validation epoch it ran),
and the two true scores: config_score = mean test mIoU of the configuration's replicates at the last
recorded epoch (what the final run trains), kept_score = that very run's test mIoU at the kept epoch
(what export-best ships). For the methods with a re-check (`export-best --recheck K`), each row is what
stopping after that trial and re-checking would give: the re-check's winner, and the seconds include
the re-check's K full runs. `python -m bench tabular-stats` turns the file into the tables.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import REPO, make_spec, positive_int, refuse_same_file, say
from bench.grid import RUNS_FILE

RESULTS = REPO / "bench" / "results" / "search.csv"
SEEDS = 200
MAX_BUDGET_RUNS = 32  # the largest budget, in full 12-epoch runs of the grid's average cost
COLUMNS = (
    "method",
    "seed",
    "trial",
    "cpu_seconds",
    "config_id",
    "replicate",
    "kept_epoch",
    "config_score",
    "kept_score",
)


@dataclass(frozen=True)
class Method:
    name: str
    sampler: str  # a `tune run` sampler; "plain-tpe": Optuna's TPESampler() with its own defaults
    pruner: str = "none"
    patience: int = 0
    epochs: int | None = None  # None: every recorded epoch
    baseline: bool = True  # the baseline trial first, as `tune run` does
    skip_duplicates: bool = True  # False: a repeated configuration is run again (a fresh replicate), charged
    startup: int | None = None  # TPE's startup trials, when not the service's
    recheck: int = 0  # export-best --recheck K: the top K re-trained for every recorded epoch, charged


def methods() -> list[Method]:
    """Random search and the peers, our default, and one ablation row per part of the default."""
    from marstune.tuning.config.spec import DEFAULTS

    search, train = DEFAULTS["search"], DEFAULTS["train"]
    ours = Method(
        f"default: {search['sampler']} + {search['pruner']}, patience {train['patience']}, "
        f"{train['epochs']} epochs",
        search["sampler"],
        search["pruner"],
        train["patience"],
        train["epochs"],
    )
    return [
        Method("random, full budget", "random"),
        ours,
        dataclasses.replace(ours, name="ablation: no baseline trial", baseline=False),
        dataclasses.replace(ours, name="ablation: 10 startup trials (Optuna's), not 5", startup=10),
        dataclasses.replace(ours, name="ablation: no pruner", pruner="none"),
        dataclasses.replace(ours, name="ablation: no patience", patience=0),
        dataclasses.replace(ours, name="ablation: all epochs", epochs=None),
        dataclasses.replace(ours, name="ablation: repeats run again", skip_duplicates=False),
        dataclasses.replace(ours, name="default + re-check top 3 (export-best --recheck 3)", recheck=3),
        Method(
            "tpe + median, 4 epochs + re-check top 3",
            search["sampler"],
            search["pruner"],
            epochs=4,
            recheck=3,
        ),
        Method("tpe, full budget", "tpe"),
        Method(f"tpe + hyperband, patience {train['patience']}", "tpe", "hyperband", train["patience"]),
        Method("random + hyperband", "random", "hyperband"),
        Method("qmc (sobol), full budget", "qmc"),
        Method("cma-es, full budget", "cmaes"),
        Method(
            "Optuna TPE as it comes (no baseline, repeats run again)",
            "plain-tpe",
            baseline=False,
            skip_duplicates=False,
        ),
        Method(
            "uniform sampling as it comes (no baseline, repeats run again)",
            "random",
            baseline=False,
            skip_duplicates=False,
        ),
    ]


@dataclass(frozen=True)
class TrialRow:
    trial: int
    cpu_seconds: float
    config_id: str
    replicate: int | None
    kept_epoch: int | None
    config_score: float
    kept_score: float


def table_spec(method: Method, table: Any, table_path: Path, seed: int, trials: int | None = None) -> Any:
    """The study's spec: the grid as the space, the table as the objective, the method's settings.
    `trials` matters to the real engine only (default: the grid's size); this driver stops on compute."""
    space = {f["param"]: {"type": "categorical", "choices": list(f["choices"])} for f in table.features}
    base = baseline_config_for({f["param"]: list(f["choices"]) for f in table.features})
    return make_spec(
        f"tabular-{seed}",
        {
            "space": space,
            "baseline": base,
            "objective": {"kind": "replay", "surrogate": str(table_path)},
            "train": {"epochs": method.epochs or table.epochs, "patience": method.patience, "seed": seed},
            "search": {
                "sampler": "tpe" if method.sampler == "plain-tpe" else method.sampler,
                "pruner": method.pruner,
                "trials": trials or math.prod(len(f["choices"]) for f in table.features),
                "keep_models": 0,  # nothing is trained: no model to keep
            },
        },
    )


def baseline_config_for(values: dict[str, list[Any]]) -> dict[str, Any]:
    """The seed's baseline where the grid holds its values; else the grid's first value."""
    from marstune.tuning.config.spec import DEFAULTS

    seed = {**DEFAULTS["baseline"], "loss": DEFAULTS["loss"]["name"]}
    return {k: (seed[k] if seed.get(k) in v else v[0]) for k, v in values.items()}


def _sampler(method: Method, seed: int) -> Any:
    import optuna

    from marstune.tuning.search.redraw import RedrawSampler
    from marstune.tuning.search.samplers import make_sampler

    if method.sampler == "plain-tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if method.startup is not None:
        inner = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=method.startup)
    else:
        inner = make_sampler(method.sampler, seed)
    return RedrawSampler(inner, seed) if method.skip_duplicates else inner


def _kept_epoch(log: list[dict[str, float]]) -> int:
    """The epoch whose weights a completed trial keeps: its first best validation mIoU (1-based)."""
    values = [row["val_miou"] for row in log]
    return values.index(max(values)) + 1


class Recheck:
    """`tune export-best --recheck K` after any trial: the K best completed distinct configurations
    trained again for every recorded epoch, no pruning or early stopping, through the same objective
    and trial numbers (tuning/search/recheck.py), the best re-checked one exported. Each candidate's
    re-check is replayed once and remembered."""

    def __init__(self, k: int, spec: Any, epochs: int) -> None:
        self.k = k
        self.spec = dataclasses.replace(
            spec, train=spec.train.model_copy(update={"epochs": epochs, "patience": 0})
        )
        self.done: list[tuple[float, int, dict[str, Any]]] = []  # (search value, trial number, config)
        self.rechecked: dict[int, tuple[float, float, tuple[str, int, int]]] = {}

    def completed(self, number: int, value: float, config: dict[str, Any]) -> None:
        self.done.append((value, number, config))

    def winner(self) -> tuple[tuple[str, int, int], float]:
        """(config_id, replicate, kept epoch) of the export, and the re-check's charged seconds."""
        from marstune.tuning.search.objective import TrialContext, evaluate

        top: list[tuple[float, int, dict[str, Any]]] = []
        for value, number, config in sorted(self.done, key=lambda c: (-c[0], c[1])):
            if all(config != c for _, _, c in top):
                top.append((value, number, config))
            if len(top) == self.k:
                break
        for _, number, config in top:
            if number not in self.rechecked:
                ctx = TrialContext(number, lambda epoch, value: False)
                value = evaluate(config, self.spec, ctx)
                run = ctx.attrs["replayed"]
                kept = (run["config_id"], run["replicate"], _kept_epoch(ctx.attrs["epoch_log"]))
                self.rechecked[number] = (value, float(ctx.attrs["compute_seconds"]), kept)
        # the service's order: best re-check value first, then the better search value
        best = min(top, key=lambda c: (-self.rechecked[c[1]][0], -c[0]))
        return self.rechecked[best[1]][2], sum(self.rechecked[n][1] for _, n, _ in top)


def run_study(method: Method, seed: int, table: Any, table_path: Path, budget: float) -> list[TrialRow]:
    """One study until its charged seconds pass `budget` (or the grid is exhausted)."""
    import optuna
    from optuna.trial import TrialState

    from marstune.tuning.errors import Pruned
    from marstune.tuning.search.engines.optuna_engine import MAX_DUPLICATES_IN_A_ROW
    from marstune.tuning.search.engines.optuna_trial import suggest
    from marstune.tuning.search.objective import TrialContext, evaluate
    from marstune.tuning.search.samplers import make_pruner
    from marstune.tuning.study import lifecycle

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = table_spec(method, table, table_path, seed)
    sampler = _sampler(method, seed)
    pruner = optuna.pruners.NopPruner() if method.sampler == "plain-tpe" else make_pruner(method.pruner)
    # Named as `tune run` names it: Hyperband assigns a trial's bracket from the study's name and the
    # trial's number, so an unnamed (random-named) study would not replay the same way twice.
    study = optuna.create_study(study_name=spec.study, direction="maximize", sampler=sampler, pruner=pruner)
    if method.baseline:
        for params in lifecycle.initial_trials(spec):
            study.enqueue_trial(params, user_attrs={lifecycle.ENQUEUED_AS: "baseline"})
    rows: list[TrialRow] = []
    spent, best_value, held, duplicates = 0.0, -math.inf, None, 0
    check = Recheck(method.recheck, spec, table.epochs) if method.recheck else None
    while spent < budget and duplicates < MAX_DUPLICATES_IN_A_ROW and len(rows) < 10_000:
        trial = study.ask()
        params = suggest(trial, spec.space)
        queued = lifecycle.ENQUEUED_AS in trial.user_attrs
        repeat = not queued and lifecycle.duplicates_of(study, params, trial.number) is not None
        if method.skip_duplicates and repeat:
            study.tell(trial, state=TrialState.FAIL)
            sampler.redraw = True  # the service's rule: the next draw is random
            duplicates += 1
            continue
        if method.skip_duplicates:
            sampler.redraw = False
        duplicates = 0

        def report(epoch: int, value: float, trial: optuna.Trial = trial) -> bool:
            trial.report(value, epoch)
            return trial.should_prune()

        ctx = TrialContext(trial.number, report)
        try:
            value = evaluate(spec.config_for(params), spec, ctx)
            study.tell(trial, value)
            if check:
                check.completed(trial.number, value, spec.config_for(params))
            if value > best_value:  # what export-best exports: the best completed trial
                run = ctx.attrs["replayed"]
                best_value = value
                held = (run["config_id"], run["replicate"], _kept_epoch(ctx.attrs["epoch_log"]))
        except Pruned:
            study.tell(trial, state=TrialState.PRUNED)
        spent += float(ctx.attrs["compute_seconds"])
        extra = 0.0
        if check and held is not None:  # stopped here, export-best would re-check and ship the winner
            held, extra = check.winner()
        if held is None:
            rows.append(TrialRow(len(rows) + 1, spent, "", None, None, math.nan, math.nan))
        else:
            cid, replicate, epoch = held
            rows.append(
                TrialRow(
                    len(rows) + 1,
                    spent + extra,
                    cid,
                    replicate,
                    epoch,
                    table.score(cid),
                    table.kept_score(cid, replicate, epoch),
                )
            )
    return rows


def full_run_seconds(table: Any) -> float:
    """The grid's average cost of one run over every recorded epoch: the budgets' unit."""
    runs = [r for runs in table.runs.values() for r in runs]
    return float(sum(r.seconds.sum() for r in runs) / len(runs))


def _one(args: tuple[Method, int, str, float]) -> tuple[str, int, list[TrialRow]]:
    method, seed, table_path, budget = args
    from marstune.tuning.search.objective import _surrogate  # noqa: PLC2701 - the objective's own cache

    table = _surrogate(table_path)
    return method.name, seed, run_study(method, seed, table, Path(table_path), budget)


def run_all(
    chosen: list[Method], seeds: list[int], table_path: Path, budget: float, jobs: int
) -> Iterator[tuple[str, int, list[TrialRow]]]:
    work = [(m, s, str(table_path), budget) for m in chosen for s in seeds]
    if jobs <= 1:
        yield from map(_one, work)
        return
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        yield from pool.imap(_one, work, chunksize=8)


def write_results(path: Path, results: list[tuple[str, int, list[TrialRow]]]) -> None:
    """search.csv, whole: written beside and renamed over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temp.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for name, seed, rows in results:
            for r in rows:
                writer.writerow(
                    [
                        name,
                        seed,
                        r.trial,
                        f"{r.cpu_seconds:.3f}",
                        r.config_id,
                        "" if r.replicate is None else r.replicate,
                        "" if r.kept_epoch is None else r.kept_epoch,
                        "" if math.isnan(r.config_score) else f"{r.config_score:.5f}",
                        "" if math.isnan(r.kept_score) else f"{r.kept_score:.5f}",
                    ]
                )
    os.replace(temp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench tabular", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=Path, default=RUNS_FILE, help="the recorded table (default: %(default)s)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="per-seed results (default: %(default)s)")
    parser.add_argument(
        "--seeds", type=positive_int, default=SEEDS, help=f"seeds per method (default {SEEDS})"
    )
    parser.add_argument(
        "--budget",
        type=positive_int,
        default=MAX_BUDGET_RUNS,
        help=f"each study's compute, in full runs of the grid's average cost (default {MAX_BUDGET_RUNS})",
    )
    parser.add_argument("--only", default="", help="only methods whose name contains this")
    parser.add_argument("--jobs", type=positive_int, default=1, help="studies at once (default 1)")
    args = parser.parse_args(argv)
    refuse_same_file(args.out, "--out", (args.runs, "--runs table"))
    if args.out.exists() and args.out.is_dir():
        raise SystemExit(f"error: --out {args.out} is a folder; give a .csv file path")
    from marstune.tuning.search.table import TableReplay

    table = TableReplay.from_csv(args.runs)
    unit = full_run_seconds(table)
    budget = args.budget * unit
    chosen = [m for m in methods() if args.only.lower() in m.name.lower()]
    if not chosen:
        raise SystemExit(f"error: --only {args.only!r} matches no method; see the names in --help's module")
    recorded = sum(len(r) for r in table.runs.values())
    say(
        f"task: {args.runs} ({len(table.runs)} configurations, {recorded} runs, {table.epochs} epochs); "
        f"a full run costs {unit / 60:.2f} CPU-min on average; each study runs to {args.budget} full "
        f"runs ({budget / 60:.1f} CPU-min); {len(chosen)} methods x {args.seeds} seeds"
    )
    started = time.perf_counter()
    results = []
    for k, found in enumerate(run_all(chosen, list(range(args.seeds)), args.runs, budget, args.jobs), 1):
        results.append(found)
        if k % args.seeds == 0:
            say(f"  {found[0]}: {args.seeds} seeds done ({time.perf_counter() - started:.0f} s so far)")
    write_results(args.out, results)
    say(f"wrote {args.out} ({sum(len(r) for _, _, r in results)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
