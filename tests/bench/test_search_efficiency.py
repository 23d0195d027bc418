"""Target 1's bookkeeping: what a method would export after each trial, the compute until that reaches
the fixed target, and quartiles over seeds where some never reached it; one real replayed study."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import search_efficiency as bench

GOOD = {"base_filters": 32, "levels": 2, "kernel": 5, "dropout": 0.017, "activation": "gelu"}
POOR = {"base_filters": 8, "levels": 4, "kernel": 3, "dropout": 0.46, "activation": "relu"}


def test_the_held_configuration_is_the_best_observed_completed_trial() -> None:
    run = bench.Run([POOR, GOOD, POOR], [0.3, None, 0.4], [12, 2, 12], [60.0, 5.0, 60.0])
    assert run.held() == [POOR, POOR, POOR]  # a pruned trial (None) is never exported
    run = bench.Run([POOR, GOOD], [0.3, 0.5], [12, 12], [60.0, 80.0])
    assert run.held() == [POOR, GOOD]


def test_compute_is_counted_until_the_held_configuration_truly_reaches_the_target() -> None:
    assert bench.true_score(GOOD) > bench.true_score(POOR)
    target = (bench.true_score(GOOD) + bench.true_score(POOR)) / 2
    run = bench.Run([POOR, POOR, GOOD, POOR], [0.3, 0.2, 0.5, 0.9], [12, 3, 12, 12], [60.0, 9.0, 80.0, 1.0])
    assert bench.reach(run, target) == (27, 149.0)
    # observed luck on a poor configuration does not count as reaching: its true score decides
    lucky = bench.Run([POOR], [0.99], [12], [60.0])
    assert bench.reach(lucky, target) is None and bench.exported(lucky) == bench.true_score(POOR)


def test_quartiles_keep_seeds_that_never_reached_as_infinite() -> None:
    low, median, high = bench.quartiles([10.0, 20.0, 30.0, math.inf])
    assert (low, median, high) == (10.0, 25.0, 30.0)
    assert bench.quartiles([1.0, math.inf, math.inf])[1] == math.inf


def test_a_replayed_study_of_our_default_is_read_back_with_its_charged_seconds(tmp_path: Path) -> None:
    ours = next(m for m in bench.methods() if m.ours)
    run = bench.run_method(ours, seed=0, trials=8, folder=tmp_path)
    assert len(run.params) == 8  # every finished trial, pruned ones included
    assert all(1 <= e <= ours.epochs for e in run.epochs)
    assert all(s > 0 for s in run.seconds)
    assert any(v is not None for v in run.values)
    assert bench.exported(run) == pytest.approx(bench.true_score(run.held()[-1]))
