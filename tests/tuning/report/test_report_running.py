"""`tune report` of a study that a real `tune run --workers 2` is still writing to (SQLite).

Optuna's plots used to read the live storage while the report's hover rows came from an earlier read:
a trial finishing in between was a `KeyError` (issue 21, item 1). Every figure now draws one snapshot.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_tune
from tests.tuning.workers_util import kill_all, start_tune, trials_of, tune_env, wait_for, write_spec


def _finished(url: str, study: str) -> int:
    return sum(t.state.is_finished() for t in trials_of(url, study, missing_ok=True))


def test_report_of_a_study_that_two_workers_are_writing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    spec = write_spec(tmp_path, study="live", trials=3000, epochs=2, sleep=0.25)
    args = ["run", "--spec", str(spec), "--storage", url, "--workers", "2", "--quiet"]
    runner = start_tune(args, tmp_path / "run.log", tmp_path, tune_env())
    try:
        wait_for(lambda: _finished(url, "live") >= 10, 120, "the run never finished 10 trials")
        for k in range(2):
            before = _finished(url, "live")
            out = tmp_path / f"report{k}.html"
            result = run_tune(
                "report",
                "--storage",
                url,
                "--study",
                "live",
                "--out",
                str(out),
                "--no-examples",
                cwd=tmp_path,
            )
            after = _finished(url, "live")
            assert result.returncode == 0, result.stderr[-3000:]
            assert "Traceback" not in result.stderr
            assert out.is_file() and "Optimization history" in out.read_text()
            # the study moved on while the report was made: it reported on a running study
            assert after > before, (before, after)
            assert runner.poll() is None
    finally:
        kill_all([runner])
