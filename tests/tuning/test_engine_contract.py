"""The engine contract, parametrized over every sampler and every storage (Optuna's contract-test style).

A closed-form objective stands in for training here, so each case takes about a second; the real Keras
path is exercised end to end in test_end_to_end.py.
"""

from __future__ import annotations

import optuna
import pytest
from marstune.tuning.engines import RunOptions
from marstune.tuning.engines import _optuna as engine
from marstune.tuning.errors import TuneError
from marstune.tuning.samplers import SAMPLERS
from marstune.tuning.spec import Spec, load_spec
from marstune.tuning.storage import open_storage
from optuna.trial import TrialState

from tests.conftest import REPO

SEARCHING = sorted(s for s in SAMPLERS if s != "grid")


def make_spec(sampler: str, trials: int = 6, *sets: str) -> Spec:
    return load_spec(
        REPO / "studies/unet.yaml",
        [
            "objective.kind=analytic",
            f"search.sampler={sampler}",
            f"search.trials={trials}",
            "train.epochs=3",
            "search.pruner=none",
            *sets,
        ],
    )


def trials_of(url: str, name: str = "unet-mars") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials(deepcopy=False)


@pytest.fixture(params=SEARCHING)
def sampler_name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_values_stay_in_bounds_and_target_is_reached(sampler_name: str, storage_url: str) -> None:
    spec = make_spec(sampler_name, trials=8)
    summary = engine.run(spec, storage_url, RunOptions(quiet=True))
    trials = trials_of(storage_url)
    assert summary.finished == 8
    assert len(trials) == 8 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(8))
    for t in trials:
        assert spec.space.contains(t.params), t.params
    assert trials[0].params == spec.baseline  # the baseline is always trial 0
    assert trials[0].user_attrs["enqueued_as"] == "baseline"


def test_same_seed_gives_same_first_trials(sampler_name: str, tmp_path) -> None:
    runs = []
    for k in range(2):
        url = f"sqlite:///{tmp_path / f'{k}.db'}"
        engine.run(make_spec(sampler_name, 6), url, RunOptions(quiet=True))
        runs.append([t.params for t in trials_of(url)])
    assert runs[0] == runs[1]
    url = f"sqlite:///{tmp_path / 'other.db'}"
    engine.run(make_spec(sampler_name, 6, "train.seed=7"), url, RunOptions(quiet=True))
    assert [t.params for t in trials_of(url)][1:] != runs[0][1:]


def test_failed_trial_does_not_stop_the_study(sampler_name: str, storage_url: str) -> None:
    spec = make_spec(sampler_name, 5, "objective.fail_trials=[1, 3]")
    summary = engine.run(spec, storage_url, RunOptions(quiet=True))
    trials = trials_of(storage_url)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [1, 3]
    assert all("injected failure" in t.user_attrs["fail_reason"] for t in failed)
    assert summary.finished == 5 and len(trials) == 7


def test_resume_continues_to_the_target(sampler_name: str, storage_url: str) -> None:
    engine.run(make_spec(sampler_name, 3), storage_url, RunOptions(quiet=True))
    assert len(trials_of(storage_url)) == 3
    summary = engine.run(make_spec(sampler_name, 7), storage_url, RunOptions(quiet=True))
    assert summary.finished == 7 and summary.ran_here == 4
    again = engine.run(make_spec(sampler_name, 7), storage_url, RunOptions(quiet=True))
    assert again.ran_here == 0  # at the target already: no overshoot
    assert len(trials_of(storage_url)) == 7


def test_grid_evaluates_every_point_exactly_once(storage_url: str) -> None:
    small = [
        "space={levels: {type: int, low: 3, high: 4}, kernel: {type: categorical, choices: [3, 5]},"
        " dropout: {type: float, low: 0.0, high: 0.4, grid: [0.0, 0.2, 0.4]}}"
    ]
    spec = make_spec("grid", 100, *small)
    assert spec.space.grid_size() == 12
    summary = engine.run(spec, storage_url, RunOptions(quiet=True))
    trials = trials_of(storage_url)
    points = sorted((t.params["levels"], t.params["kernel"], t.params["dropout"]) for t in trials)
    assert len(trials) == 12 == summary.finished
    assert len(set(points)) == 12
    assert trials[0].params == {"levels": 4, "kernel": 3, "dropout": 0.2}  # baseline first
    assert engine.run(spec, storage_url, RunOptions(quiet=True)).ran_here == 0


def test_pruner_prunes_below_median(storage_url: str) -> None:
    spec = make_spec("random", 12, "search.pruner=median", "train.epochs=4")
    engine.run(spec, storage_url, RunOptions(quiet=True))
    states = [t.state for t in trials_of(storage_url)]
    assert states.count(TrialState.PRUNED) >= 1
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 12
    pruned = [t for t in trials_of(storage_url) if t.state == TrialState.PRUNED]
    assert all(len(t.intermediate_values) < 4 for t in pruned)


def test_every_trial_fails_stops_with_a_clear_error(sqlite_url: str) -> None:
    spec = make_spec("random", 20, f"objective.fail_trials={list(range(30))}")
    with pytest.raises(TuneError, match="trials in a row failed"):
        engine.run(spec, sqlite_url, RunOptions(quiet=True))


def test_a_different_spec_for_an_existing_study_is_refused(sqlite_url: str) -> None:
    engine.run(make_spec("random", 2), sqlite_url, RunOptions(quiet=True))
    with pytest.raises(TuneError, match="different spec"):
        engine.run(make_spec("random", 2, "train.epochs=5"), sqlite_url, RunOptions(quiet=True))
