"""Which local worker processes to start: how many, threads each, which GPU each.

Small models train faster as several single-threaded processes than as one multi-threaded one, so
threads are split (K x threads <= cores); on a GPU machine each child sees its own GPU through
CUDA_VISIBLE_DEVICES. GPUs are detected without importing TensorFlow (which would take them here).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from marstune.tuning.errors import UsageError
from marstune.tuning.study.urls import STORAGE_ENV
from marstune.tuning.train.devices import choose_threads, visible_gpus_for


@dataclass(frozen=True)
class WorkerPlan:
    index: int
    threads: int
    gpus: str | None  # CUDA_VISIBLE_DEVICES for this child; None = leave the environment alone (no GPU)


def detect_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """GPU ids usable here, without importing TensorFlow (which would take the GPUs in the parent).

    CUDA_VISIBLE_DEVICES, when set, is the list (its ids are what children must be given); otherwise
    `nvidia-smi -L` counts the GPUs; no nvidia-smi means no GPU.
    """
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    exe = shutil.which("nvidia-smi", path=env.get("PATH"))
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [str(i) for i, _ in enumerate(x for x in out.stdout.splitlines() if x.startswith("GPU "))]


def default_workers(gpu_ids: Sequence[str]) -> int:
    """One worker per GPU on a machine with several; otherwise one worker."""
    return len(gpu_ids) if len(gpu_ids) > 1 else 1


def local_plan(
    workers: int | None, threads: int, engine: str, *, recycle: bool = False
) -> list[WorkerPlan] | None:
    """The children `tune run` should start, or None to run in this process.

    One worker runs in this process unless it is to be recycled (trials that train Keras models and
    `search.trials_per_process` > 0): then it is one child, replaced by a fresh one every few trials.
    """
    if engine != "optuna":
        if workers is not None and workers > 1:
            raise UsageError(f"--workers runs Optuna workers; the {engine} engine schedules its own trials")
        return None
    gpu_ids = detect_gpus()
    count = default_workers(gpu_ids) if workers is None else workers
    return plan_workers(count, threads, gpu_ids) if count > 1 or recycle else None


# Each worker is a process with its own Python and TensorFlow (~0.5 GB): a few per core keep an analytic
# or I/O-bound study busy; past this many a typo (`--workers 100000`) would fork the machine to a halt.
MAX_WORKERS_PER_CORE = 8


def plan_workers(
    workers: int, threads: int, gpu_ids: Sequence[str], cores: int | None = None
) -> list[WorkerPlan]:
    """Threads and GPUs of each child: K x threads <= cores unless --threads says otherwise."""
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    cores = cores or os.cpu_count() or 1
    most = max(MAX_WORKERS_PER_CORE * cores, len(gpu_ids))
    if workers > most:
        raise UsageError(
            f"--workers {workers}: at most {most} on this machine ({MAX_WORKERS_PER_CORE} per CPU core, "
            f"{cores} cores; each worker is a process of its own); for more, start `tune worker` on other "
            "machines against the same --storage"
        )
    per_worker = choose_threads(threads, workers, cores)
    plans = []
    for k in range(workers):
        gpus = None
        if gpu_ids:
            slots = visible_gpus_for(k, len(gpu_ids)).split(",")
            gpus = ",".join(gpu_ids[int(i)] for i in slots)
        plans.append(WorkerPlan(k, per_worker, gpus))
    return plans


def child_env(plan: WorkerPlan, storage_url: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: the storage URL goes here, not in argv (`ps` shows argv and the URL may
    hold a password); its threads and GPU."""
    env = dict(os.environ if base is None else base)
    env[STORAGE_ENV] = storage_url
    env.setdefault("OMP_NUM_THREADS", str(plan.threads))  # numpy/oneDNN pools obey the same split
    if plan.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = plan.gpus
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    return env
