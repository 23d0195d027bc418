"""Class weights from frequencies: background ignored, mean 1 over scored pixels, the cap, absent classes."""

from __future__ import annotations

import numpy as np
import pytest

from marstune.models.class_weights import MAX_CLASS_WEIGHT, LossConfigError, class_weights

REAL = (0.24, 0.34, 0.24, 0.18, 0.0013)  # background, soil, bedrock, sand, big rock (roughly the challenge)


def scored_mean(frequencies: object, weights: tuple[float, ...]) -> float:
    """The mean weight over non-background pixels."""
    f = np.asarray(frequencies, dtype=np.float64)[1:]
    return float((f * np.asarray(weights)[1:]).sum() / f.sum())


@pytest.mark.parametrize("exponent", [0.0, 0.25, 0.5, 0.75, 1.0, 2.0])
def test_background_is_ignored(exponent: float) -> None:
    weights = class_weights(REAL, exponent)
    assert weights[0] == 1.0
    for background in (0.0, 1e-6, 0.5, 100.0):  # any amount of sky
        assert class_weights((background, *REAL[1:]), exponent) == pytest.approx(weights, rel=1e-12)


@pytest.mark.parametrize("exponent", [0.25, 0.5, 0.75, 1.0, 2.0])
def test_mean_over_scored_pixels_is_one_and_the_cap_holds(exponent: float) -> None:
    weights = class_weights(REAL, exponent)
    assert scored_mean(REAL, weights) == pytest.approx(1.0, rel=1e-12)
    assert max(weights) <= MAX_CLASS_WEIGHT
    assert weights[4] > weights[3] > weights[2] > weights[1]  # rarer, heavier


def test_exponent_zero_is_all_ones() -> None:
    assert class_weights(REAL, 0.0) == (1.0,) * 5
    assert class_weights((5, 0, 3, 0, 1), 0) == (1.0,) * 5


def test_inverse_square_root_below_the_cap() -> None:
    weights = np.asarray(class_weights(REAL, 0.5))
    scored = np.asarray(REAL[1:])
    ratio = weights[1:] * np.sqrt(scored)  # w_c proportional to f_c ** -0.5
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)
    assert weights[4] == pytest.approx(13.77, abs=0.01) and weights[4] < MAX_CLASS_WEIGHT


def test_inverse_frequency_caps_the_rare_class_and_renormalises_the_rest() -> None:
    weights = np.asarray(class_weights(REAL, 1.0))
    assert weights[4] == MAX_CLASS_WEIGHT  # uncapped, big rock would get ~146
    scored = np.asarray(REAL[1:4])
    np.testing.assert_allclose(weights[1:4] * scored, weights[1] * scored[0], rtol=1e-12)  # still 1/f
    assert scored_mean(REAL, tuple(weights)) == pytest.approx(1.0, rel=1e-12)


def test_several_classes_at_the_cap() -> None:
    frequencies = (0.5, 0.8, 0.001, 0.002, 0.197)
    weights = class_weights(frequencies, 1.0, max_weight=5.0)
    assert weights[2] == weights[3] == 5.0 and weights[4] < 5.0
    assert scored_mean(frequencies, weights) == pytest.approx(1.0, rel=1e-12)


def test_counts_and_shares_give_the_same_weights() -> None:
    counts = np.array([2_400_000, 3_400_000, 2_400_000, 1_800_000, 13_000])
    assert class_weights(counts, 0.7) == pytest.approx(class_weights(counts / counts.sum(), 0.7), rel=1e-12)


def test_a_class_absent_from_training_gets_one_and_stays_out_of_the_mean() -> None:
    frequencies = (0.3, 0.4, 0.2, 0.1, 0.0)
    weights = class_weights(frequencies, 1.0)
    assert weights[4] == 1.0
    assert scored_mean(frequencies, weights) == pytest.approx(1.0, rel=1e-12)
    assert weights[1:4] == pytest.approx(class_weights((0.3, 0.4, 0.2, 0.1), 1.0)[1:], rel=1e-12)
    assert class_weights((1.0, 0, 0, 0, 0), 1.0) == (1.0,) * 5  # nothing scored: nothing to weight


def test_random_frequencies_keep_every_rule() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        frequencies = rng.dirichlet(np.full(5, 0.3)) * (rng.random(5) > 0.15)  # some classes absent
        exponent, cap = rng.uniform(0, 2), rng.uniform(1, 30)
        weights = np.asarray(class_weights(frequencies, exponent, max_weight=cap))
        present = frequencies[1:] > 0
        assert weights[0] == 1.0 and np.all(weights[1:][~present] == 1.0)
        assert np.all(weights > 0) and weights.max() <= cap * (1 + 1e-12)
        if present.any():
            assert scored_mean(frequencies, tuple(weights)) == pytest.approx(1.0, rel=1e-9)
            f, w = frequencies[1:][present], weights[1:][present]
            order = np.argsort(f)
            assert np.all(np.diff(w[order]) <= 1e-12)  # a rarer class never weighs less


@pytest.mark.parametrize(
    ("frequencies", "exponent", "kwargs", "match"),
    [
        ((0.5, 0.5), -0.5, {}, "exponent must be a number >= 0"),
        ((0.5, 0.5), float("nan"), {}, "exponent must be a number >= 0"),
        ((0.5, 0.5), True, {}, "exponent must be a number >= 0"),
        ((0.5, -0.1, 0.6), 1.0, {}, r"finite and >= 0, got \[0.5, -0.1, 0.6\]"),
        ((0.5, float("nan")), 1.0, {}, "finite and >= 0"),
        ((1.0,), 1.0, {}, "one number per class"),
        (((0.5, 0.5),), 1.0, {}, "one number per class"),
        ((0.5, 0.5), 1.0, {"max_weight": 0.5}, "max_weight must be a number >= 1"),
    ],
)
def test_bad_values_are_refused(frequencies: object, exponent: float, kwargs: dict, match: str) -> None:
    with pytest.raises(LossConfigError, match=match):
        class_weights(frequencies, exponent, **kwargs)  # type: ignore[arg-type]
