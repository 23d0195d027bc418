"""`tune run --workers K` planning on CPU with fake GPU counts, and the worker path staying TF-free."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from marstune.tuning.cli.run import trials_per_process
from marstune.tuning.config.spec import load_spec
from marstune.tuning.errors import SpecError, StorageError, UsageError
from marstune.tuning.search.engines import OptunaOptions
from marstune.tuning.study.storage import grace_period, heartbeat_interval
from marstune.tuning.workers.child import MODULE, ChildTask
from marstune.tuning.workers.plan import (
    WorkerPlan,
    child_env,
    default_workers,
    detect_gpus,
    local_plan,
    plan_workers,
)
from tests.tuning.workers_util import write_spec

URL = "postgresql+psycopg://tune:S3cretPw@head/tune"


def test_threads_are_split_so_workers_times_threads_fit_the_cores() -> None:
    assert [p.threads for p in plan_workers(2, 0, [], cores=2)] == [1, 1]
    assert [p.threads for p in plan_workers(3, 0, [], cores=8)] == [2, 2, 2]
    assert [p.threads for p in plan_workers(4, 0, [], cores=2)] == [1, 1, 1, 1]  # never 0
    assert [p.threads for p in plan_workers(2, 3, [], cores=2)] == [3, 3]  # --threads wins
    assert all(p.gpus is None for p in plan_workers(2, 0, [], cores=2))
    with pytest.raises(UsageError, match="--workers must be at least 1"):
        plan_workers(0, 0, [])


def test_each_worker_gets_its_own_gpu_round_robin() -> None:
    four = plan_workers(4, 0, ["0", "1", "2", "3"], cores=16)
    assert [p.gpus for p in four] == ["0", "1", "2", "3"] and {p.threads for p in four} == {4}
    assert [p.gpus for p in plan_workers(5, 0, ["0", "1"], cores=4)] == ["0", "1", "0", "1", "0"]
    # CUDA_VISIBLE_DEVICES=2,5 in the parent: children get those ids, not 0 and 1.
    assert [p.gpus for p in plan_workers(2, 0, ["2", "5"], cores=4)] == ["2", "5"]


def test_default_is_one_worker_per_gpu_only_with_several_gpus() -> None:
    assert default_workers([]) == 1
    assert default_workers(["0"]) == 1
    assert default_workers(["0", "1", "2"]) == 3


def _fake_nvidia_smi(folder: Path, gpus: int, code: int = 0) -> dict[str, str]:
    exe = folder / "nvidia-smi"
    lines = "".join(f"echo 'GPU {i}: NVIDIA A100 (UUID: GPU-{i})'\n" for i in range(gpus))
    exe.write_text(f"#!/bin/sh\n{lines}exit {code}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return {"PATH": str(folder)}


def test_gpus_are_counted_without_tensorflow(tmp_path: Path) -> None:
    assert detect_gpus(_fake_nvidia_smi(tmp_path, 3)) == ["0", "1", "2"]
    assert detect_gpus(_fake_nvidia_smi(tmp_path, 2, code=9)) == []  # a driver error: no GPU
    assert detect_gpus({"PATH": str(tmp_path / "nothing")}) == []  # no nvidia-smi: no GPU
    with_visible = {**_fake_nvidia_smi(tmp_path, 4), "CUDA_VISIBLE_DEVICES": "1,3"}
    assert detect_gpus(with_visible) == ["1", "3"]  # what the parent was given wins
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_local_plan_on_this_cpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi: a CPU machine
    assert local_plan(None, 0, "optuna") is None  # one worker: in this process
    assert local_plan(1, 0, "optuna") is None
    plans = local_plan(2, 0, "optuna")
    assert plans is not None and len(plans) == 2
    assert local_plan(None, 0, "keras-tuner") is None
    with pytest.raises(UsageError, match="--workers runs Optuna workers"):
        local_plan(2, 0, "ray")
    # Recycled: even one worker is a child process, so a fresh one can replace it.
    one = local_plan(None, 0, "optuna", recycle=True)
    assert one is not None and [p.index for p in one] == [0] and one[0].gpus is None
    assert local_plan(None, 0, "keras-tuner", recycle=True) is None  # its tuner keeps its own state


def test_only_keras_trials_recycle_their_process() -> None:
    assert trials_per_process(load_spec(None, [])) == 5  # the default
    assert trials_per_process(load_spec(None, ["search.trials_per_process=0"])) == 0
    assert trials_per_process(load_spec(None, ["objective.kind=analytic"])) == 0  # no TensorFlow to leak
    with pytest.raises(SpecError, match="trials_per_process"):
        load_spec(None, ["search.trials_per_process=-1"])


def test_children_get_the_storage_through_the_environment_not_argv() -> None:
    plan = WorkerPlan(index=1, threads=1, gpus="1")
    options = OptunaOptions(
        threads=1, quiet=True, create=False, max_trials=5, deadline=1234.5, mlflow="http://m"
    )
    task = ChildTask("unet-mars", options, parent_pid=7)
    args = task.argv()
    # Its own entry point, never `tune worker` with hidden flags; -P keeps the working folder off sys.path.
    assert args[1:4] == ["-P", "-m", MODULE] and len(args) == 5
    assert ChildTask.from_json(args[4]) == task  # the whole task, and only it
    assert not any("S3cretPw" in a or "postgresql" in a for a in args)  # `ps` shows argv
    env = child_env(plan, URL, base={"PATH": "/bin"})
    assert env["TUNE_STORAGE"] == URL and env["CUDA_VISIBLE_DEVICES"] == "1"
    assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" and env["OMP_NUM_THREADS"] == "1"
    assert not [k for k in env if k.startswith("TUNE_") and k != "TUNE_STORAGE"]  # one variable, public
    cpu = child_env(WorkerPlan(0, 2, None), URL, base={"CUDA_VISIBLE_DEVICES": "0"})
    assert cpu["CUDA_VISIBLE_DEVICES"] == "0" and cpu["OMP_NUM_THREADS"] == "2"  # left as it was


def test_heartbeat_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNE_HEARTBEAT_INTERVAL", raising=False)
    monkeypatch.delenv("TUNE_GRACE_PERIOD", raising=False)
    assert (heartbeat_interval(), grace_period()) == (10, 30)
    monkeypatch.setenv("TUNE_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("TUNE_GRACE_PERIOD", "3")
    assert (heartbeat_interval(), grace_period()) == (1, 3)
    monkeypatch.setenv("TUNE_GRACE_PERIOD", "1")
    with pytest.raises(StorageError, match=r"TUNE_GRACE_PERIOD \(1s\) must be longer than the heartbeat"):
        grace_period()
    monkeypatch.setenv("TUNE_HEARTBEAT_INTERVAL", "0.5")
    with pytest.raises(StorageError, match=r"TUNE_HEARTBEAT_INTERVAL must be whole seconds >= 1, got '0.5'"):
        heartbeat_interval()


def test_analytic_worker_never_imports_tensorflow(tmp_path: Path) -> None:
    """Analytic workers start in ~1 s only because TF (and Ray, torch) load lazily: run a real one."""
    argv = ["tune", "run", "--spec", str(write_spec(tmp_path, study="light", trials=3))]
    argv += ["--storage", f"sqlite:///{tmp_path}/t.db", "-q"]
    code = (
        "import sys\n"
        "from marstune.tuning.cli.app import app\n"
        f"sys.argv = {argv!r}\n"
        "try:\n    app()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'torch', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and "study light: 3/3 finished" in out.stdout, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


class _SelfKilling:
    """A child that dies of SIGKILL at once, as one the out-of-memory killer takes on every start."""

    def argv(self) -> list[str]:
        return [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]


def test_a_place_whose_worker_keeps_dying_is_refilled_a_bounded_number_of_times(
    capsys: pytest.CaptureFixture,
) -> None:
    from marstune.tuning.workers.pool import MAX_DEATHS, Slot, _Forwarder, _keep_slot_working, _Screen

    slot = Slot(WorkerPlan(0, 1, None))
    env = {"PATH": "/usr/bin:/bin"}
    _keep_slot_working(slot, _Forwarder(), _SelfKilling(), env, "[w0] ", _Screen(None))  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert len(slot.pids) == MAX_DEATHS + 1 and slot.code == -9  # the last one is not replaced
    assert slot.deaths == [f"pid {pid} (SIGKILL)" for pid in slot.pids]
    assert err.count("died of SIGKILL; a fresh process takes its place") == MAX_DEATHS
    assert f"died of SIGKILL, {MAX_DEATHS + 1} deaths: not replaced" in err
