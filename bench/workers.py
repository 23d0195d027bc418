"""Local workers: 1 process x 2 threads vs `tune run --workers 2` (2 processes x 1 thread), and the
service's per-trial overhead on SQLite and on PostgreSQL.

Every trial trains the same small real U-Net (levels 2, base_filters 8) for 2 epochs on 120 synthetic
pairs: the space is `dropout` only, so all trials cost the same. Studies run through the real CLI, in
the order A B B A (A = 1 x 2 threads, B = --workers 2) so that a drift in machine load hits both alike;
the ratio is B's trials/hour over A's, from the same run. Rates are measured from the database:
first trial start to last trial end (steady state), and also end to end (process start-up included).

Overhead per trial, from each trial's user attributes and timestamps:
  wall - train    = wall_seconds - train_seconds: model build, compile, data pipeline, attrs
  db span - train = (datetime_complete - datetime_start) - train_seconds: the above plus ask/tell writes
  gap             = next trial's start - this trial's end in one process: claim, counts, ask

    .venv/bin/python -m bench.workers            # ~5 min on 2 idle cores
    .venv/bin/python -m bench.workers --trials 4 # quicker, noisier
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import yaml

from bench._common import child_env, machine_state, postgres_database, run_tune, say, section, workdir

CONFIG = {"base_filters": 8, "levels": 2, "kernel": 3, "dropout": 0.2, "activation": "relu"}


def write_spec(folder: Path, study: str, trials: int) -> Path:
    raw = {
        "study": study,
        "space": {"dropout": {"type": "float", "low": 0.0, "high": 0.5}},
        "baseline": CONFIG,
        "train": {"epochs": 2, "max_items": 120, "batch_size": 16, "patience": 0},
        "data": {"synthetic_items": 120},
        "search": {"sampler": "random", "pruner": "none", "trials": trials},
    }
    path = folder / f"{study}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def measure(url: str, study: str, wall: float) -> dict[str, Any]:
    """Rates and overheads of one finished study, read back from its storage."""
    import optuna
    from optuna.trial import TrialState

    from marstune.tuning.study.storage import open_storage

    storage = open_storage(url)
    trials = [
        t
        for t in optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE
    ]
    storage.engine.dispose()
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    gaps = []
    by_worker: dict[str, list[Any]] = {}
    for t in trials:
        by_worker.setdefault(t.user_attrs["worker"], []).append(t)
    for mine in by_worker.values():
        mine.sort(key=lambda t: t.datetime_start)
        pairs = zip(mine, mine[1:], strict=False)
        gaps += [(b.datetime_start - a.datetime_complete).total_seconds() for a, b in pairs]
    train = [t.user_attrs["train_seconds"] for t in trials]
    return {
        "n": len(trials),
        "steady_per_hour": 3600 * len(trials) / span,
        "wall_per_hour": 3600 * len(trials) / wall,
        "train": statistics.median(train),
        "wall_minus_train": statistics.median(
            t.user_attrs["wall_seconds"] - t.user_attrs["train_seconds"] for t in trials
        ),
        "span_minus_train": statistics.median(
            (t.datetime_complete - t.datetime_start).total_seconds() - t.user_attrs["train_seconds"]
            for t in trials
        ),
        "gap": statistics.median(gaps) if gaps else float("nan"),
    }


def one_study(folder: Path, url: str, study: str, trials: int, workers: int) -> dict[str, Any]:
    spec = write_spec(folder, study, trials)
    args = ["run", "--spec", str(spec), "--storage", url, "--quiet"]
    args += ["--threads", "2"] if workers == 1 else ["--workers", str(workers)]
    seconds, _ = run_tune(args, cwd=folder, env=child_env())
    result = measure(url, study, seconds)
    label = "1 process x 2 threads" if workers == 1 else f"{workers} processes x 1 thread"
    say(
        f"  {study:<10} {label:<22} {result['n']} trials: {result['steady_per_hour']:7.0f}/h steady, "
        f"{result['wall_per_hour']:7.0f}/h end to end ({seconds:.0f}s); train {result['train']:.2f}s/trial"
    )
    return result


def overhead_line(name: str, runs: list[dict[str, Any]]) -> str:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    return (
        f"  {name:<10} wall - train {med('wall_minus_train'):.3f}s, db span - train "
        f"{med('span_minus_train'):.3f}s, gap between trials {med('gap'):.3f}s (training {med('train'):.2f}s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per study (default 8)")
    trials = parser.parse_args().trials
    section("local workers: 1 x 2 threads vs --workers 2 (2 x 1 thread), real U-Net trials")
    say(f"  machine: {machine_state()}")
    one, two = [], []
    with workdir("workers") as folder:
        for k, workers in enumerate((1, 2, 2, 1)):  # A B B A
            url = f"sqlite:///{folder / f'run{k}.db'}"
            (one if workers == 1 else two).append(one_study(folder, url, f"run{k}", trials, workers))
        with postgres_database() as pg_url:
            pg = [one_study(folder, pg_url, "pg", trials, 1)]
    steady = statistics.mean(r["steady_per_hour"] for r in two) / statistics.mean(
        r["steady_per_hour"] for r in one
    )
    wall = statistics.mean(r["wall_per_hour"] for r in two) / statistics.mean(r["wall_per_hour"] for r in one)
    section("result")
    say(f"  --workers 2 vs 1 x 2 threads: {steady:.2f}x trials/hour steady, {wall:.2f}x end to end")
    say("  per-trial overhead of the service (medians):")
    say(overhead_line("sqlite", one), overhead_line("postgresql", pg))  # both 1 process x 2 threads
    say(f"  machine after: {machine_state()} (shared: other jobs' load skews both sides)")


if __name__ == "__main__":
    main()
