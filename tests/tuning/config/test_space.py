"""The one search space: bounds inclusive, grid enumeration, Optuna distributions."""

from __future__ import annotations

import optuna
import pytest

from marstune.tuning.config.space import Categorical, Float, Int, parse_space, trained_as
from marstune.tuning.errors import SpecError


def test_grid_enumerates_ints_categoricals_and_float_grid_points() -> None:
    space = parse_space(
        {
            "levels": {"type": "int", "low": 2, "high": 4},
            "kernel": {"type": "categorical", "choices": [3, 5]},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5, "grid": [0.0, 0.5]},
        }
    )
    grid = space.grid()
    assert len(grid) == space.grid_size() == space.product_size() == 12
    assert len({tuple(sorted(p.items())) for p in grid}) == 12
    assert {p["levels"] for p in grid} == {2, 3, 4}  # bounds inclusive
    assert all(space.contains(p) for p in grid)


def test_float_without_grid_points_cannot_be_gridded() -> None:
    space = parse_space({"dropout": {"type": "float", "low": 0.0, "high": 0.5}})
    with pytest.raises(SpecError, match=r"needs `grid:` values .*space.dropout"):
        space.grid()


def test_contains_respects_inclusive_bounds_and_steps() -> None:
    assert Int(2, 6, step=2).contains(6) and not Int(2, 6, step=2).contains(5)
    assert Float(0.0, 0.5).contains(0.5) and not Float(0.0, 0.5).contains(0.51)
    assert Categorical(("relu", "elu")).contains("elu") and not Categorical(("relu",)).contains("gelu")


def test_to_optuna_matches_the_definition() -> None:
    space = parse_space(
        {
            "levels": {"type": "int", "low": 2, "high": 5},
            "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "activation": {"type": "categorical", "choices": ["relu", "gelu"]},
        }
    )
    dists = space.to_optuna()
    assert dists["levels"] == optuna.distributions.IntDistribution(2, 5)
    assert dists["learning_rate"] == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    assert dists["activation"] == optuna.distributions.CategoricalDistribution(("relu", "gelu"))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"levels": {"type": "int", "low": 2.5, "high": 5}}, "`low` must be an int"),
        ({"kernel": {"type": "categorical", "choices": []}}, "non-empty list"),
        ({"kernel": {"type": "categorical", "choices": [3, 3]}}, "duplicates"),
        ({"dropout": {"type": "float", "low": 0, "high": 0.5, "grid": [0.7]}}, "outside"),
        ({"learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}}, "log-scaled"),
        ({"levels": {"type": "int", "low": 2, "high": 5, "choices": [1]}}, "unknown key"),
    ],
)
def test_bad_parameters_are_refused(raw: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_space(raw)


def test_a_loss_key_its_loss_does_not_read_makes_no_new_configuration() -> None:
    losses = {"type": "categorical", "choices": ["crossentropy", "focal", "weighted_crossentropy"]}
    rest = {
        "class_weight_exponent": {"type": "categorical", "choices": [0.5, 1.0]},
        "levels": {"type": "int", "low": 3, "high": 4},
    }
    gammas = {"type": "float", "low": 1.0, "high": 3.0, "grid": [1.0, 3.0]}
    space = parse_space({"loss": losses, "focal_gamma": gammas, **rest})
    grid = space.grid()
    # crossentropy: 2 levels; focal: 2 gammas x 2 exponents x 2 levels; weighted: 2 exponents x 2 levels
    assert len(grid) == space.grid_size() == 2 + 8 + 4
    assert space.product_size() == 3 * 2 * 2 * 2  # the whole product, repeats included
    assert len({tuple(sorted(trained_as(p).items())) for p in grid}) == len(grid)
    assert all(space.contains(p) for p in grid)
    plain = {"loss": "crossentropy", "levels": 3}
    assert trained_as({**plain, "focal_gamma": 3.0}) == plain
    assert trained_as({"focal_gamma": 3.0}) == {"focal_gamma": 3.0}  # no loss searched: nothing dropped
    gammas = {"type": "categorical", "choices": [1.0, 3.0]}
    discrete = parse_space({"loss": losses, "focal_gamma": gammas, **rest})
    assert discrete.distinct_configs() == 2 + 8 + 4
