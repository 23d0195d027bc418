"""The tiers (tests/tiers.py): a test's tier follows from what it uses, and the quick tier stays whole."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO, run_tune
from tests.tiers import slow_reason

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
