"""A study's stored spec against the spec of a later run: what counts as the same study."""

from __future__ import annotations

import pytest

from marstune.tuning.config.spec import load_spec
from marstune.tuning.errors import SpecError
from marstune.tuning.study.lifecycle import DataInfo, prepare_study

NO_DATA = DataInfo(source="none (analytic objective)", fingerprint="none")
ANALYTIC = ["objective.kind=analytic", "search.trials=2"]


def test_the_baseline_is_compared_as_trials_see_it(sqlite_url: str) -> None:
    # Made when the default baseline named the seed's loss itself; today the loss section gives it.
    made = load_spec(None, [*ANALYTIC, "baseline.loss=crossentropy"])
    prepare_study(made, sqlite_url, NO_DATA)
    again = load_spec(
        None, ANALYTIC, {"baseline": {k: v for k, v in made.raw["baseline"].items() if k != "loss"}}
    )
    assert again.baseline == made.baseline and "loss" not in again.raw["baseline"]
    prepare_study(again, sqlite_url, NO_DATA)  # joins: the same study
    focal = load_spec(None, [*ANALYTIC, "loss.name=focal"], {"baseline": again.raw["baseline"]})
    with pytest.raises(SpecError, match=r"another spec \(baseline\.loss: 'crossentropy' there, 'focal' here"):
        prepare_study(focal, sqlite_url, NO_DATA)


def test_a_changed_space_names_the_setting_not_the_whole_space(sqlite_url: str) -> None:
    prepare_study(load_spec(None, ANALYTIC), sqlite_url, NO_DATA)
    narrowed = load_spec(None, [*ANALYTIC, "space.loss.choices=[crossentropy, focal]"])
    with pytest.raises(SpecError) as info:
        prepare_study(narrowed, sqlite_url, NO_DATA)
    message = str(info.value)
    assert "space.loss.choices: [" in message and "'levels'" not in message, message
