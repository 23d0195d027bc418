"""What the Optuna engine promises beyond the contract (test_contract.py): seeded draws, pruning,
exactly which trials fail. A closed-form objective stands in for training.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from marstune.tuning.config.space import trained_as
from marstune.tuning.config.spec import Spec, load_spec
from marstune.tuning.search.engines import OptunaOptions
from marstune.tuning.search.engines import optuna_engine as engine
from marstune.tuning.search.samplers import SAMPLERS
from marstune.tuning.study.storage import open_storage
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


def test_same_seed_gives_same_first_trials(sampler_name: str, tmp_path) -> None:
    runs = []
    for k in range(2):
        url = f"sqlite:///{tmp_path / f'{k}.db'}"
        engine.run(make_spec(sampler_name, 6), url, OptunaOptions(quiet=True))
        runs.append([t.params for t in trials_of(url)])
    assert runs[0] == runs[1]
    url = f"sqlite:///{tmp_path / 'other.db'}"
    engine.run(make_spec(sampler_name, 6, "train.seed=7"), url, OptunaOptions(quiet=True))
    assert [t.params for t in trials_of(url)][1:] != runs[0][1:]


def test_pruner_prunes_below_median(storage_url: str) -> None:
    spec = make_spec("random", 12, "search.pruner=median", "train.epochs=4")
    engine.run(spec, storage_url, OptunaOptions(quiet=True))
    states = [t.state for t in trials_of(storage_url)]
    assert states.count(TrialState.PRUNED) >= 1
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 12
    pruned = [t for t in trials_of(storage_url) if t.state == TrialState.PRUNED]
    assert all(len(t.intermediate_values) < 4 for t in pruned)


def test_a_target_lowered_by_another_run_stops_this_one(tmp_path, capfd) -> None:
    # Terminal 1: `tune run --trials 10`; terminal 2, meanwhile: `tune run --trials 3` on the same study.
    import threading
    import time

    from marstune.tuning.study.lifecycle import TARGET_ATTR

    url = f"sqlite:///{tmp_path / 't.db'}"
    done = threading.Event()

    def lower_the_target() -> None:
        while not done.is_set():
            try:
                study = optuna.load_study(study_name="unet-mars", storage=open_storage(url))
            except Exception:
                time.sleep(0.05)
                continue
            if sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)) >= 1:
                study.set_user_attr(TARGET_ATTR, 3)
                return
            time.sleep(0.05)

    other = threading.Thread(target=lower_the_target)
    other.start()
    try:
        summary = engine.run(make_spec("random", 10, "objective.sleep=0.3"), url, OptunaOptions(quiet=True))
    finally:
        done.set()
        other.join()
    assert summary.finished <= 4 and summary.target == 3, summary
    assert "another run changed the target to 3 trials" in capfd.readouterr().err  # why it stopped early


@pytest.mark.parametrize("name", ["gp", "tpe"])
def test_a_model_based_sampler_that_repeats_itself_still_reaches_the_target(name: str, tmp_path) -> None:
    # 8 configurations and a target of 8: GP's argmax lands on a configuration the study has, again and
    # again, on unchanged data; the trial after a duplicate is drawn at random, so the study finishes.
    small = (
        "space={levels: {type: int, low: 3, high: 4}, kernel: {type: categorical, choices: [3, 5]},"
        " activation: {type: categorical, choices: [relu, elu]}}"
    )
    spec = make_spec(name, 8, small)
    url = f"sqlite:///{tmp_path}/s.db"
    summary = engine.run(spec, url, OptunaOptions(quiet=True))
    complete = [t for t in trials_of(url) if t.state == TrialState.COMPLETE]
    assert summary.finished == 8
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 8


@pytest.mark.parametrize("name", ["grid", "tpe"])
def test_a_loss_key_its_loss_ignores_makes_no_second_trial(name: str, tmp_path) -> None:
    # crossentropy reads no focal_gamma: crossentropy with gamma 1 and with gamma 3 train the same model,
    # so the grid runs it once and a sampler's second draw of it is a duplicate, not a trial.
    space = (
        "space={loss: {type: categorical, choices: [crossentropy, focal]},"
        " focal_gamma: {type: categorical, choices: [1.0, 3.0]}, levels: {type: int, low: 3, high: 4}}"
    )
    spec = make_spec(name, 6, space, "baseline.focal_gamma=1.0")
    url = f"sqlite:///{tmp_path}/s.db"
    summary = engine.run(spec, url, OptunaOptions(quiet=True))
    complete = [t for t in trials_of(url) if t.state == TrialState.COMPLETE]
    assert summary.finished == 6 == len(complete)
    assert len({tuple(sorted(trained_as(t.params).items())) for t in complete}) == 6
    assert sum(t.params["loss"] == "crossentropy" for t in complete) == 2
