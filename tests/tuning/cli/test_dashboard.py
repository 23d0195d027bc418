"""`tune dashboard` and the stock `optuna-dashboard` on our storage: refusals, and serving while a study runs.

Real servers on 127.0.0.1 (free ports), a real `tune run` writing to the same SQLite file, polled over
HTTP; every process is stopped by its PID.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from marstune.tuning.cli.dashboard import DashboardError, browse_url, check_host, is_loopback
from marstune.tuning.study.storage import open_storage
from tests.conftest import run_tune
from tests.tuning.servers import HOST, free_ports, get_json, start, stop, tune_args, wait_http

# 3 epochs of 0.1 s: each trial takes a moment, like training, so the dashboards poll a live study.
ANALYTIC = (
    "--set",
    "objective.kind=analytic",
    "--set",
    "objective.sleep=0.1",
    "--pruner",
    "none",
    "--epochs",
    "3",
    "-q",
)
LOCK_ERRORS = ("database is locked", "OperationalError", "Traceback")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("192.168.1.20", False),
        ("::", False),
        ("dashboard.example.org", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_public_host_needs_the_flag_and_then_warns() -> None:
    assert check_host("127.0.0.1", public=False) is None
    with pytest.raises(DashboardError, match="--public"):
        check_host("0.0.0.0", public=False)
    warning = check_host("0.0.0.0", public=True)
    assert warning is not None and "no authentication" in warning and "delete" in warning
    assert browse_url("0.0.0.0", 8080) == "http://127.0.0.1:8080/dashboard"
    assert browse_url("::1", 9000) == "http://[::1]:9000/dashboard"


def test_cli_refuses_a_public_host_without_public(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    open_storage(url, create=True)
    result = run_tune("dashboard", "--storage", url, "--host", "0.0.0.0", cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: refusing to serve the dashboard on '0.0.0.0'")
    assert "no authentication" in lines[0] and "--public" in lines[0]


def test_cli_refuses_a_missing_database_and_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "nothing.db"
    result = run_tune("dashboard", "--storage", f"sqlite:///{db}", cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: no study database at {db}; run `tune run` first or pass --storage / set $TUNE_STORAGE"
    )
    assert not db.exists() and list(tmp_path.iterdir()) == []


def test_cli_reports_a_busy_port(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    open_storage(url, create=True)
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_tune("dashboard", "--storage", url, "--port", str(port), cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"Error: cannot listen on 127.0.0.1:{port}:")
    assert "--port" in result.stderr


def _trial_count(base: str, study: str) -> int:
    studies = get_json(f"{base}/api/studies")["study_summaries"]
    sid = next(s["study_id"] for s in studies if s["study_name"] == study)
    return len(get_json(f"{base}/api/studies/{sid}")["trials"])


def _final_states(base: str, study: str, target: int, within: float = 30.0) -> list[str]:
    """The dashboard caches trials for 2 s (optuna_dashboard._storage): wait for it to catch up."""
    studies = get_json(f"{base}/api/studies")["study_summaries"]
    sid = next(s["study_id"] for s in studies if s["study_name"] == study)
    deadline = time.monotonic() + within
    while True:
        states = [t["state"] for t in get_json(f"{base}/api/studies/{sid}")["trials"]]
        if states == ["Complete"] * target or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def test_both_dashboards_serve_while_a_study_runs(tmp_path: Path) -> None:
    """WAL + busy timeout: workers and two dashboards on one SQLite file, no 'database is locked'."""
    url = "sqlite:///studies/tune.db"  # the default, relative to the working folder, as in the README
    first = run_tune("run", "--storage", url, "--study", "live", "--trials", "1", *ANALYTIC, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    ours, stock = free_ports(2)
    logs = {name: tmp_path / f"{name}.log" for name in ("tune-dashboard", "optuna-dashboard", "run")}
    stock_cli = str(Path(sys.executable).parent / "optuna-dashboard")
    servers = {
        "tune-dashboard": start(
            tune_args("dashboard", "--storage", url, "--port", str(ours)), logs["tune-dashboard"], tmp_path
        ),
        "optuna-dashboard": start(
            [stock_cli, url, "--host", HOST, "--port", str(stock)], logs["optuna-dashboard"], tmp_path
        ),
    }
    bases = {"tune-dashboard": f"http://{HOST}:{ours}", "optuna-dashboard": f"http://{HOST}:{stock}"}
    run = None
    try:
        for name, base in bases.items():
            wait_http(f"{base}/api/studies", servers[name], logs[name])
            assert _trial_count(base, "live") == 1
        target = 14
        run = start(
            tune_args("run", "--storage", url, "--study", "live", "--trials", str(target), *ANALYTIC),
            logs["run"],
            tmp_path,
        )
        seen: dict[str, set[int]] = {name: set() for name in bases}
        deadline = time.monotonic() + 300
        while run.poll() is None and time.monotonic() < deadline:
            for name, base in bases.items():
                seen[name].add(_trial_count(base, "live"))
            time.sleep(0.1)
        assert run.wait(timeout=60) == 0, logs["run"].read_text()
        for name, base in bases.items():
            during = {n for n in seen[name] if 1 < n < target}
            assert during, f"{name} was never polled while the study ran: saw {sorted(seen[name])}"
            assert _final_states(base, "live", target) == ["Complete"] * target
    finally:
        if run is not None:
            stop(run)
        for proc in servers.values():
            stop(proc)
    for name, log in logs.items():
        text = log.read_text()
        for error in LOCK_ERRORS:
            assert error not in text, f"{name}: {error}\n{text}"
    assert "optuna-dashboard on http://127.0.0.1:" in logs["tune-dashboard"].read_text()


def test_both_dashboards_serve_a_kept_model_the_stock_one_with_artifact_dir(
    tmp_path: Path, pg_url: str
) -> None:
    """README: `tune dashboard` serves every study's kept models, a study made after it started included
    (the compose stack starts it first, on PostgreSQL); the stock `optuna-dashboard URL` answers a model
    download with HTTP 400 unless given `--artifact-dir studies/<study>/artifacts`."""
    import urllib.error
    import urllib.request

    url = pg_url  # PostgreSQL, as the compose stack runs it
    first = run_tune("run", "--storage", url, "--study", "first", "--trials", "1", *ANALYTIC, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    stock_cli = str(Path(sys.executable).parent / "optuna-dashboard")
    commands = {
        "tune-dashboard": lambda port: tune_args("dashboard", "--storage", url, "--port", str(port)),
        "stock": lambda port: [stock_cli, url, "--host", HOST, "--port", str(port)],
        "stock-with-dir": lambda port: [
            *[stock_cli, url, "--host", HOST, "--port", str(port)],
            *["--artifact-dir", "studies/kept/artifacts"],
        ],
    }
    ports = dict(zip(commands, free_ports(len(commands)), strict=True))
    servers: dict[str, subprocess.Popen] = {}
    logs = {name: tmp_path / f"{name}.log" for name in commands}
    answers: dict[str, tuple[int, bytes]] = {}
    try:
        servers["tune-dashboard"] = start(
            commands["tune-dashboard"](ports["tune-dashboard"]), logs["tune-dashboard"], tmp_path
        )
        wait_http(
            f"http://{HOST}:{ports['tune-dashboard']}/api/studies",
            servers["tune-dashboard"],
            logs["tune-dashboard"],
        )
        tiny = ("--epochs", "1", "--set", "train.max_items=24", "--set", "data.synthetic_items=24", "-q")
        made = run_tune("run", "--storage", url, "--study", "kept", "--trials", "1", *tiny, cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        (model,) = (tmp_path / "studies" / "kept" / "artifacts").iterdir()
        for name in ("stock", "stock-with-dir"):
            servers[name] = start(commands[name](ports[name]), logs[name], tmp_path)
        for name, server in servers.items():
            base = f"http://{HOST}:{ports[name]}"
            wait_http(f"{base}/api/studies", server, logs[name])
            deadline = time.monotonic() + 30
            while True:
                listed = get_json(f"{base}/api/studies")["study_summaries"]
                studies = {s["study_name"]: s["study_id"] for s in listed}
                if "kept" in studies or time.monotonic() > deadline:
                    break
                time.sleep(1)
            in_db = optuna.get_all_study_names(open_storage(url))
            assert "kept" in studies, (name, studies, in_db, logs[name].read_text())
            (trial,) = get_json(f"{base}/api/studies/{studies['kept']}")["trials"]
            (artifact,) = trial["artifacts"]
            assert artifact["artifact_id"] == model.name and artifact["filename"] == "model.keras"
            link = f"{base}/artifacts/{studies['kept']}/{trial['trial_id']}/{artifact['artifact_id']}"
            try:
                with urllib.request.urlopen(link, timeout=30) as response:
                    answers[name] = (response.status, response.read())
            except urllib.error.HTTPError as exc:
                answers[name] = (exc.code, b"")
    finally:
        for server in servers.values():
            stop(server)
    assert answers["tune-dashboard"] == (200, model.read_bytes())
    assert answers["stock"][0] == 400
    assert answers["stock-with-dir"] == (200, model.read_bytes())
