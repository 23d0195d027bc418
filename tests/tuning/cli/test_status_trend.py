"""`tune status` answers "is it improving?": the best-so-far sparkline rises with an improving study."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from marstune.tuning.cli.status import _BARS, sparkline
from marstune.tuning.study.storage import open_storage
from tests.conftest import run_tune


def _levels(trend: str) -> list[int]:
    return [_BARS.index(c) for c in trend]


def _study(url: str, name: str, values: list[float]) -> None:
    study = optuna.create_study(study_name=name, storage=open_storage(url, create=True), direction="maximize")
    for v in values:
        study.add_trial(optuna.trial.create_trial(value=v))


def test_sparkline_is_the_running_best() -> None:
    assert sparkline([]) == ""
    assert _levels(sparkline([0.1, 0.5, 0.3, 0.9])) == [0, 3, 3, 7]  # 0.3 does not lower the best
    assert sparkline([0.9, 0.1, 0.2]) == "▁▁▁"  # best first: flat, nothing improved since
    squeezed = sparkline([i / 100 for i in range(100)], width=20)
    assert len(squeezed) == 20 and squeezed[0] == "▁" and squeezed[-1] == "█"


def test_status_trend_rises_for_an_improving_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    _study(url, "improving", [0.10, 0.30, 0.20, 0.45, 0.60, 0.55, 0.80, 0.90])
    _study(url, "stuck", [0.70, 0.40, 0.50, 0.60])
    result = run_tune("status", "--storage", url, "--json", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {r["study"]: r for r in json.loads(result.stdout)}
    rising = _levels(rows["improving"]["trend"])
    assert len(rising) == 8
    assert all(a <= b for a, b in zip(rising, rising[1:], strict=False)), rows["improving"]["trend"]
    assert rising[0] == 0 and rising[-1] == len(_BARS) - 1 and len(set(rising)) >= 5
    assert rows["improving"]["best_value"] == 0.90 and rows["improving"]["best_trial"] == 7
    assert set(_levels(rows["stuck"]["trend"])) == {0}  # flat: no improvement after trial 0
    table = run_tune("status", "--storage", url, cwd=tmp_path, timeout=120)
    assert table.returncode == 0, table.stderr
    line = next(ln for ln in table.stdout.splitlines() if "improving" in ln)
    assert rows["improving"]["trend"] in line and "0.9000" in line


def test_duplicates_and_interrupts_are_not_counted_as_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A duplicate the sampler proposed or a Ctrl-C is no failure of a configuration: status and the
    end-of-run summary count them apart (`skipped`), and a lowered target reads "4 (target 2)"."""
    from optuna.trial import TrialState

    from marstune.tuning.cli.status import study_rows
    from marstune.tuning.cli.summary import print_summary
    from marstune.tuning.study import tables
    from marstune.tuning.study.tables import FailKind

    url = f"sqlite:///{tmp_path / 'tune.db'}"
    _study(url, "mixed", [0.2, 0.4])
    study = optuna.load_study(study_name="mixed", storage=open_storage(url))
    study.set_user_attr("target_trials", 1)
    for kind in (FailKind.DUPLICATE, FailKind.INTERRUPTED, FailKind.ERROR, None):
        system = {} if kind is None else {tables.FAIL_KIND_ATTR: str(kind)}
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, system_attrs=system))
    (row,) = study_rows(url, "mixed")
    assert (row["complete"], row["fail"], row["skipped"]) == (2, 2, 2), row
    shown = run_tune("status", "--storage", url, cwd=tmp_path, timeout=120)
    assert shown.returncode == 0 and "skipped" in shown.stdout, shown.stderr
    capsys.readouterr()
    result = print_summary(url, "mixed", 1.0)
    assert result["states"]["fail"] == 2 and result["states"]["skipped"] == 2
    assert "study mixed: 2 (target 1) finished" in capsys.readouterr().out
