"""The engine contract (search/engines/__init__.py), over every engine x sampler x storage.

Optuna's contract-test style: one suite, bound by parametrized fixtures to every implementation, so an
engine or sampler added to ENGINES gets the whole suite. A closed-form objective stands in for training
(the same `evaluate` call), so each case takes seconds; real U-Nets are trained end to end elsewhere.
Ray runs on one real local cluster for the module (`ray start`, loopback, stopped by PID).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from marstune.tuning.config.spec import Spec, load_spec
from marstune.tuning.errors import SpecError, TooManyFailures
from marstune.tuning.search.engines import ENGINES, RunSummary, load_engine
from marstune.tuning.study.storage import open_storage
from marstune.tuning.study.trial_attrs import trial_config
from tests.conftest import REPO, STORAGES
from tests.tuning.ray_cluster import RayCluster, start_cluster

# Every engine x sampler x storage, but Ray's samplers on SQLite only: each Ray run costs ~15 s (actors,
# the driver's connection), and its storage path depends on neither the sampler nor the test, so Ray on
# PostgreSQL runs once, in the first test (RAY_ON_POSTGRESQL).
CASES = [
    (e, s, storage)
    for e, info in sorted(ENGINES.items())
    for s in info.samplers
    if s != "grid"
    for storage in STORAGES
    if not (e == "ray" and storage == "postgresql")
]
RAY_ON_POSTGRESQL = [("ray", "tpe", "postgresql")]
# Resuming and a failed trial are Ray's searcher and scheduler at work, whichever Optuna sampler proposes:
# every Ray sampler runs the in-bounds test, these two run Ray with tpe (model-based) and random.
BEHAVIOUR_CASES = [c for c in CASES if c[0] != "ray" or c[1] in ("tpe", "random")]
GRID_ENGINES = [e for e, info in sorted(ENGINES.items()) if "grid" in info.samplers]
SMALL_GRID = (
    "space={levels: {type: int, low: 3, high: 4}, kernel: {type: categorical, choices: [3, 5]},"
    " dropout: {type: float, low: 0.0, high: 0.4, grid: [0.0, 0.2, 0.4]}}"
)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("ray-logs"))
    saved = {k: os.environ.get(k) for k in cluster.env}
    os.environ.update(cluster.env)  # the driver (this process) needs the cluster's token
    try:
        yield cluster
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        cluster.stop()


class Runner:
    """Runs one engine the way `tune run` would, with the options that engine takes."""

    def __init__(self, engine: str, cluster: RayCluster | None) -> None:
        self.engine, self.cluster = engine, cluster

    def spec(self, sampler: str, trials: int, *sets: str) -> Spec:
        return load_spec(
            REPO / "studies/unet.yaml",
            [
                "objective.kind=analytic",
                f"search.engine={self.engine}",
                f"search.sampler={sampler}",
                f"search.trials={trials}",
                "train.epochs=3",
                "search.pruner=none",
                *sets,
            ],
        )

    def run(self, spec: Spec, url: str, *, explicit_target: bool = True) -> RunSummary:
        info = ENGINES[self.engine]
        extra = {"address": self.cluster.address, "cpus_per_trial": 1.0} if self.cluster else {}
        options = info.options(quiet=True, explicit_target=explicit_target, **extra)
        return load_engine(self.engine).run(spec, url, options)


@pytest.fixture
def runner(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runner:
    engine = request.param
    monkeypatch.chdir(tmp_path)  # project files (Keras Tuner, Ray) go under ./studies/<study>/
    cluster = request.getfixturevalue("ray_cluster") if engine == "ray" else None
    return Runner(engine, cluster)


def trials_of(url: str, name: str = "unet-mars") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials(deepcopy=False)


def _continues(t: optuna.trial.FrozenTrial) -> bool:
    return (t.user_attrs.get("hyperband") or {}).get("continues_trial") is not None


@pytest.fixture
def url(request: pytest.FixtureRequest) -> str:
    """A real storage of the kind the case names (a fresh SQLite file, or a fresh PostgreSQL database)."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


def by_engine_sampler_storage(cases: list[tuple[str, str, str]]) -> pytest.MarkDecorator:
    ids = [f"{e}-{s}-{storage}" for e, s, storage in cases]
    return pytest.mark.parametrize(("runner", "sampler", "url"), cases, indirect=["runner", "url"], ids=ids)


@by_engine_sampler_storage(CASES + RAY_ON_POSTGRESQL)
def test_values_stay_in_bounds_and_the_target_is_reached(runner: Runner, sampler: str, url: str) -> None:
    spec = runner.spec(sampler, 6)
    summary = runner.run(spec, url)
    trials = trials_of(url)
    assert summary.finished == 6
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(6))
    for t in trials:
        assert spec.space.contains(t.params), t.params
        assert t.user_attrs["engine"] == runner.engine
        assert trial_config(t.system_attrs, t.user_attrs) == spec.config_for(t.params)
        assert "config" not in t.user_attrs  # a system attribute: the dashboard's trial page stays narrow
        assert "worker" in t.user_attrs
        assert t.value == max(t.intermediate_values.values())  # the best validation mIoU of its epochs
    baseline = trials[0]
    assert baseline.params == spec.baseline and baseline.user_attrs["enqueued_as"] == "baseline"
    # No configuration twice, unless a trial says it repeats one: a retry, or a Hyperband round that
    # trains an earlier trial's configuration for a longer budget.
    fresh = [t for t in trials if "retry_of" not in t.user_attrs and not _continues(t)]
    assert len({tuple(sorted(t.params.items())) for t in fresh}) == len(fresh)


@by_engine_sampler_storage(BEHAVIOUR_CASES)
def test_resume_continues_to_the_target_without_overshoot(runner: Runner, sampler: str, url: str) -> None:
    runner.run(runner.spec(sampler, 3), url)
    first = {t.number: t.params for t in trials_of(url)}
    assert len(first) == 3
    summary = runner.run(runner.spec(sampler, 5), url)
    assert summary.finished == 5
    again = runner.run(runner.spec(sampler, 5), url)
    assert again.ran_here == 0  # at the target already
    trials = trials_of(url)
    assert len(trials) == 5 and {t.number: t.params for t in trials[:3]} == first


@by_engine_sampler_storage(BEHAVIOUR_CASES)
def test_a_failed_trial_does_not_stop_the_study(runner: Runner, sampler: str, url: str) -> None:
    summary = runner.run(runner.spec(sampler, 4, "objective.fail_trials=[1]"), url)
    trials = trials_of(url)
    assert summary.finished == 4
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert all("injected failure of trial 1" in t.user_attrs["fail_reason"] for t in failed)
    one = [t for t in trials if t.number == 1][0]
    # Optuna and Keras Tuner record the failure; Ray retries the trial once, and the retry completes.
    assert one.state == TrialState.FAIL or one.user_attrs.get("attempt") == 2


@pytest.mark.parametrize("runner", sorted(ENGINES), indirect=True)
def test_a_study_whose_every_trial_fails_stops(runner: Runner, sqlite_url: str) -> None:
    sets = (f"objective.fail_trials={list(range(40))}", "objective.fail_every_attempt=true")
    with pytest.raises(TooManyFailures, match=r"the last 1\d trials failed.*injected failure"):
        runner.run(runner.spec("random", 30, *sets), sqlite_url)
    assert 10 <= len(trials_of(sqlite_url)) <= 12  # stopped at the streak, not at the target


@pytest.mark.parametrize("runner", sorted(ENGINES), indirect=True)
def test_another_spec_for_an_existing_study_is_refused_naming_the_keys(
    runner: Runner, sqlite_url: str
) -> None:
    runner.run(runner.spec("random", 2), sqlite_url)
    with pytest.raises(SpecError, match=r"another spec \(train\.epochs: 3 there, 5 here\)"):
        runner.run(runner.spec("random", 2, "train.epochs=5"), sqlite_url)
    other = [s for s in ENGINES[runner.engine].samplers if s not in ("random", "grid")][0]
    with pytest.raises(SpecError, match=f"search.sampler: 'random' there, '{other}' here"):
        runner.run(runner.spec(other, 2), sqlite_url)
    assert len(trials_of(sqlite_url)) == 2


@pytest.mark.parametrize("runner", sorted(ENGINES), indirect=True)
def test_only_an_explicit_target_changes_the_target(runner: Runner, sqlite_url: str) -> None:
    runner.run(runner.spec("random", 3), sqlite_url)
    runner.run(runner.spec("random", 2), sqlite_url, explicit_target=False)  # a spec file's default
    assert len(trials_of(sqlite_url)) == 3
    assert runner.run(runner.spec("random", 4), sqlite_url).finished == 4


@pytest.mark.parametrize("runner", GRID_ENGINES, indirect=True)
def test_grid_evaluates_every_point_exactly_once(runner: Runner, storage_url: str) -> None:
    spec = runner.spec("grid", 100, SMALL_GRID)
    assert spec.space.grid_size() == 12
    summary = runner.run(spec, storage_url)
    trials = trials_of(storage_url)
    points = {(t.params["levels"], t.params["kernel"], t.params["dropout"]) for t in trials}
    assert len(trials) == 12 == summary.finished == len(points)
    assert trials[0].params == {"levels": 4, "kernel": 3, "dropout": 0.2}  # the baseline first
    assert runner.run(spec, storage_url).ran_here == 0


REPLAY_SAMPLERS = {"optuna": "tpe", "ray": "random", "keras-tuner": "random"}


@pytest.mark.parametrize(("runner", "sampler"), sorted(REPLAY_SAMPLERS.items()), indirect=["runner"])
def test_the_replay_objective_plays_the_recorded_curves_through_the_engine(
    runner: Runner, sampler: str, sqlite_url: str
) -> None:
    from marstune.tuning.search.replay import Replay

    surrogate = REPO / "bench/curves/surrogate.json"
    sets = [
        "study=replayed",
        "objective.kind=replay",
        f"objective.surrogate={surrogate}",
        f"search.engine={runner.engine}",
        f"search.sampler={sampler}",
        "search.pruner=none",
        "search.trials=4",
        "train.epochs=5",
        "train.patience=0",
        "train.seed=3",
    ]
    spec = load_spec(REPO / "bench/curves/spec.yaml", sets)
    runner.run(spec, sqlite_url)
    replay = Replay.from_json(surrogate)
    trials = trials_of(sqlite_url, "replayed")
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        curve = replay.curve(t.params, seed=3 * 100_003 + t.number)[:5]
        played = [t.intermediate_values[epoch] for epoch in sorted(t.intermediate_values)]
        assert played == pytest.approx([miou for miou, _ in curve], abs=1e-9)
        assert t.value == pytest.approx(max(played))
        assert t.user_attrs["compute_seconds"] == pytest.approx(sum(s for _, s in curve), abs=0.01)
