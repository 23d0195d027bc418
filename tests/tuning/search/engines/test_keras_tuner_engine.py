"""What the Keras Tuner engine promises beyond the contract (test_contract.py), over its samplers.

The analytic objective stands in for training in the contract cases (it goes through the same
`evaluate` call), so they take about a second each; the real U-Net runs twice per sampler at the end.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from marstune.tuning.config.spec import Spec, load_spec
from marstune.tuning.errors import SpecError
from marstune.tuning.search.engines import ENGINES, KerasTunerOptions, RunSummary
from marstune.tuning.search.engines import keras_tuner_engine as engine
from marstune.tuning.search.engines import keras_tuner_trials as _kt_trials
from marstune.tuning.study.storage import open_storage
from marstune.tuning.study.trial_attrs import EPOCH_LOG_ATTR, per_class_iou, trial_config
from tests.conftest import REPO, run_tune

SAMPLERS = ENGINES["keras-tuner"].samplers
SEARCHING = [s for s in SAMPLERS if s != "grid"]
SMALL_GRID = (
    "space={levels: {type: int, low: 3, high: 4}, kernel: {type: categorical, choices: [3, 5]},"
    " dropout: {type: float, low: 0.0, high: 0.4, grid: [0.0, 0.2, 0.4]}}"
)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # Keras Tuner's project files go under ./studies/<study>/keras_tuner


@pytest.fixture(params=SEARCHING)
def sampler_name(request: pytest.FixtureRequest) -> str:
    return request.param


def make_spec(sampler: str, trials: int = 6, *sets: str) -> Spec:
    return load_spec(
        REPO / "studies/unet.yaml",
        [
            "objective.kind=analytic",
            "search.engine=keras-tuner",
            f"search.sampler={sampler}",
            f"search.trials={trials}",
            "train.epochs=3",
            "search.pruner=none",
            *sets,
        ],
    )


def run(spec: Spec, url: str) -> RunSummary:
    return engine.run(spec, url, KerasTunerOptions(quiet=True, explicit_target=True))


def trials_of(url: str, name: str = "unet-mars") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials(deepcopy=False)


# Read in a fresh process: what any user of the file sees, the file checked whole first. This long-lived
# test process, after hundreds of in-process tests, once saw "database disk image is malformed" here
# while the same file checked sound from a fresh process.
_READ_TRIALS = """
import json, sqlite3, sys
import optuna
path, study = sys.argv[1:]
assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
trials = optuna.load_study(study_name=study, storage=f"sqlite:///{path}").get_trials(deepcopy=False)
print(json.dumps([[t.number, t.state.name, t.params, t.value, t.user_attrs.get("keras_tuner_trial_id")]
                  for t in trials]))
"""


def trials_in_a_fresh_process(db: Path, study: str) -> list[list[object]]:
    out = subprocess.run(
        [sys.executable, "-c", _READ_TRIALS, str(db), study], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def project_trial_dirs(name: str = "unet-mars") -> list[Path]:
    return sorted(Path("studies", name, "keras_tuner").glob("*/trial_*"))


def test_space_becomes_preregistered_hyperparameters() -> None:
    spec = make_spec("random")
    hp = engine.to_hyperparameters(spec.space, spec.baseline)
    by_name = {p.name: p for p in hp.space}
    assert list(by_name) == list(spec.space.params)
    assert list(by_name["base_filters"].values) == [8, 16, 32]
    assert (by_name["levels"].min_value, by_name["levels"].max_value, by_name["levels"].step) == (2, 5, 1)
    assert (by_name["dropout"].min_value, by_name["dropout"].max_value) == (0.0, 0.5)
    assert list(by_name["activation"].values) == ["relu", "elu", "gelu", "swish"]
    assert {name: p.default for name, p in by_name.items()} == spec.baseline  # defaults = baseline
    grid = {p.name: p for p in engine.to_hyperparameters(spec.space, spec.baseline, grid=True).space}
    assert list(grid["dropout"].values) == [0.0, 0.2, 0.4]  # floats enumerate `grid:` as on Optuna
    two_gammas = make_spec("grid", 6, "space.focal_gamma={type: float, low: 1, high: 3, grid: [1, 3]}")
    refused = r"once per value of focal_gamma, which only some losses read; run the grid with --engine optuna"
    with pytest.raises(SpecError, match=refused):
        engine.to_hyperparameters(two_gammas.space, two_gammas.baseline, grid=True)  # KT would run it twice

    oracle = engine.make_oracle(spec)
    assert oracle.allow_new_entries is False
    asked = oracle.get_space()
    asked.Int("units", 1, 4)  # what a builder asking for an unlisted entry would do
    with pytest.raises(RuntimeError, match="allow_new_entries"):
        oracle.update_space(asked)


def test_its_grid_over_a_loss_key_is_refused_before_keras_loads(tmp_path: Path) -> None:
    space = [
        "space.loss={type: categorical, choices: [crossentropy, focal]}",
        "space.focal_gamma={type: float, low: 1, high: 3, grid: [1, 3]}",
    ]
    args = ["run", "--engine", "keras-tuner", "--sampler", "grid", "--storage", "sqlite:///x.db"]
    result = run_tune(*args, *[a for s in space for a in ("--set", s)], cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: keras-tuner's grid walks every combination, so it would train a loss once per value of "
        "focal_gamma, which only some losses read; run the grid with --engine optuna (each configuration "
        "once), or use keras-tuner's random or bayes sampler"
    ]  # one line, before TensorFlow's start-up lines or the resolved spec
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_space_keras_tuner_cannot_take_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    spec = make_spec("random", 2, "space={dropout: {type: categorical, choices: [0.2, 0]}}")
    with pytest.raises(SpecError, match="share one type"):
        run(spec, f"sqlite:///{tmp_path / 'x.db'}")
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "studies").exists()


def test_values_stay_in_bounds_and_target_is_reached(sampler_name: str, sqlite_url: str) -> None:
    """Keras Tuner's own bookkeeping on top of the contract (test_contract.py runs every storage)."""
    storage_url = sqlite_url
    n = engine.BAYES_RANDOM_POINTS + 1 if sampler_name == "bayes" else 8  # one GP proposal: ~5 s each
    spec = make_spec(sampler_name, trials=n)
    summary = run(spec, storage_url)
    trials = trials_of(storage_url)
    assert summary.finished == n == summary.ran_here
    assert len(trials) == n and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(n))
    for t in trials:
        assert spec.space.contains(t.params), t.params
        assert t.user_attrs["engine"] == "keras-tuner"
        assert trial_config(t.system_attrs, t.user_attrs) == spec.config_for(t.params)
        assert t.value == max(t.intermediate_values.values())  # best val mIoU over the epochs
        assert t.datetime_complete >= t.datetime_start
    assert trials[0].params == spec.baseline  # Keras Tuner's first trial is the baseline
    assert trials[0].user_attrs["enqueued_as"] == "baseline"
    assert len({t.user_attrs["keras_tuner_trial_id"] for t in trials}) == n
    assert len(project_trial_dirs()) == n
    if sampler_name == "hyperband":  # each round trains its own epoch budget
        assert all(len(t.intermediate_values) == t.user_attrs["hyperband"]["epochs"] for t in trials)


def test_same_seed_gives_same_trials(sampler_name: str, tmp_path: Path) -> None:
    runs = []
    for k in range(2):
        url = f"sqlite:///{tmp_path / f'{k}.db'}"
        run(make_spec(sampler_name, 5), url)
        runs.append([t.params for t in trials_of(url)])
    assert runs[0] == runs[1]
    url = f"sqlite:///{tmp_path / 'other.db'}"
    run(make_spec(sampler_name, 5, "train.seed=7"), url)
    assert [t.params for t in trials_of(url)][1:] != runs[0][1:]


def test_resume_continues_to_the_target(sampler_name: str, sqlite_url: str) -> None:
    """Keras Tuner's project reloads on top of the contract (test_contract.py runs every storage)."""
    storage_url = sqlite_url
    run(make_spec(sampler_name, 3), storage_url)
    first = {t.number: (t.params, t.value) for t in trials_of(storage_url)}
    assert len(first) == 3
    summary = run(make_spec(sampler_name, 6), storage_url)
    assert summary.finished == 6 and summary.ran_here == 3
    again = run(make_spec(sampler_name, 6), storage_url)
    assert again.ran_here == 0  # at the target already: no overshoot
    trials = trials_of(storage_url)
    assert len(trials) == 6 and {t.number: (t.params, t.value) for t in trials[:3]} == first
    assert len({t.user_attrs["keras_tuner_trial_id"] for t in trials}) == 6  # none repeated
    assert len(project_trial_dirs()) == 6  # one Keras Tuner project, reloaded (overwrite=False)


def test_grid_resumes_where_it_stopped(sqlite_url: str) -> None:
    # Keras Tuner does not save GridSearch's position; the engine rebuilds it on reload.
    slow = (SMALL_GRID, "train.epochs=1", "objective.sleep=0.2")  # >= 0.2 s a trial
    stopped = run(make_spec("grid", 100, *slow, "search.timeout=0.5"), sqlite_url)
    assert 1 <= stopped.finished <= 3
    rest = run(make_spec("grid", 100, *slow), sqlite_url)
    trials = trials_of(sqlite_url)
    assert rest.ran_here == 12 - stopped.finished
    assert len({(t.params["levels"], t.params["kernel"], t.params["dropout"]) for t in trials}) == 12


def test_a_trial_ended_by_keras_tuner_but_not_stored_is_stored_once_on_resume(
    sampler_name: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    add, calls = _kt_trials.add_to_study, []

    def dies_on_the_third(*args: object, **kwargs: object) -> int:
        calls.append(1)
        if len(calls) == 3:  # the process dies after Keras Tuner saved trial 3, before the storage write
            raise KeyboardInterrupt
        return add(*args, **kwargs)

    monkeypatch.setattr(_kt_trials, "add_to_study", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        run(make_spec(sampler_name, 5), sqlite_url)
    assert len(trials_of(sqlite_url)) == 2
    monkeypatch.setattr(_kt_trials, "add_to_study", add)
    summary = run(make_spec(sampler_name, 5), sqlite_url)
    trials = trials_of(sqlite_url)
    ids = [t.user_attrs["keras_tuner_trial_id"] for t in trials]
    assert len(trials) == 5 == summary.finished and len(set(ids)) == 5
    assert summary.ran_here == 2 and len(project_trial_dirs()) == 5  # the third was written, not re-run
    third = json.loads(
        next(d for d in project_trial_dirs() if d.name.endswith(ids[2])).joinpath("trial.json").read_text()
    )
    assert {k: third["hyperparameters"]["values"][k] for k in trials[2].params} == trials[2].params


def test_an_interrupted_cli_run_resumes_without_losing_or_repeating_trials(tmp_path: Path) -> None:
    args = [
        "run", "--engine", "keras-tuner", "--sampler", "random", "--trials", "6", "--study", "kt",
        "--storage", "sqlite:///tune.db", "--set", "objective.kind=analytic", "--set", "objective.sleep=0.4",
        "--set", "train.epochs=2", "-q",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "marstune.tuning", *args], cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 300
        while _complete(tmp_path / "tune.db") < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err  # 128 + SIGTERM, as a shell reports it
    db = tmp_path / "tune.db"
    before = {kt_id: (n, params, value) for n, _, params, value, kt_id in trials_in_a_fresh_process(db, "kt")}
    assert 2 <= len(before) < 6

    resumed = run_tune(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "Reloading Tuner" in resumed.stderr  # overwrite=False: the same Keras Tuner project
    trials = trials_in_a_fresh_process(db, "kt")
    assert [state for _, state, *_ in trials] == ["COMPLETE"] * 6  # nothing lost, nothing failed
    after = {kt_id: (n, params, value) for n, _, params, value, kt_id in trials}
    assert len(after) == 6 and all(after[k] == v for k, v in before.items())  # finished ones kept
    assert len(project_trial_dirs("kt")) == 6

    status = run_tune("status", "--json", "--storage", "sqlite:///tune.db", cwd=tmp_path)
    row = json.loads(status.stdout)[0]
    assert (row["study"], row["complete"], row["waiting"], row["target"]) == ("kt", 6, 0, 6)
    best = run_tune("export-best", "--study", "kt", "--storage", "sqlite:///tune.db", "--json", cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    assert json.loads(best.stdout)["trial"] == max(trials, key=lambda t: t[3])[0]


def _complete(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.DatabaseError:  # tables not made yet, or the file caught while being created
        return 0


@pytest.mark.parametrize(("engine_name", "sampler"), [("keras-tuner", "cmaes"), ("optuna", "hyperband")])
def test_an_engine_sampler_pair_that_does_not_exist_is_refused(
    engine_name: str, sampler: str, tmp_path: Path
) -> None:
    result = run_tune(
        "run", "--engine", engine_name, "--sampler", sampler, "--storage", "sqlite:///x.db", cwd=tmp_path
    )
    assert result.returncode == 2  # a usage error
    assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "keras-tuner: bayes, grid, hyperband, random" in result.stderr
    assert "optuna: cmaes, gp, grid, qmc, random, tpe" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no database, no studies/ folder


def test_keras_tuner_needs_are_declared_and_every_stock_tuner_runs(tmp_path: Path) -> None:
    # keras-tuner does not declare them with Keras 3: tensorboard (every Tuner.run_trial imports it)
    # and scikit-learn (BayesianOptimization). Our pyproject must, and each stock tuner must work.
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip() for d in deps}
    assert {"keras-tuner", "tensorboard", "scikit-learn"} <= names
    import keras
    import keras_tuner as kt

    from marstune.tuning.train.devices import configure

    configure(threads=1)  # as `evaluate` does first: TF threads can only be set before the first op

    def build(hp: kt.HyperParameters) -> keras.Model:
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(hp.Int("units", 2, 4)), keras.layers.Dense(1)]
        )
        model.compile(optimizer="adam", loss="mse")
        return model

    x, y = np.random.default_rng(0).normal(size=(16, 4)), np.zeros((16, 1))
    common = {"objective": "val_loss", "directory": str(tmp_path), "overwrite": True, "seed": 1}
    tuners = [
        kt.RandomSearch(build, max_trials=1, project_name="random", **common),
        kt.GridSearch(build, max_trials=1, project_name="grid", **common),
        kt.BayesianOptimization(build, max_trials=1, project_name="bayes", **common),
        kt.Hyperband(build, max_epochs=1, hyperband_iterations=1, project_name="hyperband", **common),
    ]
    for tuner in tuners:
        tuner.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
        best = tuner.oracle.get_best_trials(1)[0]
        assert best.status == "COMPLETED" and np.isfinite(best.score), type(tuner).__name__


REAL = [
    "objective.kind=unet",
    "train.max_items=24",
    "train.epochs=1",
    "train.batch_size=8",
    "train.threads=1",
    "space={levels: {type: int, low: 2, high: 3}, base_filters: {type: categorical, choices: [8]}}",
    "baseline={base_filters: 8, levels: 2, kernel: 3, dropout: 0.0, activation: relu}",
]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_two_real_unet_trials_land_in_the_storage(sampler: str, sqlite_url: str) -> None:
    spec = make_spec(sampler, 2, *REAL)
    summary = run(spec, sqlite_url)
    trials = trials_of(sqlite_url)
    assert summary.finished == 2 and [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert sorted(t.params["levels"] for t in trials) == [2, 3]  # the two configurations of the space
    for t in trials:
        attrs = t.user_attrs
        assert 0.0 <= t.value <= 1.0 and t.intermediate_values == {0: t.value}
        assert attrs["engine"] == "keras-tuner" and attrs["device"] == "cpu" and attrs["epochs_run"] == 1
        assert set(per_class_iou(attrs) or {}) == {"background", "soil", "bedrock", "sand", "big_rock"}
        assert "epoch_log" not in attrs and len(t.system_attrs[EPOCH_LOG_ATTR]) == 1
        assert trial_config(t.system_attrs, attrs) == {**spec.baseline, **t.params} and attrs["params"] > 0


def test_random_search_draws_no_loss_key_its_loss_ignores_twice(tmp_path: Path) -> None:
    # crossentropy reads no focal_gamma: Keras Tuner's own repeat check sees what trains, so all 6
    # distinct configurations run (it trained crossentropy twice and skipped focal before).
    from marstune.tuning.config.space import trained_as

    space = (
        "space={loss: {type: categorical, choices: [crossentropy, focal]},"
        " focal_gamma: {type: categorical, choices: [1.0, 3.0]}, levels: {type: int, low: 3, high: 4}}"
    )
    url = f"sqlite:///{tmp_path}/kt.db"
    run(make_spec("random", 6, space, "baseline.focal_gamma=1.0"), url)
    complete = [t for t in trials_of(url) if t.state == TrialState.COMPLETE]
    assert len(complete) == 6
    assert len({tuple(sorted(trained_as(t.params).items())) for t in complete}) == 6
