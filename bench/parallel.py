"""Target 4: trials per hour of small real U-Net configs, 2 single-threaded worker processes
(`tune run --workers 2`) vs 1 process with 2 threads (`tune run --threads 2`), through the real CLI.

The studies and their measurement are bench/workers.py's (the local-workers benchmark of the
distributed issue): the same small config in every trial, rates read back from the database, runs in
the order A B B A so that a drift in machine load hits both sides alike.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import yaml

from bench._common import Outcome, at_least, run_tune, say, section, sqlite_url, workdir


def run(quick: bool = False) -> Outcome:
    from bench import workers

    trials = 2 if quick else 8
    order = (1, 2) if quick else (1, 2, 2, 1)  # A B (B A): the full run repeats in reverse
    section("TARGET 4: parallel local workers")
    say(
        f"each study: {trials} trials of {workers.CONFIG} (only dropout varies), 2 epochs on 120 "
        "synthetic images, SQLite; `steady` = trials / (first trial start to last trial end), "
        "`end to end` = trials / command wall time (process start-up included)"
    )
    one: list[dict[str, float]] = []
    two: list[dict[str, float]] = []
    with workdir("parallel") as folder:
        for k, count in enumerate(order):
            url = sqlite_url(folder, f"run{k}.db")
            study = _quick_study if quick else workers.one_study
            (one if count == 1 else two).append(study(folder, url, f"run{k}", trials, count))
    steady = statistics.mean(r["steady_per_hour"] for r in two) / statistics.mean(
        r["steady_per_hour"] for r in one
    )
    wall = statistics.mean(r["wall_per_hour"] for r in two) / statistics.mean(r["wall_per_hour"] for r in one)
    say(f"2 processes x 1 thread vs 1 process x 2 threads: {steady:.2f}x steady, {wall:.2f}x end to end")
    return at_least(
        4,
        "parallel local workers, trials/hour of --workers 2 (2 x 1 thread) / 1 process x 2 threads, steady",
        steady,
        1.3,
        note="two single-threaded processes do not beat one two-threaded one here: check that each "
        "child really runs 1 TF thread (OMP/intra-op) and that nothing else holds a core",
    )


def _quick_study(folder: Path, url: str, study: str, trials: int, count: int) -> dict[str, Any]:
    """bench/workers.py's study at smoke-test size (16 images, 1 epoch), measured the same way."""
    from bench import workers

    spec = workers.write_spec(folder, study, trials)
    raw = yaml.safe_load(spec.read_text())
    raw["train"].update({"epochs": 1, "max_items": 16})
    raw["data"]["synthetic_items"] = 16
    spec.write_text(yaml.safe_dump(raw))
    args = ["run", "--spec", str(spec), "--storage", url, "--quiet"]
    args += ["--threads", "2"] if count == 1 else ["--workers", str(count)]
    seconds, _ = run_tune(args, cwd=folder)
    result = workers.measure(url, study, seconds)
    say(f"  {study}: {count} process(es), {result['n']} trials, {result['steady_per_hour']:.0f}/h steady")
    return result
