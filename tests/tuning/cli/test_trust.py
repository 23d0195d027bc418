"""The promises a stranger relies on, each as the defect was first hit (issue 9), through the real CLI.

Every test here failed before its fix: a study whose trials all fail ran forever; outputs overwrote
inputs; passwords in `?password=` and `:pw@` forms were printed; interrupted grid points and baselines
were never redone; concurrent runs drew the same configurations; a run with another sampler rewrote the
study; bad storages and names gave tracebacks; a user's own models/ package broke every trial.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from marstune.tuning.study.storage import open_storage
from tests.conftest import REPO, run_tune

ANALYTIC = ("--set", "objective.kind=analytic", "--pruner", "none", "-q")
SECRET = "Tr0ub4dor-3"


def _folder_state(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root: its content hash and mode (what a refused command must leave alone)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
    return out


def _one_error_line(r: subprocess.CompletedProcess, *needles: str, code: int = 1) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == code, r.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=open_storage(url)).get_trials(deepcopy=False)


# 1. A study whose every trial fails stops: refused up front when the model cannot be built at all.
def test_a_space_the_unet_cannot_build_is_refused_when_the_spec_is_read(tmp_path: Path) -> None:
    sets = ("--set", "space.levels={type: int, low: 6, high: 9}")
    baseline = "baseline={base_filters: 16, levels: 6, kernel: 3, dropout: 0.2, activation: relu}"
    r = run_tune("run", "--trials", "2", "--epochs", "1", *sets, "--set", baseline, cwd=tmp_path)
    _one_error_line(r, "`levels` must be between 1 and 5 for 64x128 inputs", "space.levels")
    assert list(tmp_path.iterdir()) == []  # no database, no studies/


def test_failures_are_counted_in_the_study_across_recycled_processes(tmp_path: Path) -> None:
    """Every trial fails; workers are recycled every 3 trials. Before, each fresh process counted from 0
    and the study never stopped; now the study's own streak stops the pool at 10 failures."""
    from marstune.tuning.config.spec import load_spec
    from marstune.tuning.search.engines import OptunaOptions
    from marstune.tuning.study.lifecycle import DataInfo, prepare_study
    from marstune.tuning.workers.child import ChildTask
    from marstune.tuning.workers.plan import WorkerPlan
    from marstune.tuning.workers.pool import run_pool

    url = f"sqlite:///{tmp_path / 't.db'}"
    spec = load_spec(
        None,
        ["study=doomed", "objective.kind=analytic", "search.trials=50", "train.epochs=1"]
        + ["objective.fail_trials=[" + ", ".join(map(str, range(200))) + "]"],
    )
    prepare_study(spec, url, DataInfo(source="none", fingerprint="none"))
    code, slots = run_pool(
        "doomed",
        url,
        [WorkerPlan(0, 1, None)],
        ChildTask("doomed", OptunaOptions(threads=1, quiet=True, create=False, max_trials=3)),
    )
    assert code == 1
    assert len(slots[0].pids) == 4  # 3 + 3 + 3 trials, then the 4th process meets the streak
    failed = [t for t in _trials(url, "doomed") if t.state == TrialState.FAIL]
    assert len(failed) == 10


def test_synth_keeps_an_existing_data_set_unless_forced(tmp_path: Path) -> None:
    made = run_tune("data", "synth", "--n-train", "8", "--n-test", "1", "--out", "d.npz", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    real = tmp_path / "d.npz"
    before = real.read_bytes()
    again = ("data", "synth", "--n-train", "8", "--n-test", "2", "--seed", "1", "--out", "d.npz")
    _one_error_line(run_tune(*again, cwd=tmp_path), "pass --force to replace it")
    assert real.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]
    forced = run_tune(*again, "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert real.read_bytes() != before and "2 test images" in forced.stdout


# 2. Outputs never overwrite inputs or databases; replacements are atomic and keep the mode.
def test_outputs_never_overwrite_inputs_or_databases(tmp_path: Path) -> None:
    assert (
        run_tune(
            "data", "synth", "--n-train", "16", "--n-test", "2", "--out", "d.npz", cwd=tmp_path
        ).returncode
        == 0
    )
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert (
        run_tune("run", "--study", "s", "--storage", url, "--trials", "2", *ANALYTIC, cwd=tmp_path).returncode
        == 0
    )
    before = _folder_state(tmp_path)
    _one_error_line(run_tune("data", "clean", "--data", "d.npz", "--out", "d.npz", cwd=tmp_path), "input")
    _one_error_line(
        run_tune("export-best", "--storage", url, "--study", "s", "--out", "study.db", cwd=tmp_path)
    )
    _one_error_line(run_tune("data", "synth", "--out", "study.db", cwd=tmp_path), "database")
    (tmp_path / "adir").mkdir()
    _one_error_line(
        run_tune("export-best", "--storage", url, "--study", "s", "--out", "adir", cwd=tmp_path), "directory"
    )
    _one_error_line(
        run_tune("data", "clean", "--data", "d.npz", "--out", "/missing/dir/x.txt", cwd=tmp_path),
        "does not exist",
    )
    assert _folder_state(tmp_path) == before  # nothing written, no stray temporary file
    spec = tmp_path / "spec.yaml"  # a hand-written file given as --out by mistake: refused, untouched
    spec.write_text("train: {epochs: 2}\n")
    _one_error_line(
        run_tune("export-best", "--storage", url, "--study", "s", "--out", "spec.yaml", cwd=tmp_path),
        "--out spec.yaml exists and is not a best-config export; nothing was written: choose another --out",
    )
    assert spec.read_text() == "train: {epochs: 2}\n"
    spec.unlink()
    existing = tmp_path / "best.yaml"  # an earlier export is replaced, keeping its mode
    existing.write_text("kind: tune/best-config\nold: true\n")
    existing.chmod(0o644)
    r = run_tune("export-best", "--storage", url, "--study", "s", "--out", "best.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(existing.stat().st_mode) == 0o644 and "tune/best-config" in existing.read_text()
    assert "old: true" not in existing.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "adir",
        "best.yaml",
        "d.npz",
        "study.db",
        "study.db.lock",
    ]


# 3. No password is printed, stored or exported, in any URL form.
@pytest.mark.parametrize("form", ["query", "encoded_key", "empty_user", "userinfo"])
def test_no_password_in_any_output(form: str, pg_url: str, tmp_path: Path) -> None:
    # Trust auth ignores the password; we must still never show it.
    url = {
        "query": f"{pg_url}?password={SECRET}",
        "encoded_key": f"{pg_url}?pass%77ord={SECRET}",  # the driver decodes the key to `password`
        "empty_user": pg_url.replace("postgres@", f":{SECRET}@") + "?user=postgres",
        "userinfo": pg_url.replace("postgres@", f"postgres:{SECRET}@"),
    }[form]
    outputs = []
    for args in (
        ("run", "--storage", url, "--trials", "2", "--set", "objective.kind=analytic", "--epochs", "1"),
        (
            "run",
            "--storage",
            url,
            "--trials",
            "3",
            "--workers",
            "2",
            "--set",
            "objective.kind=analytic",
            "--epochs",
            "1",
        ),
        ("status", "--storage", url),
        ("status", "--storage", url, "--json"),
        ("export-best", "--storage", url),
    ):
        r = run_tune(*args, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        outputs.append(r.stdout + r.stderr)
    outputs.append((tmp_path / "studies" / "unet-mars.best.yaml").read_text())
    from tests.tuning.servers import free_port

    dashboard = subprocess.Popen(
        [sys.executable, "-m", "marstune.tuning", "dashboard", "--storage", url, "--port", str(free_port())],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert dashboard.stdout is not None
        first = dashboard.stdout.readline()  # printed once it listens
    finally:
        dashboard.send_signal(signal.SIGINT)
        out, err = dashboard.communicate(timeout=30)
    outputs.append(first + out + err)
    assert "optuna-dashboard on http://127.0.0.1" in first and "1 studies" in err, first + err
    leaked = [o for o in outputs if SECRET in o]
    assert leaked == []
    assert any("***" in o for o in outputs) or form == "empty_user"


# 4. Interrupted work is redone: a cut-short grid point or baseline is queued again, once.
def _spec(tmp_path: Path, **search: object) -> Path:
    raw = {
        "study": "cut",
        "space": {
            "levels": {"type": "int", "low": 3, "high": 4},
            "dropout": {"type": "float", "low": 0.0, "high": 0.4, "grid": [0.0, 0.2, 0.4]},
        },
        "train": {"epochs": 4},
        "objective": {"kind": "analytic", "sleep": 0.5},
        "search": {"pruner": "none", **search},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _interrupt_mid_trial(args: list[str], cwd: Path, sig: int, url: str, trial: int) -> int:
    proc = subprocess.Popen(
        [sys.executable, "-m", "marstune.tuning", *args], cwd=cwd, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            running = [t for t in _trials(url, "cut") if t.state == TrialState.RUNNING and t.number == trial]
        except Exception:
            running = []
        if running and len(running[0].intermediate_values) >= 1:
            break
        time.sleep(0.2)
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    return proc.returncode


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_grid_point_is_queued_again(sig: int, code: int, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    args = ["run", "--spec", str(_spec(tmp_path, sampler="grid")), "--storage", url, "-q"]
    assert _interrupt_mid_trial(args, tmp_path, sig, url, trial=2) == code
    again = run_tune(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    trials = _trials(url, "cut")
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 6 and len({(t.params["levels"], t.params["dropout"]) for t in done}) == 6
    assert "study cut: 6/6 finished" in again.stdout
    cut = [t for t in trials if t.state == TrialState.FAIL]
    assert len(cut) == 1 and "interrupted" in cut[0].user_attrs["fail_reason"]
    assert run_tune(*args, cwd=tmp_path).returncode == 0 and len(_trials(url, "cut")) == len(trials)


def test_a_baseline_cut_short_by_sigterm_is_run_again(pg_url: str, tmp_path: Path) -> None:
    args = ["run", "--spec", str(_spec(tmp_path, sampler="random", trials=3)), "--storage", pg_url, "-q"]
    assert _interrupt_mid_trial([*args, "--workers", "2"], tmp_path, signal.SIGTERM, pg_url, trial=0) == 143
    assert run_tune(*args, "--workers", "2", cwd=tmp_path).returncode == 0
    trials = _trials(pg_url, "cut")
    baselines = [t for t in trials if t.user_attrs.get("enqueued_as") == "baseline"]
    assert [t.state for t in baselines] == [TrialState.FAIL, TrialState.COMPLETE]
    assert baselines[1].params == {"levels": 4, "dropout": 0.2} and baselines[1].user_attrs["retry_of"] == 0


# 5. Concurrent runs never repeat each other; one run stays reproducible.
def test_two_runs_started_together_draw_different_configurations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    args = ["run", "--storage", url, "--sampler", "random", "--epochs", "2", *ANALYTIC]
    args += ["--set", "objective.sleep=0.05"]
    assert run_tune(*args, "--trials", "1", cwd=tmp_path).returncode == 0  # the study exists
    command = [sys.executable, "-m", "marstune.tuning", *args, "--trials", "8"]
    procs = [
        subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    finished = [t for t in _trials(url, "unet-mars") if t.state == TrialState.COMPLETE]
    configs = [json.dumps(t.params, sort_keys=True) for t in finished]
    assert len(finished) == 8 and len(set(configs)) == 8


# 6. A run that does nothing does not rewrite the study.
def test_joining_with_another_sampler_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    assert (
        run_tune(
            "run", "--storage", url, "--trials", "4", "--sampler", "tpe", *ANALYTIC, cwd=tmp_path
        ).returncode
        == 0
    )
    before = run_tune("status", "--storage", url, "--json", cwd=tmp_path).stdout
    _one_error_line(
        run_tune("run", "--storage", url, "--sampler", "grid", *ANALYTIC, cwd=tmp_path),
        "search.sampler: 'tpe' there, 'grid' here",
    )
    assert run_tune("status", "--storage", url, "--json", cwd=tmp_path).stdout == before
    row = json.loads(before)[0]
    assert row["sampler"] == "tpe" and row["target"] == 4
    raised = run_tune("run", "--storage", url, "--trials", "6", "--sampler", "tpe", *ANALYTIC, cwd=tmp_path)
    assert raised.returncode == 0 and "target changed from 4 to 6" in raised.stderr
    assert "nothing more runs" not in raised.stderr
    lowered = run_tune("run", "--storage", url, "--trials", "3", "--sampler", "tpe", *ANALYTIC, cwd=tmp_path)
    assert lowered.returncode == 0 and "target changed from 6 to 3" in lowered.stderr
    assert "already has 6 finished trials, the new target or more: nothing more runs" in lowered.stderr


# 7. One line instead of a traceback, for every bad storage and name.
def _unprivileged(args: list[str]) -> list[str]:
    """Run as `nobody` when the tests run as root (CI): root writes through any folder permission."""
    if os.geteuid() != 0:
        return args
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *args]


@pytest.mark.parametrize(
    ("storage", "needle"),
    [
        ("sqlite:///notes.txt", "not an SQLite database"),
        ("sqlite:///adir", "is a directory"),
        ("sqlite:////proc/x.db", "not writable"),
        ("sqlite:///ro/t.db", "read-only folder"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
    ],
)
def test_bad_storages_are_one_line(
    storage: str, needle: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="tune-ro-", dir="/tmp"))  # reachable by `nobody` too
    try:
        folder.chmod(0o777)
        (folder / "notes.txt").write_text("my notes\n")
        (folder / "adir").mkdir()
        (folder / "ro").mkdir()
        url = f"sqlite:///{folder / 'ro' / 't.db'}"
        assert run_tune("run", "--storage", url, "--trials", "1", *ANALYTIC, cwd=folder).returncode == 0
        for db in (folder / "ro").iterdir():
            db.chmod(0o666)  # the database itself is writable: only its folder is read-only
        (folder / "ro").chmod(0o555)
        before = _folder_state(folder)
        for command in (("run", *ANALYTIC), ("status",), ("export-best",)):
            argv = _unprivileged([sys.executable, "-m", "marstune.tuning", *command, "--storage", storage])
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "HOME": str(folder)}
            r = subprocess.run(argv, cwd=folder, capture_output=True, text=True, env=env, timeout=300)
            line = _one_error_line(r)
            assert needle in line or command[0] != "run", line
        assert _folder_state(folder) == before
    finally:
        (folder / "ro").chmod(0o755)
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def test_a_bad_storage_is_told_before_the_data_loads(tmp_path: Path) -> None:
    r = run_tune("run", "--storage", f"sqlite:///{tmp_path}/no/such/t.db", "--epochs", "1", cwd=tmp_path)
    _one_error_line(r, "does not exist")  # and not after the 30-line spec and the data banner


def test_a_long_unicode_study_name_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    name = "é" * 128
    for args in (
        ("run", "--study", name, *ANALYTIC),
        ("export-best", "--study", name),
        ("status", "--study", name),
    ):
        _one_error_line(run_tune(*args, cwd=tmp_path), "study name")
    assert list(tmp_path.iterdir()) == []


# 8. A user's own models/ and data/ packages cannot shadow ours.
def test_a_research_folder_with_its_own_models_and_data_packages(tmp_path: Path) -> None:
    for package in ("models", "data", "tuning"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("raise ImportError('the user\\'s own package')\n")
    r = run_tune(
        "run",
        "--trials",
        "1",
        "--epochs",
        "1",
        "--set",
        "train.max_items=24",
        "--set",
        "train.batch_size=8",
        "--set",
        "data.synthetic_items=24",
        "-q",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "study unet-mars: 1/1 finished" in r.stdout and "1 complete" in r.stdout


def test_nothing_imports_the_bare_folder_names() -> None:
    code = (
        "import sys, marstune.tuning.cli.app; print(sorted({'models', 'data', 'tuning'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("at http://h:9/?token=s3cr3t: API request", "at http://h:9/?token=***: API request"),
        ("?PASSWORD=Sek:rAt (psycopg", "?PASSWORD=*** (psycopg"),
        ("postgresql://u:p:w@h/d: no answer", "postgresql://u:***@h/d: no answer"),
        ("/db?sslmode=disable&pass%77ord=Sek1 (x", "/db?sslmode=disable&pass%77ord=*** (x"),
    ],
)
def test_a_masked_password_keeps_the_message_around_it(text: str, shown: str) -> None:
    from marstune.tuning.errors import redact

    assert redact(text) == shown  # the ": " after a query password was swallowed with it
