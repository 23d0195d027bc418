"""`python -m bench --quick` runs every benchmark at its smallest size and ends with one well-formed
verdict line per target. The figures of a quick run mean nothing; only the shape is checked here."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from bench._common import Outcome, at_least, at_most
from tests.conftest import REPO

LINE = re.compile(r"^TARGET (\d): (.+): measured (.+) \(target (>=|<=|<) (.+)\): (MET|MISSED)$")


def _bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TUNE_STORAGE", None)
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_outcome_lines_and_verdicts() -> None:
    assert at_least(1, "x", 2.5, 2.0).line() == "TARGET 1: x: measured 2.50x (target >= 2.00x): MET"
    missed = at_least(4, "y", 1.1, 1.3, note="why")
    assert missed.line().endswith("(target >= 1.30x): MISSED") and missed.note == "why"
    assert at_most(3, "z", 1.25, 1.2).line().endswith("MISSED")
    assert at_least(2, "w", 0.95, 0.95).met and at_most(3, "m", 1.2, 1.2).met  # bounds are inclusive
    assert LINE.match(Outcome(5, "s", "0.50 s / 0.60 s / 1.10x", "< 2 s / < 2 s / <= 2.00x", True).line())


def test_unknown_target_is_refused_with_the_valid_names() -> None:
    result = _bench("nosuch", timeout=60)
    assert result.returncode == 2
    assert "unknown target 'nosuch'" in result.stderr and "storage" in result.stderr


@pytest.mark.timeout(1600)  # every benchmark at its smallest size: ~15 min on a loaded 2-core machine
def test_every_benchmark_runs_quick_and_ends_with_one_verdict_per_target() -> None:
    result = _bench("--quick", timeout=1500)  # 900 s ran out at load ~10 (a loaded CI machine)
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-3000:]  # 2 = a bench crashed
    lines = result.stdout.strip().splitlines()
    verdicts = [LINE.match(line) for line in lines[-5:]]
    assert all(verdicts), lines[-5:]
    assert [int(m.group(1)) for m in verdicts if m] == [1, 2, 3, 4, 5]
    assert "measured nothing" not in result.stdout
    # every section printed its own heading and figures before the verdicts
    for n, heading in enumerate(
        ("search efficiency", "service overhead", "memory", "parallel", "storage"), 1
    ):
        assert f"== TARGET {n}: {heading}" in result.stdout
