"""A PostgreSQL server of the test's own, to stop, restart, freeze and fill without touching the shared one.

initdb into a temporary folder and pg_ctl on a free port of 127.0.0.1, as the `postgres` user (initdb
refuses root). Every signal goes to a PID this helper read from the instance's own postmaster.pid, never
to a process found by name; the fixture thaws and stops the server whatever the test did.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tuning.servers import HOST, free_port

USER = "postgres"


def _bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not found:
        raise AssertionError(f"no {name} under /usr/lib/postgresql/*/bin: apt-get install postgresql")
    return str(found[-1])


def _as_postgres(args: list[str], **kwargs: object) -> subprocess.CompletedProcess:
    prefix = ["runuser", "-u", USER, "--"] if os.geteuid() == 0 else []
    return subprocess.run(prefix + args, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


@dataclass
class PgInstance:
    """One running server: its folder, port and what a test may do to it."""

    folder: Path
    port: int
    max_connections: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@{HOST}:{self.port}/{database}"

    def _ctl(self, *args: str, timeout: float = 60) -> None:
        options = f"-k {self.folder} -h {HOST} -p {self.port} -c max_connections={self.max_connections}"
        log = str(self.folder / "server.log")
        ctl = [_bin("pg_ctl"), "-D", str(self.data), "-l", log, "-w", "-o", options]
        _as_postgres([*ctl, *args], timeout=timeout)

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every connection is cut, the server is back when this returns."""
        self._ctl("restart", "-m", "fast")

    def postmaster_pid(self) -> int | None:
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return None
        return int(pid_file.read_text().splitlines()[0])

    def server_pids(self) -> list[int]:
        """The postmaster and its children (the backends and background workers), read from /proc."""
        main = self.postmaster_pid()
        if main is None:
            return []
        children = Path(f"/proc/{main}/task/{main}/children")
        kids = [int(p) for p in children.read_text().split()] if children.exists() else []
        return [main, *kids]

    def freeze(self, whole_server: bool = False) -> list[int]:
        """SIGSTOP the postmaster (new connections hang), or the whole server (every query hangs)."""
        pids = self.server_pids() if whole_server else [p for p in [self.postmaster_pid()] if p]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        return pids

    def thaw(self, pids: list[int]) -> None:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        """Thaw (a stopped postmaster cannot shut down), then stop by PID: SIGINT is a fast shutdown."""
        main = self.postmaster_pid()
        if main is None:
            return
        self.thaw(self.server_pids())
        try:
            os.kill(main, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and Path(f"/proc/{main}").exists():
            time.sleep(0.1)
        if Path(f"/proc/{main}").exists():
            os.kill(main, signal.SIGKILL)

    def psql(self, sql: str, database: str = "postgres") -> str:
        args = [_bin("psql"), "-h", HOST, "-p", str(self.port), "-U", USER, "-d", database, "-Atc", sql]
        return _as_postgres(args, timeout=30).stdout.strip()


def make_instance(folder: Path, max_connections: int = 100) -> PgInstance:
    if os.geteuid() == 0:
        shutil.chown(folder, USER, USER)
    instance = PgInstance(folder, free_port(), max_connections)
    initdb = [_bin("initdb"), "-D", str(instance.data), "-A", "trust", "-U", USER, "--no-sync"]
    _as_postgres(initdb, timeout=120)
    instance.start()
    return instance


@contextmanager
def pg_server(max_connections: int = 100) -> Iterator[PgInstance]:
    """A fresh server in its own folder under /tmp (pytest's folders are closed to the postgres user);
    thawed, stopped by PID and removed afterwards, whatever happened to it."""
    folder = Path(tempfile.mkdtemp(prefix="tune-pg-"))
    instance: PgInstance | None = None
    try:
        instance = make_instance(folder, max_connections)
        yield instance
    finally:
        if instance is not None:
            instance.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_instance() -> Iterator[PgInstance]:
    """A server of this test's own, 100 connections."""
    with pg_server() as instance:
        yield instance
