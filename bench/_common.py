"""Shared parts of the benchmarks: outcome lines, machine state, storages, specs, timing.

Every figure a benchmark prints is measured in that same run; comparisons are ratios of two things
measured side by side, so a busy machine slows both sides alike.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Admin connection used to create and drop the benchmark's own PostgreSQL databases.
PG_ADMIN_ENV = "TUNE_BENCH_PG_ADMIN"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Outcome:
    """One target's verdict; `line()` is the summary line `make bench` ends with."""

    number: int
    name: str
    measured: str  # formatted figure(s), e.g. "2.41x"
    target: str  # e.g. ">= 2.00x"
    met: bool
    note: str = ""  # when missed: the measured cause and what would fix it

    def line(self) -> str:
        verdict = "MET" if self.met else "MISSED"
        return (
            f"TARGET {self.number}: {self.name}: measured {self.measured} (target {self.target}): {verdict}"
        )


def at_least(
    number: int, name: str, value: float, threshold: float, unit: str = "x", note: str = ""
) -> Outcome:
    met = value >= threshold
    return Outcome(number, name, f"{value:.2f}{unit}", f">= {threshold:.2f}{unit}", met, "" if met else note)


def at_most(
    number: int, name: str, value: float, threshold: float, unit: str = "x", note: str = ""
) -> Outcome:
    met = value <= threshold
    return Outcome(number, name, f"{value:.2f}{unit}", f"<= {threshold:.2f}{unit}", met, "" if met else note)


def say(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)


def section(title: str) -> None:
    say("", f"== {title} ==")


def machine_state() -> str:
    """When and under what load a figure was measured (the machine is shared)."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    one, five, fifteen = os.getloadavg()
    return f"{now}; load average {one:.2f} {five:.2f} {fifteen:.2f}; {os.cpu_count()} cores"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A scratch folder for one benchmark's databases and files, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"tune-bench-{prefix}-") as path:
        yield Path(path)


def sqlite_url(folder: Path, name: str = "bench.db") -> str:
    """The URL of a database file in `folder`, percent-encoded (a folder named `k x` or `k?x`)."""
    from urllib.parse import quote

    return f"sqlite:///{quote(str(folder / name))}"


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(os.environ.get(PG_ADMIN_ENV, PG_ADMIN), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database of our own, dropped afterwards (even when the benchmark fails)."""
    from urllib.parse import urlsplit

    name = f"tune_bench_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    admin = urlsplit(os.environ.get(PG_ADMIN_ENV, PG_ADMIN))
    try:
        yield f"postgresql+psycopg://{admin.netloc}/{name}"
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_spec(study: str, sections: dict[str, dict[str, Any]], **top: Any) -> Any:
    """A resolved spec: the built-in defaults with `sections` on top (no spec file is read)."""
    from marstune.tuning.config.spec import spec_from_stored

    return spec_from_stored({"study": study, **top, **sections})


def child_env(**extra: str) -> dict[str, str]:
    """Environment of benchmark subprocesses: quiet TensorFlow, this checkout importable, no stray storage."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    if "TUNE_STORAGE" not in extra:
        env.pop("TUNE_STORAGE", None)
    return env


def run_tune(
    args: Sequence[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 1800
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run the real `tune` command (`python -m tuning ...`); returns (wall seconds, the finished process)."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "marstune.tuning", *args],
        cwd=cwd,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"`tune {' '.join(args[:2])}` exited {proc.returncode}: " + " | ".join(tail))
    return seconds, proc


def proc_memory_mb(pid: int | str = "self") -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak so far) of a process in MB, from /proc (Linux)."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) / 1024
    return out


def at_least_int(low: int) -> Callable[[str], int]:
    """argparse type: an integer >= low."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return at_least_int(1)(text)


def refuse_same_file(out: Path, flag: str, *inputs: tuple[Path, str]) -> None:
    """A benchmark command never writes over its own input."""
    for path, name in inputs:
        if out.absolute() == path.absolute() or (out.exists() and path.exists() and out.samefile(path)):
            raise SystemExit(f"error: {flag} {out} is also the {name}; write the output elsewhere")
