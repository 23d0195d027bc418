"""A study stopped on failures goes on when a person says so, and only then (issue 21, item 2).

Real `tune run` and `tune worker` on SQLite with the analytic objective: trials named in
objective.fail_trials fail, the others succeed, so "the cause is fixed" once the failing numbers are past.
"""

from __future__ import annotations

import copy
from pathlib import Path

import optuna
from optuna.trial import TrialState

from marstune.tuning.config.spec import DEFAULTS
from marstune.tuning.study.storage import open_storage
from tests.conftest import run_tune, tune_in_process
from tests.tuning.workers_util import write_spec


def _trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()


def _error_line(result, *needles: str) -> str:  # noqa: ANN001 - a CompletedProcess
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error: ")]
    assert result.returncode != 0 and len(lines) == 1, result.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_a_stopped_study_resumes_only_with_the_stop_it_names(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    # trials 1..10 fail (stop 1), 11 succeeds, 12..21 fail (stop 2), then everything succeeds
    failing = [*range(1, 11), *range(12, 22)]
    spec = write_spec(tmp_path, study="flaky", trials=26, epochs=1, fail_trials=failing)
    run = ("run", "--spec", str(spec), "--storage", url, "-q")

    first = run_tune(*run, cwd=tmp_path)
    stop = _error_line(first, "the last 10 trials failed", "--resume-failed 10", "--warm-start-from flaky")
    assert len(_trials(url, "flaky")) == 11

    # what a supervisor does: the same command, and a restarted worker: no trial runs
    _error_line(run_tune(*run, cwd=tmp_path), "--resume-failed 10")
    worker = run_tune("worker", "--study", "flaky", "--storage", url, "-q", cwd=tmp_path)
    _error_line(worker, "--resume-failed 10")
    assert len(_trials(url, "flaky")) == 11
    _error_line(run_tune(*run, "--resume-failed", "0", cwd=tmp_path), "not among", "(trials 1..10)")
    assert len(_trials(url, "flaky")) == 11

    # the person fixed the cause and says so: a new streak starts, until the next stop (12..21)
    resumed = run_tune(*run, "--resume-failed", "10", cwd=tmp_path)
    assert "resumed after 10 failed trials" in resumed.stderr, resumed.stderr[-3000:]
    _error_line(resumed, "the last 10 trials failed", "--resume-failed 21")
    trials = _trials(url, "flaky")
    assert len(trials) == 22 and trials[11].state == TrialState.COMPLETE

    # a restart loop that kept the old flag cannot resume the new stop: no compute is burnt
    for again in (run, ("worker", "--study", "flaky", "--storage", url, "-q")):
        again_result = run_tune(*again, "--resume-failed", "10", cwd=tmp_path)
        _error_line(again_result, "(trials 12..21)", "pass --resume-failed 21")
    assert len(_trials(url, "flaky")) == 22

    # a worker may resume too; the study then reaches its target
    worker_args = ("worker", "--study", "flaky", "--storage", url, "-q")
    done = run_tune(*worker_args, "--resume-failed", "21", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    states = [t.state for t in _trials(url, "flaky")]
    assert states.count(TrialState.COMPLETE) == 26 and states.count(TrialState.FAIL) == 20
    assert "Traceback" not in stop


def test_a_new_study_warm_starts_from_an_old_one_in_a_narrower_space(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    old = write_spec(tmp_path, study="wide", sampler="random", trials=12, epochs=1)
    assert run_tune("run", "--spec", str(old), "--storage", url, "-q", cwd=tmp_path).returncode == 0
    wide = [t for t in _trials(url, "wide") if t.state == TrialState.COMPLETE]

    narrow_dir = tmp_path / "narrow"
    narrow_dir.mkdir()
    space = copy.deepcopy(DEFAULTS["space"])
    space["levels"] = {"type": "int", "low": 3, "high": 4}
    spec = write_spec(narrow_dir, study="narrow", sampler="random", trials=9, epochs=1, space=space)
    run = ("run", "--spec", str(spec), "--storage", url, "--warm-start-from", "wide", "-q")
    made = run_tune(*run, cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    assert "warm-started from wide" in made.stderr

    narrow = _trials(url, "narrow")
    baseline = narrow[0].params
    inside = sorted(
        (t for t in wide if 3 <= t.params["levels"] <= 4 and t.params != baseline),
        key=lambda t: (-t.value, t.number),
    )
    seeded = [t for t in narrow if t.user_attrs.get("enqueued_as") == "warm-start"]
    assert seeded and len(seeded) == min(5, len(inside))
    assert [t.user_attrs["warm_start_of"] for t in seeded] == [f"wide#{t.number}" for t in inside[:5]]
    assert [t.params for t in seeded] == [t.params for t in inside[:5]]
    assert [t.number for t in seeded] == list(range(1, len(seeded) + 1))  # right after the baseline

    again = run_tune(*run, "--trials", "10", cwd=tmp_path)  # the same command continues the study it made
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(_trials(url, "narrow")) == 10
    _error_line(
        run_tune(*("run", "--spec", str(old), "--storage", url, "--warm-start-from", "narrow"), cwd=tmp_path),
        "study 'wide' exists already",
    )
    _error_line(
        run_tune(*run[:-3], "--study", "other", "--warm-start-from", "nope", "-q", cwd=tmp_path),
        "--warm-start-from nope: no such study",
    )


def test_a_warm_start_from_a_study_of_only_its_baseline_says_so(tmp_path: Path) -> None:
    """The old study's one completed trial is the new study's baseline too: nothing is queued, and the
    line says why (not "none lies in the new space", which it does)."""
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    analytic = ("--storage", url, "--set", "objective.kind=analytic", "--epochs", "1", "-q")
    assert tune_in_process("run", "--study", "one", "--trials", "1", *analytic, cwd=tmp_path).returncode == 0
    made = tune_in_process(
        "run", "--study", "two", "--trials", "1", "--warm-start-from", "one", *analytic[:-1], cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    assert "0 of its best configurations queued" in made.stderr, made.stderr
    assert "none: those of one that lie in the new space are the baseline" in made.stderr, made.stderr


def test_any_failure_of_the_stop_resumes_it(tmp_path: Path) -> None:
    """With several workers each stop line names the newest failure its worker saw (10 on one, 11 on
    another): any trial of the stopping streak resumes it, and only that stop."""
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    spec = write_spec(tmp_path, study="two", trials=14, epochs=1, fail_trials=list(range(1, 11)))
    run = ("run", "--spec", str(spec), "--storage", url, "-q")
    assert tune_in_process(*run, cwd=tmp_path).returncode == 1
    resumed = tune_in_process(*run, "--resume-failed", "9", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed after 10 failed trials (the newest 10)" in resumed.stderr, resumed.stderr[-3000:]
    states = [t.state for t in _trials(url, "two")]
    assert states.count(TrialState.COMPLETE) == 14 and states.count(TrialState.FAIL) == 10
