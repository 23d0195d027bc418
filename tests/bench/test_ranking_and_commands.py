"""`python -m bench ranking` and `python -m bench surrogate`: the ranking figures on curves whose answer
is known, and both commands end to end on a small synthetic curves file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from bench.curves_data import Curves, curves_from_doc
from bench.ranking import ranking_table, rho_rows
from marstune.tuning.search.replay import Replay
from tests.bench.synthetic_curves import SPACE, curves_doc
from tests.conftest import REPO


def _curves(miou: np.ndarray) -> Curves:
    n, T = miou.shape
    return Curves([{} for _ in range(n)], miou, np.ones((n, T)), np.ones((n, T)), SPACE, n, 0)


def test_bootstrap_rank_correlation_equals_scipys_with_ties() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, (20, 9)).astype(float), rng.random((20, 9))  # many ties in a
    expected = [spearmanr(x, y).statistic for x, y in zip(a, b, strict=True)]
    assert np.allclose(rho_rows(a, b), expected)


def test_a_ranking_that_flips_after_the_first_epoch() -> None:
    final = np.array([0.5, 0.4, 0.3, 0.2, 0.1])
    first = final[::-1] - 0.45  # the worst configuration leads after one epoch
    miou = np.stack([first, final, final - 0.01], axis=1)  # (5 configs, 3 epochs)
    rows = ranking_table(_curves(miou))
    assert [round(r["rho_best"], 6) for r in rows] == [-1.0, 1.0, 1.0]
    assert rows[0]["regret"] == pytest.approx(0.4) and rows[1]["regret"] == 0.0
    assert [r["winner_in_top3"] for r in rows] == [False, True, True]
    assert rows[2]["rho_last"] == pytest.approx(1.0)  # the last epoch keeps the order here


def test_best_so_far_never_forgets_an_early_peak() -> None:
    # Config 0 peaks at epoch 1 and collapses; by best-so-far it stays first, by last epoch it is last.
    miou = np.array([[0.6, 0.1, 0.1], [0.2, 0.3, 0.4], [0.1, 0.2, 0.3]])
    rows = ranking_table(_curves(miou))
    assert rows[-1]["rho_best"] == pytest.approx(1.0)
    assert rows[-1]["rho_last"] == pytest.approx(-0.5)


def test_surrogate_and_ranking_commands_end_to_end(tmp_path: Path) -> None:
    curves = tmp_path / "curves.json"
    curves.write_text(json.dumps(curves_doc(n=12, seed=7)))
    out = tmp_path / "surrogate.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "surrogate",
            "--curves",
            str(curves),
            "--out",
            str(out),
            "--folds",
            "3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    text = run.stdout
    assert "12 whole curves of 12 epochs" in text and "3-fold" in text
    for line in (
        "kron-gp",
        "trend-gp",
        "knn",
        "ceiling",
        "exported: ",
        "KS distance",
        "== ranking at epoch k",
    ):
        assert line in text
    doc = json.loads(out.read_text())
    assert doc["validation"]["configs"] == 12 and set(doc["validation"]["means"]) == {
        "kron-gp",
        "trend-gp",
        "knn",
    }
    assert (
        len(Replay.from_json(out).curve(curves_from_doc(json.loads(curves.read_text())).params[0], 0)) == 12
    )
    ranking = subprocess.run(
        [sys.executable, "-m", "bench", "ranking", "--curves", str(curves)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ranking.returncode == 0 and ranking.stdout.count("\n") >= 12 + 3
