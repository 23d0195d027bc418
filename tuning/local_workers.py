"""`tune run --workers K`: K `tune worker` processes on this machine, sharing one storage.

The parent creates the study (as a plain `tune run` would), then starts K children with
`python -m tuning worker`. Small models train faster as several single-threaded processes than as one
multi-threaded one, so threads are split (K x threads <= cores); on a GPU machine each child sees its own
GPU through CUDA_VISIBLE_DEVICES. The parent forwards SIGINT/SIGTERM to the children, waits for them,
prints one summary and exits non-zero if any child failed.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from marstune.tuning.devices import choose_threads, visible_gpus_for
from marstune.tuning.errors import SpecError
from marstune.tuning.storage import STORAGE_ENV, display_url

FORWARDED = (signal.SIGINT, signal.SIGTERM)
# A worker's exit code after its `--max-trials` when the study is not done: start a fresh one in its place.
# TensorFlow keeps ~40-60 MB of every fitted model after clear_session (bench/memory.py), so a process
# that trains for hours grows by gigabytes; recycling it every few trials keeps memory flat.
RECYCLE_EXIT = 75
PARENT_ENV = "TUNE_PARENT_PID"
DEADLINE_ENV = "TUNE_DEADLINE"  # the run's end (epoch seconds): search.timeout spans recycled processes
SEED_OFFSET_ENV = "TUNE_SEED_OFFSET"  # a child's sampler seed offset (engines/_study.py: _worker_seed)


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
            raise SpecError(f"--workers runs Optuna workers; the {engine} engine schedules its own trials")
        return None
    gpu_ids = detect_gpus()
    count = default_workers(gpu_ids) if workers is None else workers
    return plan_workers(count, threads, gpu_ids) if count > 1 or recycle else None


def plan_workers(
    workers: int, threads: int, gpu_ids: Sequence[str], cores: int | None = None
) -> list[WorkerPlan]:
    """Threads and GPUs of each child: K x threads <= cores unless --threads says otherwise."""
    if workers < 1:
        raise SpecError(f"--workers must be at least 1, got {workers}")
    per_worker = choose_threads(threads, workers, cores)
    plans = []
    for k in range(workers):
        gpus = None
        if gpu_ids:
            slots = visible_gpus_for(k, len(gpu_ids)).split(",")
            gpus = ",".join(gpu_ids[int(i)] for i in slots)
        plans.append(WorkerPlan(k, per_worker, gpus))
    return plans


def child_env(
    plan: WorkerPlan,
    storage_url: str,
    base: Mapping[str, str] | None = None,
    deadline: float | None = None,
    seed_offset: int | None = None,
) -> dict[str, str]:
    """The storage URL goes in the environment, not argv: `ps` shows argv and the URL may hold a password.
    `deadline` (epoch seconds) is the run's end, the same for every child and its replacements."""
    env = dict(os.environ if base is None else base)
    env[STORAGE_ENV] = storage_url
    if deadline is not None:
        env[DEADLINE_ENV] = f"{deadline:.3f}"
    if seed_offset is not None:
        env[SEED_OFFSET_ENV] = str(seed_offset)
    env[PARENT_ENV] = str(os.getpid())  # the child stops when this process dies (die_with_parent)
    env.setdefault("OMP_NUM_THREADS", str(plan.threads))  # numpy/oneDNN pools obey the same split
    if plan.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = plan.gpus
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    return env


def child_args(
    study: str, plan: WorkerPlan, quiet: bool, data_path: str | None = None, max_trials: int = 0
) -> list[str]:
    """`tune worker --workers 1 --max-trials 0`: a child never starts children of its own; with
    max_trials it exits RECYCLE_EXIT after that many trials."""
    args = [
        sys.executable,
        "-m",
        "marstune.tuning",
        "worker",
        "--study",
        study,
        "--threads",
        str(plan.threads),
    ]
    args += ["--workers", "1", "--max-trials", str(max_trials), "--no-summary"]
    return args + (["--quiet"] if quiet else []) + (["--data", data_path] if data_path else [])


def die_with_parent() -> None:
    """In a child of `run_local_workers`: get SIGTERM when the parent dies (Linux), so none is orphaned."""
    parent = os.environ.get(PARENT_ENV, "")
    if not parent.isdigit():
        return
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _pump(stream: IO[str], prefix: str) -> None:
    for line in stream:
        sys.stderr.write(f"{prefix}{line}")
        sys.stderr.flush()
    stream.close()


class _Forwarder:
    """Signal handlers of the parent: pass SIGINT/SIGTERM on to the children, once."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.signum: int | None = None
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> _Forwarder:
        for sig in FORWARDED:
            self._saved[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def _handler(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            return  # the children are already stopping; a second signal must not cut their clean-up
        self.signum = signum
        live = [proc for proc in self.procs if proc.poll() is None]
        print(f"[tune] {signal.Signals(signum).name}: stopping {len(live)} workers", file=sys.stderr)
        for proc in live:
            proc.send_signal(signum)

    def adopt(self, proc: subprocess.Popen[str]) -> None:
        """Track a child started after a signal may have arrived: it gets the signal too."""
        self.procs.append(proc)
        if self.signum is not None and proc.poll() is None:
            proc.send_signal(self.signum)


@dataclass
class _Slot:
    """One worker place: its plan, the processes that held it in turn and how the last one exited."""

    plan: WorkerPlan
    pids: list[int]
    code: int | None = None


def _keep_slot_working(
    slot: _Slot, forward: _Forwarder, args: list[str], env: dict[str, str], prefix: str
) -> None:
    """Run the slot's worker; when it exits to be recycled, start a fresh one in its place."""
    while forward.signum is None:
        proc = subprocess.Popen(
            args,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the parent only; it forwards exactly one signal
        )
        forward.adopt(proc)
        slot.pids.append(proc.pid)
        _pump(proc.stdout, prefix)  # type: ignore[arg-type]
        slot.code = proc.wait()
        if slot.code != RECYCLE_EXIT:
            return
        if forward.signum is None:
            print(f"{prefix}[tune] recycled after its trials: a fresh process continues", file=sys.stderr)


def run_local_workers(
    study: str,
    storage_url: str,
    plans: list[WorkerPlan],
    quiet: bool,
    *,
    spec: Any = None,
    data_info: dict[str, Any] | None = None,
    data_path: str | None = None,
    trials_per_process: int = 0,
    timeout: float | None = None,
) -> int:
    """Create the study (`tune run`: given its spec) or join it (`tune worker`), run the children to the
    end (each replaced by a fresh process every `trials_per_process` trials), print one summary; returns
    the exit code."""
    from marstune.tuning.engines import _optuna as engine

    if spec is not None:  # `tune run`; `tune worker` checked the study already (commands/run.py)
        engine.create(spec, storage_url, data_info or {})
    gpus = ", ".join(f"w{p.index}: GPU {p.gpus}" for p in plans if p.gpus is not None) or "no GPU"
    recycling = f", a fresh process every {trials_per_process} trials" if trials_per_process else ""
    print(
        f"[tune] {len(plans)} worker{'s' * (len(plans) > 1)} x {plans[0].threads} threads on "
        f"{display_url(storage_url)} ({gpus}{recycling})",
        file=sys.stderr,
        flush=True,
    )
    deadline = time.time() + timeout if timeout else None
    # `tune run` is reproducible (offset = worker index); joining workers on other nodes must differ.
    seed_base = 0 if spec is not None else os.getpid() * 100
    slots = [_Slot(plan, []) for plan in plans]
    with _Forwarder() as forward:
        threads = [
            threading.Thread(
                target=_keep_slot_working,
                args=(
                    slot,
                    forward,
                    child_args(study, slot.plan, quiet, data_path, trials_per_process),
                    child_env(
                        slot.plan, storage_url, deadline=deadline, seed_offset=seed_base + slot.plan.index
                    ),
                    f"[w{slot.plan.index}] " if len(plans) > 1 else "",
                ),
                daemon=True,
            )
            for slot in slots
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)  # short waits: signal handlers run in this (the main) thread
        interrupted = forward.signum
    _print_summary(study, storage_url, slots)
    if interrupted is not None:
        return 130
    return 1 if any(slot.code != 0 for slot in slots) else 0


def _print_summary(study_name: str, url: str, slots: Sequence[_Slot]) -> None:
    from marstune.tuning.storage import load_study, open_storage
    from optuna.trial import TrialState

    study = load_study(open_storage(url), study_name)
    trials = study.get_trials(deepcopy=False)
    by_state = {s: sum(t.state == s for t in trials) for s in TrialState}
    host = socket.gethostname()
    parts = []
    for slot in slots:
        workers = {f"{host}:{pid}" for pid in slot.pids}
        mine = [t for t in trials if t.user_attrs.get("worker") in workers]
        fails = sum(t.state == TrialState.FAIL for t in mine)
        pids = ", ".join(map(str, slot.pids))
        parts.append(
            f"  w{slot.plan.index} (pid {pids}): ran {len(mine)} trials ({fails} failed), exit {slot.code}"
        )
    done = by_state[TrialState.COMPLETE] + by_state[TrialState.PRUNED]
    target = study.user_attrs.get("target_trials", "?")
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(finished, key=lambda t: t.value) if finished else None
    shown = "none yet" if best is None else f"{best.value:.4f} (trial {best.number}) {best.params}"
    print(
        f"study {study_name}: {done}/{target} finished, {by_state[TrialState.FAIL]} failed, "
        f"{by_state[TrialState.RUNNING]} running; best {shown}\n" + "\n".join(parts),
        file=sys.stderr,
        flush=True,
    )
