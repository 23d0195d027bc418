"""The read-only SQL of `tune status` / `tune export-best` answers exactly what Optuna's own API answers."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from marstune.tuning.errors import StorageError
from marstune.tuning.study import tables as tables
from marstune.tuning.study.export import best_export
from marstune.tuning.study.storage import open_storage


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 1e-4, 1.0, log=True)
    levels = trial.suggest_int("levels", 2, 5)
    activation = trial.suggest_categorical("activation", ["relu", "gelu", "swish"])
    trial.suggest_categorical("flag", [True, False])
    trial.set_user_attr("config", {"levels": levels, "activation": activation})
    trial.set_user_attr("per_class_iou", [0.1, 0.2, x, 0.4])
    if trial.number % 7 == 3:
        raise optuna.TrialPruned
    if trial.number % 11 == 5:
        raise RuntimeError("this trial fails")
    return x * levels


def _make(url: str, name: str, direction: str, n: int) -> optuna.Study:
    study = optuna.create_study(
        storage=open_storage(url, create=True),
        study_name=name,
        direction=direction,
        sampler=optuna.samplers.RandomSampler(seed=1),
    )
    study.set_user_attr("spec", {"search": {"sampler": "random"}, "nested": [1, 2.5, None]})
    study.set_user_attr("target_trials", n)
    study.optimize(_objective, n_trials=n, catch=(RuntimeError,))
    study.ask()  # one RUNNING trial
    return study


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_every_answer_matches_optuna(storage_url: str, direction: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _make(storage_url, "checked", direction, 40)
    _make(storage_url, "other", "maximize", 3)
    trials = study.get_trials(deepcopy=False)
    with tables.reading(storage_url) as conn:
        assert list(tables.study_ids(conn)) == ["checked", "other"]
        sid = tables.study_id(conn, "checked")
        assert tables.study_user_attrs(conn, sid) == study.user_attrs
        assert tables.maximizing(conn, sid) == (direction == "maximize")
        counts = tables.state_counts(conn, sid)
        for state in TrialState:
            assert counts[state.name.lower()] == sum(t.state == state for t in trials), state
        assert counts["running"] == 1 and counts["pruned"] > 0 and counts["fail"] > 0
        assert tables.completed_values(conn, sid) == [
            (t.number, t.value) for t in trials if t.state == TrialState.COMPLETE
        ]
        trial_id, number, value = tables.best_trial_id(conn, sid)  # type: ignore[misc]
        best = study.best_trial
        assert (number, value) == (best.number, best.value)
        assert tables.trial_params(conn, trial_id) == best.params
        assert tables.trial_user_attrs(conn, trial_id) == best.user_attrs
    exported = best_export(storage_url, "checked")
    assert exported["trial"] == best.number and exported["params"] == best.params
    assert exported["config"] == best.user_attrs["config"]
    assert exported["spec"] == study.user_attrs["spec"]  # a study made before the spec moved (legacy attr)


def test_infinities_rank_as_optuna_ranks_them(sqlite_url: str) -> None:
    study = optuna.create_study(
        storage=open_storage(sqlite_url, create=True), study_name="inf", direction="maximize"
    )
    for value in (0.5, -math.inf, 0.7):
        study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={}))
    with tables.reading(sqlite_url) as conn:
        sid = tables.study_id(conn, "inf")
        assert tables.best_trial_id(conn, sid)[1:] == (2, 0.7)  # type: ignore[index]
        assert [v for _, v in tables.completed_values(conn, sid)] == [0.5, -math.inf, 0.7]
        study.add_trial(optuna.trial.create_trial(value=math.inf, params={}, distributions={}))
        assert tables.best_trial_id(conn, sid)[1:] == (3, math.inf)  # type: ignore[index]
    assert study.best_trial.number == 3


def test_unknown_study_lists_the_known_ones(sqlite_url: str) -> None:
    optuna.create_study(storage=open_storage(sqlite_url, create=True), study_name="only-one")
    with tables.reading(sqlite_url) as conn, pytest.raises(StorageError, match="only-one.*check --study"):
        tables.study_id(conn, "missing")


def test_a_database_without_optuna_tables_is_one_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (x INTEGER)")
    with pytest.raises(StorageError, match="holds no Optuna tables"), tables.reading(f"sqlite:///{db}") as c:
        tables.study_ids(c)
    with sqlite3.connect(db) as conn:  # and reading it created nothing
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("notes",)]


def test_a_missing_file_is_not_created(tmp_path: Path) -> None:
    with (
        pytest.raises(StorageError, match="run `tune run` first"),
        tables.reading(f"sqlite:///{tmp_path / 'nothing.db'}"),
    ):
        pass
    assert list(tmp_path.iterdir()) == []
