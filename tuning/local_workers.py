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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from tuning.devices import choose_threads, visible_gpus_for
from tuning.errors import SpecError
from tuning.storage import STORAGE_ENV, display_url

FORWARDED = (signal.SIGINT, signal.SIGTERM)


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
    """One worker per GPU on a machine with several; otherwise one (in-process) worker."""
    return len(gpu_ids) if len(gpu_ids) > 1 else 1


def local_plan(workers: int | None, threads: int, engine: str) -> list[WorkerPlan] | None:
    """The children `tune run` should start, or None to run in this process (one worker)."""
    if engine != "optuna":
        if workers is not None and workers > 1:
            raise SpecError(f"--workers runs Optuna workers; the {engine} engine schedules its own trials")
        return None
    gpu_ids = detect_gpus()
    count = default_workers(gpu_ids) if workers is None else workers
    return plan_workers(count, threads, gpu_ids) if count > 1 else None


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


def child_env(plan: WorkerPlan, storage_url: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The storage URL goes in the environment, not argv: `ps` shows argv and the URL may hold a password."""
    env = dict(os.environ if base is None else base)
    env[STORAGE_ENV] = storage_url
    env.setdefault("OMP_NUM_THREADS", str(plan.threads))  # numpy/oneDNN pools obey the same split
    if plan.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = plan.gpus
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    return env


def child_args(study: str, plan: WorkerPlan, quiet: bool, data_path: str | None = None) -> list[str]:
    """`tune worker --workers 1`: a child must never start children of its own (one per GPU)."""
    args = [sys.executable, "-m", "tuning", "worker", "--study", study, "--threads", str(plan.threads)]
    args += ["--workers", "1", "--no-summary"] + (["--quiet"] if quiet else [])
    return args + (["--data", data_path] if data_path else [])


def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the parent dies (Linux), so no worker is orphaned."""
    prctl = getattr(_LIBC, "prctl", None)
    if prctl is not None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


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
        print(f"[tune] {signal.Signals(signum).name}: stopping {len(self.procs)} workers", file=sys.stderr)
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signum)


def run_local_workers(
    study: str,
    storage_url: str,
    plans: list[WorkerPlan],
    quiet: bool,
    *,
    spec: Any = None,
    data_info: dict[str, Any] | None = None,
    data_path: str | None = None,
) -> int:
    """Create the study (`tune run`: given its spec) or join it (`tune worker`), run the children to the
    end, print one summary; returns the exit code."""
    from tuning.engines import _optuna as engine

    if spec is not None:
        engine.create(spec, storage_url, data_info or {})
    else:  # one clear error here rather than the same one from each child
        from tuning.storage import load_study, open_storage

        storage = open_storage(storage_url)
        try:
            load_study(storage, study)
        finally:
            storage.engine.dispose()
    gpus = ", ".join(f"w{p.index}: GPU {p.gpus}" for p in plans if p.gpus is not None) or "no GPU"
    print(
        f"[tune] {len(plans)} workers x {plans[0].threads} threads on {display_url(storage_url)} ({gpus})",
        file=sys.stderr,
        flush=True,
    )
    pumps: list[threading.Thread] = []
    with _Forwarder() as forward:
        for plan in plans:
            if forward.signum is not None:
                break
            proc = subprocess.Popen(
                child_args(study, plan, quiet, data_path),
                env=child_env(plan, storage_url),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # Ctrl-C reaches the parent only; it forwards exactly one signal
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads yet: pumps start after every spawn
            )
            forward.procs.append(proc)
        for plan, proc in zip(plans, forward.procs, strict=False):
            pumps.append(threading.Thread(target=_pump, args=(proc.stdout, f"[w{plan.index}] "), daemon=True))
            pumps[-1].start()
        codes = [proc.wait() for proc in forward.procs]
        for pump in pumps:
            pump.join(timeout=10)
        interrupted = forward.signum
    _print_summary(study, storage_url, forward.procs, codes)
    if interrupted is not None:
        return 130
    return 1 if any(code != 0 for code in codes) or len(codes) < len(plans) else 0


def _print_summary(
    study_name: str, url: str, procs: Sequence[subprocess.Popen[str]], codes: list[int]
) -> None:
    from optuna.trial import TrialState

    from tuning.storage import load_study, open_storage

    study = load_study(open_storage(url), study_name)
    trials = study.get_trials(deepcopy=False)
    by_state = {s: sum(t.state == s for t in trials) for s in TrialState}
    host = socket.gethostname()
    parts = []
    for k, (proc, code) in enumerate(zip(procs, codes, strict=True)):
        mine = [t for t in trials if t.user_attrs.get("worker") == f"{host}:{proc.pid}"]
        fails = sum(t.state == TrialState.FAIL for t in mine)
        parts.append(f"  w{k} (pid {proc.pid}): ran {len(mine)} trials ({fails} failed), exit {code}")
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
