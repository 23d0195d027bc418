"""Shared fixtures: storages (a real SQLite file and a real PostgreSQL database per test) and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tiers import slow_reason

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
STORAGES = ("sqlite", "postgresql")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# `pg_instance`: a PostgreSQL server of the test's own, to restart, freeze or fill (never the shared one).
pytest_plugins = ["tests.tuning.pg_instance"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tiers (tests/tiers.py): a test that starts a process, a server or a training is `slow`."""
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        info = item._fixtureinfo
        fixtures = [d.func for name in info.names_closure for d in info.name2fixturedefs.get(name, ())]
        params = item.callspec.params.values() if hasattr(item, "callspec") else ()
        why = slow_reason(info.names_closure, params, [item.function, *fixtures])
        if why:
            item.add_marker(pytest.mark.slow(reason=why))
        item.user_properties.append(("tier", f"slow: {why}" if why else "quick"))


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    name = f"tune_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tune.db'}"


@pytest.fixture(params=STORAGES)
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every contract test runs on each storage kind."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


def run_tune(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the real `tune` command as a user would, in `cwd`."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    full_env.pop("TUNE_STORAGE", None) if env is None or "TUNE_STORAGE" not in env else None
    return subprocess.run(
        [sys.executable, "-m", "marstune.tuning", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tune_in_process(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `tune` in this process (Typer's CliRunner isolation: its own stdout, stderr and environment),
    as `run_tune` does in a subprocess but in milliseconds: the same `main`, the same one-line errors and
    exit codes. For refusals and reads; a command that trains or starts workers belongs in `run_tune`."""
    import signal

    from typer.testing import CliRunner

    from marstune.tuning.cli.app import main

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    before = Path.cwd()
    code = 0
    runner = CliRunner()
    with runner.isolation(env={"TUNE_STORAGE": None, **(env or {})}) as (out, err, *_):
        os.chdir(cwd)
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.stdout.flush()  # the isolation's text wrappers buffer what was printed
            sys.stderr.flush()
            os.chdir(before)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return subprocess.CompletedProcess(["tune", *args], code, stdout, stderr)
