"""Shared fixtures: storages (a real SQLite file and a real PostgreSQL database per test) and a CLI runner."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import unittest.mock
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.tiers import slow_reason

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
STORAGES = ("sqlite", "postgresql")
# A sampled study of real U-Nets, kept small: a random draw of 32 filters x 5 levels x kernel 5 trains
# for a minute on this CPU, 8 filters x 2-3 levels in seconds (the baseline moved inside that space).
SMALL_UNETS = (
    "--set", "space.base_filters.choices=[8]", "--set", "space.levels.high=3",
    "--set", "baseline.base_filters=8", "--set", "baseline.levels=2",
)  # fmt: skip

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# `pg_instance`: a PostgreSQL server of the test's own, to restart, freeze or fill (never the shared one).
pytest_plugins = ["tests.tuning.pg_instance"]


# Audit events that mean a process of the test's own (sys.addaudithook; CPython names them so).
_PROCESS_EVENTS = {
    "subprocess.Popen", "os.system", "os.posix_spawn", "os.fork", "os.forkpty", "os.exec", "os.spawn",
    "_posixsubprocess.fork_exec",
}  # fmt: skip
_watch: dict[str, list[str] | None] = {"started": None}  # a list while a quick test runs in the quick tier


def _audit(event: str, args: tuple[object, ...]) -> None:
    _watch_training()
    started = _watch["started"]
    if started is not None and event in _PROCESS_EVENTS and not _library_probe(args):
        started.append(f"{event} {str(args[:2])[:120]}")


def _library_probe(args: tuple[object, ...]) -> bool:
    """Python's `platform` runs `uname -p` the first time TensorFlow asks: milliseconds, no process of
    the test's own."""
    if not args:
        return False
    first = args[0][0] if isinstance(args[0], list | tuple) and args[0] else args[0]
    name = os.fsdecode(first) if isinstance(first, str | bytes) else str(first)
    return os.path.basename(name) == "uname"


_trainings_watched: list[bool] = []


def _watch_training() -> None:
    """Once Keras is imported (noticed at the next audit event, long before anything trains), its
    training entry points report to the watch too: a quick test that trains, through any helper of
    tuning/ or bench/, fails like one that starts a process."""
    model = getattr(sys.modules.get("keras"), "Model", None)
    if model is None or _trainings_watched:
        return
    _trainings_watched.append(True)
    for name in ("fit", "train_on_batch"):
        original = getattr(model, name)

        def watched(
            self: object,
            *args: object,
            _original: Callable[..., object] = original,
            _name: str = name,
            **kw: object,
        ) -> object:
            started = _watch["started"]
            if started is not None:
                started.append(f"keras.Model.{_name}, a training")
            return _original(self, *args, **kw)

        setattr(model, name, watched)


def _watch_fork_exec() -> None:
    """multiprocessing's spawn and forkserver start their process through _posixsubprocess.fork_exec,
    which raises no audit event (CPython 3.11): report it as one."""
    import _posixsubprocess

    original = _posixsubprocess.fork_exec

    def fork_exec(*args: object) -> int:
        _audit("_posixsubprocess.fork_exec", args[:1])
        return original(*args)

    _posixsubprocess.fork_exec = fork_exec


def pytest_configure(config: pytest.Config) -> None:
    if "not slow" in (config.option.markexpr or ""):  # the quick tier watches what tiers.py predicted
        sys.addaudithook(_audit)
        _watch_fork_exec()


def _watching(item: pytest.Item, phase: str) -> Iterator[None]:
    """In the quick tier, a test whose setup, call or teardown starts a process fails, naming the rule
    that missed it."""
    watched = "not slow" in (item.config.option.markexpr or "") and not item.get_closest_marker("slow")
    _watch["started"] = [] if watched else None
    try:
        result = yield
    finally:
        started, _watch["started"] = _watch["started"], None
    if started:
        raise AssertionError(
            f"this quick test started a process or a training in its {phase} ({started[0]}); tests/tiers.py "
            "predicted none: teach tiers.py what it uses, so it lands in the full tier"
        )
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    return (yield from _watching(item, "setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    return (yield from _watching(item, "call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    return (yield from _watching(item, "teardown"))


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

    from marstune.tuning import errors
    from marstune.tuning.cli.app import main

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    secrets = set(errors._KNOWN_SECRETS)  # noqa: SLF001 - a process's registry dies with it; restore it
    before = Path.cwd()
    code = 0
    runner = CliRunner()
    with (
        unittest.mock.patch.dict(os.environ),  # what a command sets (TUNE_VERBOSE, MLFLOW_*) dies with it
        # No GPU in this process's view: detecting one runs nvidia-smi, a process of the test's own.
        runner.isolation(env={"TUNE_STORAGE": None, "CUDA_VISIBLE_DEVICES": "", **(env or {})}) as (
            out,
            err,
            *_,
        ),
    ):
        os.chdir(cwd)
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            gc.collect()  # storages the command dropped close their files (-wal, -shm), as at an exit
            sys.stdout.flush()  # the isolation's text wrappers buffer what was printed
            sys.stderr.flush()
            os.chdir(before)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            errors._KNOWN_SECRETS.clear()  # noqa: SLF001
            errors._KNOWN_SECRETS.update(secrets)  # noqa: SLF001
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return subprocess.CompletedProcess(["tune", *args], code, stdout, stderr)
