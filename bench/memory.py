"""Target 3: a worker's memory does not grow with the number of trials it has run.

A real `tune worker` process (started as a user would, on a study created here) runs trials of varied
small configs, one epoch each on a few dozen synthetic images. From outside, the benchmark polls the
study's finished-trial count and the worker's /proc status, and records its peak resident memory
(VmHWM) and current RSS when trial 5 and trial N have finished.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

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


def run(quick: bool = False) -> Outcome:
    from tuning.engines import _optuna as engine

    trials, early = (3, 1) if quick else (50, 5)
    section("TARGET 3: memory of a worker over many trials")
    spec = make_spec(
        "memory",
        {
            "space": QUICK_SPACE if quick else SPACE,
            "train": {"epochs": 1, "max_items": 16 if quick else 48, "batch_size": 8, "threads": 1},
            "search": {"sampler": "random", "pruner": "none", "trials": trials},
        },
        baseline=QUICK_BASELINE if quick else BASELINE,
    )
    say(
        f"one `tune worker` process, {trials} trials of random small configs ({spec.raw['space']}), "
        f"1 epoch on {spec.train.max_items} synthetic images, 1 thread; peak RSS read from /proc/<pid>/status"
    )
    marks: dict[int, dict[str, float]] = {}
    checkpoints = sorted({1, early, *range(10, trials + 1, 10), trials})
    with workdir("memory") as folder:
        url, db = sqlite_url(folder), folder / "bench.db"
        engine.create(spec, url, {"data_source": "synthetic (bench)", "data_fingerprint": ""})
        log = (folder / "worker.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "tuning", "worker", "--study", "memory", "--threads", "1", "--quiet"],
            cwd=folder,
            env=child_env(TUNE_STORAGE=url, OMP_NUM_THREADS="1"),
            stdout=subprocess.DEVNULL,
            stderr=log,  # a file, not a pipe: a full pipe would stall the worker
        )
        try:
            started = time.monotonic()
            while proc.poll() is None:
                done = _finished(db)
                for mark in checkpoints:
                    if done >= mark and mark not in marks:
                        marks[mark] = proc_memory_mb(proc.pid)
                        say(
                            f"  after trial {mark:>3}: peak RSS {marks[mark]['VmHWM']:7.1f} MB, "
                            f"RSS now {marks[mark]['VmRSS']:7.1f} MB ({time.monotonic() - started:5.0f} s)"
                        )
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        log.close()
        err = (folder / "worker.log").read_text()
        if proc.returncode != 0 or trials not in marks or early not in marks:
            raise RuntimeError(f"the worker exited {proc.returncode} after {len(marks)} marks: {err[-500:]}")
    growth = marks[trials]["VmHWM"] / marks[early]["VmHWM"]
    per_trial = (marks[trials]["VmRSS"] - marks[early]["VmRSS"]) / (trials - early)
    say(
        f"peak RSS grew {growth:.3f}x from trial {early} to trial {trials}; RSS {per_trial:+.2f} MB per trial"
    )
    return at_most(
        3,
        f"memory, worker peak RSS after trial {trials} / after trial {early}",
        growth,
        1.2,
        note=f"RSS grows {per_trial:+.2f} MB per trial. Measured cause (TF 2.21 / Keras 3.15): every "
        "`model.fit` of a new model leaves ~40-60 MB of native memory behind after the model is deleted, "
        "keras.backend.clear_session(), gc.collect() and malloc_trim(0); the eager context's function "
        "library grows by ~184 functions per fit, and removing them does not release the memory; the "
        "tf.data pipeline and the cached arrays stay flat (no Keras model stays alive). Fix: run trials "
        "in short-lived child processes (recycle a worker's TensorFlow every N trials)",
    )
