"""The tiers (tests/tiers.py): a test's tier follows from what it uses, and the quick tier stays whole."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO, run_tune
from tests.tiers import SLOW_FIXTURES, slow_reason

REAL = ["objective.kind=unet", "train.epochs=1"]


def _starts_a_process() -> None:
    subprocess.run(["true"], check=True)


def _only_names_a_type() -> subprocess.CompletedProcess | None:
    return subprocess.CompletedProcess(["x"], 0) if False else None


def _through_a_helper() -> None:
    _starts_a_process()


def _through_the_cli() -> None:
    run_tune("status", cwd=REPO)


def _trains(model: object) -> None:
    model.fit([], epochs=1)  # type: ignore[attr-defined]


def _reads_real_settings() -> list[str]:
    return [*REAL, "search.trials=2"]


def _trains_a_unet_by_its_settings() -> list[str]:
    return ["objective.kind=unet", "train.epochs=1"]


def _pure() -> int:
    return sum(range(3))


# Held in a dict, which the tier rules do not read: these tests only name the examples, they start nothing.
EXAMPLES = {
    f.__name__: f
    for f in (
        _starts_a_process,
        _only_names_a_type,
        _through_a_helper,
        _through_the_cli,
        _trains,
        _reads_real_settings,
        _trains_a_unet_by_its_settings,
        _pure,
    )
}


def why(name: str, fixtures: tuple[str, ...] = (), params: tuple[str, ...] = ()) -> str | None:
    return slow_reason(fixtures, params, [EXAMPLES[name]])


def test_what_a_test_uses_decides_its_tier() -> None:
    assert why("_starts_a_process") == "a process of its own (subprocess)"
    assert why("_through_a_helper") == "a process of its own (subprocess) (through _starts_a_process)"
    assert why("_through_the_cli") == "a `tune` subprocess"
    assert why("_trains") == "a Keras training"
    assert why("_reads_real_settings") == "a Keras training"
    assert why("_trains_a_unet_by_its_settings") == "a Keras training"
    assert why("_pure", fixtures=("tmp_path", "pg_instance")) == "a PostgreSQL server of its own"
    assert why("_pure", fixtures=("runner",), params=("ray", "tpe")) == "a Ray cluster"


def test_a_test_that_starts_nothing_is_quick() -> None:
    assert why("_pure", fixtures=("tmp_path", "sqlite_url", "pg_url"), params=("optuna", "sqlite")) is None
    assert why("_only_names_a_type") is None  # a type of subprocess starts nothing


def test_the_quick_tier_runs_at_least_half_of_the_tests_and_every_room() -> None:
    code = (
        "import sys, pytest\n"
        "class P:\n"
        "    def pytest_collection_finish(self, session):\n"
        "        for item in session.items:\n"
        "            print('TIER', 'slow' if item.get_closest_marker('slow') else 'quick', item.nodeid)\n"
        "sys.exit(pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider'], plugins=[P()]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    tiers = [line.split(" ", 2)[1:] for line in out.stdout.splitlines() if line.startswith("TIER ")]
    quick = [node for tier, node in tiers if tier == "quick"]
    assert len(quick) >= len(tiers) / 2, (len(quick), len(tiers))
    rooms = {"config", "study", "outputs", "search/engines", "cli", "report", "final", "train", "workers"}
    for room in rooms:
        assert any(node.startswith(f"tests/tuning/{room}/") for node in quick), room
    for folder in ("tests/models/", "tests/data/", "tests/bench/"):
        assert any(node.startswith(folder) for node in quick), folder
    assert any("test_bad_input.py::test_bad_input_is_one_line" in node for node in quick)
    assert any("test_contract.py" in node and "optuna" in node and "sqlite" in node for node in quick)


def test_no_test_is_marked_slow_by_hand() -> None:
    """The tier follows from use alone: a hand-written marker would hide what tiers.py misses."""
    hand = re.compile(r"^\s*(@pytest\.mark\.slow|pytestmark\s*=.*\bslow\b)", re.M)
    marked = [str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("*.py") if hand.search(p.read_text())]
    assert marked == []


def test_real_tests_of_every_kind_land_in_the_full_tier() -> None:
    """The rules on the suite's own tests, not only on examples: a `tune` subprocess, an own PostgreSQL
    server, a case on the shared one, a Ray case, a training; and a read of tables stays quick."""
    from tests.tuning.cli import test_end_to_end
    from tests.tuning.search.engines import test_contract
    from tests.tuning.study import test_study_tables

    recycles = test_end_to_end.test_a_long_run_recycles_its_worker_process_and_loses_nothing
    assert slow_reason([], [], [recycles]) == "a `tune` subprocess"
    assert slow_reason(["pg_instance"], [], []) == SLOW_FIXTURES["pg_instance"]
    assert slow_reason([], [("optuna", "tpe", "postgresql")], []) is not None
    assert slow_reason([], [("ray", "tpe", "sqlite")], []) == "a Ray cluster"
    tables = test_study_tables.test_every_answer_matches_optuna
    assert slow_reason(["sqlite_url"], ["sqlite", "maximize"], [tables]) is None
    assert slow_reason([], [("optuna", "tpe", "sqlite")], [test_contract.Runner.run]) is None


def test_the_audit_hook_records_a_process_and_lets_python_s_uname_probe_pass() -> None:
    """The quick tier's watch (tests/conftest.py) itself: what it records and what it lets pass."""
    from tests import conftest

    saved, conftest._watch["started"] = conftest._watch["started"], []
    try:
        conftest._audit("subprocess.Popen", ("nvidia-smi", ["nvidia-smi", "-L"]))
        conftest._audit("_posixsubprocess.fork_exec", ([b"/usr/bin/python3", b"-c", b"..."],))
        conftest._audit("subprocess.Popen", ("uname", ["uname", "-p"]))
        conftest._audit("_posixsubprocess.fork_exec", ([b"uname", b"-p"],))
        conftest._audit("open", ("/etc/hosts", "r"))
        recorded = list(conftest._watch["started"] or [])
    finally:
        conftest._watch["started"] = saved
    assert len(recorded) == 2 and recorded[0].startswith("subprocess.Popen"), recorded
    assert recorded[1].startswith("_posixsubprocess.fork_exec"), recorded
