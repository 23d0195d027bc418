"""`objective.kind: replay`: the recorded curves answer as training would, and refuse what they cannot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from marstune.tuning.config.spec import load_spec
from marstune.tuning.errors import Pruned, TuneError
from marstune.tuning.search.objective import TrialContext, evaluate
from marstune.tuning.search.replay import Replay
from tests.conftest import REPO

SURROGATE = REPO / "bench/curves/surrogate.json"
CONFIG = {"base_filters": 16, "levels": 4, "kernel": 3, "dropout": 0.2, "activation": "relu"}


def _spec(*sets: str) -> object:
    return load_spec(
        REPO / "bench/curves/spec.yaml",
        ["objective.kind=replay", f"objective.surrogate={SURROGATE}", "train.patience=0", *sets],
    )


def test_every_epoch_is_reported_and_charged_its_recorded_seconds() -> None:
    spec = _spec("train.epochs=6", "train.seed=2")
    seen: list[tuple[int, float]] = []
    ctx = TrialContext(7, lambda epoch, value: seen.append((epoch, value)) is not None)
    best = evaluate(spec.config_for(CONFIG), spec, ctx)
    curve = Replay.from_json(SURROGATE).curve(CONFIG, seed=2 * 100_003 + 7)[:6]
    assert [v for _, v in seen] == [m for m, _ in curve] and [e for e, _ in seen] == list(range(6))
    assert best == max(m for m, _ in curve)
    assert ctx.attrs["epochs_run"] == 6
    assert ctx.attrs["compute_seconds"] == pytest.approx(sum(s for _, s in curve), abs=0.01)
    assert len(ctx.attrs["epoch_log"]) == 6


def test_a_pruned_replay_is_charged_only_the_epochs_it_ran() -> None:
    spec = _spec("train.epochs=6")
    ctx = TrialContext(0, lambda epoch, value: epoch == 1)
    with pytest.raises(Pruned):
        evaluate(spec.config_for(CONFIG), spec, ctx)
    curve = Replay.from_json(SURROGATE).curve(CONFIG, seed=0)
    assert ctx.attrs["epochs_run"] == 2
    assert ctx.attrs["compute_seconds"] == pytest.approx(curve[0][1] + curve[1][1], abs=0.01)


def test_another_trial_number_is_another_run_of_the_same_configuration() -> None:
    spec = _spec("train.epochs=12")
    values = [evaluate(spec.config_for(CONFIG), spec, TrialContext(n, lambda e, v: False)) for n in (0, 1)]
    again = evaluate(spec.config_for(CONFIG), spec, TrialContext(0, lambda e, v: False))
    assert values[0] != values[1] and again == values[0]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["train.epochs=40"], "recorded for 12; set train.epochs <= 12"),
        (["objective.surrogate=/nonexistent/s.json"], "no file /nonexistent/s.json"),
        (["space.loss={type: categorical, choices: [crossentropy, focal]}"], "searches ['loss']"),
    ],
)
def test_what_the_curves_cannot_answer_is_refused_in_one_line(sets: list[str], message: str) -> None:
    spec = _spec(*sets)
    with pytest.raises(TuneError) as caught:
        evaluate(spec.config_for(CONFIG), spec, TrialContext(0, lambda e, v: False))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def _edited(change: str) -> str:
    """The recorded surrogate as JSON text, with one thing broken."""
    doc = json.loads(SURROGATE.read_text())
    if change == "nan":
        doc["miou"]["lengthscales"][0] = math.nan
    elif change == "epochs":
        doc["epochs"] = 1000  # more than the curves hold: every trial would fail in a matmul
    elif change == "no epochs":
        del doc["epochs"]
    elif change == "list":
        doc = [doc]
    else:
        doc = {"format": "something else"}
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("format", "expected a 'tune replay surrogate v1' file"),
        ("nan", "a NaN or an infinite number"),
        ("epochs", "epochs is 1000 but the curves hold [12]"),
        ("no epochs", "it has no 'epochs' entry"),
        ("list", "not a JSON object"),
        ("device", "not a regular file"),  # /dev/zero would be read until memory runs out
    ],
)
def test_a_file_that_is_not_a_surrogate_is_refused(change: str, reason: str, tmp_path: Path) -> None:
    bad = Path("/dev/zero") if change == "device" else tmp_path / "curves.json"
    if change != "device":
        bad.write_text(_edited(change))
    spec = _spec(f"objective.surrogate={bad}")
    with pytest.raises(TuneError, match="is not a replay surrogate") as caught:
        evaluate(spec.config_for(CONFIG), spec, TrialContext(0, lambda e, v: False))
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["space.dropout.high=0.9"], "space.dropout: replay: dropout=0.9 is outside the recorded range"),
        (["space.base_filters.choices=[8, 16, 64]"], "space.base_filters: replay: base_filters=64"),
        (["train.epochs=13"], "set train.epochs <= 12"),
        (["objective.surrogate=."], "is not a replay surrogate"),
    ],
)
def test_tune_run_refuses_what_the_curves_cannot_answer_before_the_study_exists(
    sets: list[str], message: str, tmp_path: Path
) -> None:
    from tests.conftest import run_tune

    args = ["--spec", str(REPO / "bench/curves/spec.yaml"), "--set", "objective.kind=replay"]
    args += ["--set", f"objective.surrogate={SURROGATE}"] + [a for s in sets for a in ("--set", s)]
    result = run_tune("run", "--storage", "sqlite:///s.db", "--trials", "3", *args, cwd=tmp_path)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error: ")]
    assert result.returncode == 1 and len(lines) == 1 and message in lines[0], result.stderr[-1500:]
    assert not (tmp_path / "s.db").exists()


def test_a_relative_surrogate_is_resolved_once_where_the_spec_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)
    spec = _spec("objective.surrogate=bench/curves/surrogate.json")
    assert spec.objective.surrogate == str(SURROGATE)
