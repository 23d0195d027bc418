"""Target 3: a worker's memory does not grow with the number of trials it has run.

A real `tune worker` (started as a user would, on a study created here) runs trials of varied small
configs, one epoch each on a few dozen synthetic images. From outside, the benchmark polls the study's
finished-trial count and /proc of the worker and every process under it, and records the peak memory
of the whole tree: the most, at any poll, of the live processes' peak RSS (VmHWM) added up. It runs
twice, side by side: as shipped (`search.trials_per_process`: a fresh worker process every few trials)
and with every trial in one process (`trials_per_process: 0`), the reference that shows the growth.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._common import (
    Outcome,
    at_most,
    child_env,
    make_spec,
    proc_memory_mb,
    say,
    section,
    sqlite_url,
    workdir,
)
from marstune.tuning.config.spec import DEFAULTS

# Varied small configs: every parameter moves, models stay small enough for 1-epoch trials on CPU.
SPACE = {
    "base_filters": {"type": "categorical", "choices": [8, 16]},
    "levels": {"type": "int", "low": 2, "high": 4},
    "kernel": {"type": "categorical", "choices": [3, 5]},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "activation": {"type": "categorical", "choices": ["relu", "elu", "gelu", "swish"]},
}
# Trial 0 is the space's largest model, so the peak that depends on model size is reached early and a
# later rise of the peak means memory kept from earlier trials, not a bigger config.
BASELINE = {"base_filters": 16, "levels": 4, "kernel": 5, "dropout": 0.5, "activation": "gelu"}
QUICK_SPACE = {"activation": SPACE["activation"], "dropout": SPACE["dropout"]}  # smoke test: tiny models
QUICK_BASELINE = {**BASELINE, "base_filters": 8, "levels": 2, "kernel": 3}


def _finished(db: Path) -> int:
    """Finished trials, read with plain sqlite3 (no Optuna, no SQLAlchemy in the measuring process)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED', 'FAIL')")
            return int(row.fetchone()[0])
    except sqlite3.Error:
        return 0


def _tree(pid: int) -> list[int]:
    """The process and its live descendants (a recycling worker's children come and go)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def _tree_peak_mb(pid: int) -> tuple[float, float]:
    """(sum of VmHWM, sum of VmRSS) over the live tree; processes that vanish mid-read are skipped."""
    peak = now = 0.0
    for member in _tree(pid):
        try:
            memory = proc_memory_mb(member)
        except (FileNotFoundError, ProcessLookupError, KeyError):
            continue
        peak, now = peak + memory.get("VmHWM", 0.0), now + memory.get("VmRSS", 0.0)
    return peak, now


def _measure(spec: Any, label: str, trials: int, early: int) -> dict[int, dict[str, float]]:
    """Run one worker to `trials` finished trials; the tree's peak and current RSS at each checkpoint."""
    from marstune.tuning.study.lifecycle import DataInfo, prepare_study

    marks: dict[int, dict[str, float]] = {}
    checkpoints = sorted({1, early, *range(10, trials + 1, 10), trials})
    say(f"-- {label}")
    with workdir("memory") as folder:
        url, db = sqlite_url(folder), folder / "bench.db"
        prepare_study(spec, url, DataInfo(source="synthetic (bench)", fingerprint=""))
        log = (folder / "worker.log").open("w")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "marstune.tuning",
                "worker",
                "--study",
                "memory",
                "--threads",
                "1",
                "--quiet",
            ],
            cwd=folder,
            env=child_env(TUNE_STORAGE=url, OMP_NUM_THREADS="1"),
            stdout=subprocess.DEVNULL,
            stderr=log,  # a file, not a pipe: a full pipe would stall the worker
        )
        try:
            started, peak, pids = time.monotonic(), 0.0, set()
            while proc.poll() is None:
                tree_peak, tree_now = _tree_peak_mb(proc.pid)
                peak, pids = max(peak, tree_peak), pids | set(_tree(proc.pid))
                done = _finished(db)
                for mark in checkpoints:
                    if done >= mark and mark not in marks:
                        marks[mark] = {"peak": peak, "now": tree_now}
                        say(
                            f"  after trial {mark:>3}: peak {peak:7.1f} MB, RSS now {tree_now:7.1f} MB, "
                            f"{len(pids)} processes so far ({time.monotonic() - started:5.0f} s)"
                        )
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        log.close()
        err = (folder / "worker.log").read_text()
        if proc.returncode != 0 or trials not in marks or early not in marks:
            raise RuntimeError(f"the worker exited {proc.returncode} after {len(marks)} marks: {err[-500:]}")
    return marks


def run(quick: bool = False) -> Outcome:
    trials, early = (4, 1) if quick else (50, 5)
    section("TARGET 3: memory of a worker over many trials")
    shipped_every = 2 if quick else DEFAULTS["search"]["trials_per_process"]  # quick: recycle once too
    results = {}
    for every in (shipped_every, 0):
        spec = make_spec(
            "memory",
            {
                "space": QUICK_SPACE if quick else SPACE,
                "train": {"epochs": 1, "max_items": 16 if quick else 48, "batch_size": 8, "threads": 1},
                "search": {
                    "sampler": "random",
                    "pruner": "none",
                    "trials": trials,
                    "trials_per_process": every,
                },
            },
            baseline=QUICK_BASELINE if quick else BASELINE,
        )
        label = (
            f"a fresh process every {every} trials (as shipped)" if every else "every trial in one process"
        )
        if every:
            say(
                f"one `tune worker`, {trials} trials of random small configs ({spec.raw['space']}), "
                f"1 epoch on {spec.train.max_items} synthetic images, 1 thread; memory of its process tree"
            )
        marks = _measure(spec, label, trials, early)
        growth = marks[trials]["peak"] / marks[early]["peak"]
        per_trial = (marks[trials]["now"] - marks[early]["now"]) / (trials - early)
        say(
            f"  peak grew {growth:.3f}x from trial {early} to trial {trials}; "
            f"RSS {per_trial:+.2f} MB per trial"
        )
        results[every] = growth
    shipped = results[shipped_every]
    say(f"in one process the peak grew {results[0]:.2f}x; recycled {shipped:.2f}x")
    return at_most(
        3,
        f"memory, worker peak after trial {trials} / after trial {early} (in one process: {results[0]:.2f}x)",
        shipped,
        1.2,
        note="TF 2.21 / Keras 3.15 leave ~40-60 MB of native memory behind per `model.fit` of a new model "
        "after clear_session, gc.collect() and malloc_trim(0); lower search.trials_per_process",
    )
