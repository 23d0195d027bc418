"""The fitting side recovers a known family of learning curves (tests/bench/synthetic_curves.py): the
ranking of held-out configurations, the noise's size and memory, the seconds; and its GP is exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import approx_fprime
from scipy.stats import spearmanr

from bench.curves_data import Curves, curves_from_doc
from bench.kron_gp import _Problem
from bench.replay import Replay
from bench.surrogate import held_out, held_out_seconds
from bench.surrogate_fit import design_matrix, features_from_space, fit_surrogate, trend_degree
from tests.bench.synthetic_curves import curves_doc, true_curve, true_seconds

NOISE = 0.03


@pytest.fixture(scope="module")
def family() -> Curves:
    return curves_from_doc(curves_doc(n=40, noise=NOISE, seed=3))


@pytest.fixture(scope="module")
def fitted(family: Curves) -> Replay:
    return Replay(fit_surrogate(family))


@pytest.mark.parametrize("epoch_kernel", [True, False])
def test_gp_gradient_is_the_derivative_of_the_objective(family: Curves, epoch_kernel: bool) -> None:
    features = features_from_space(family.space)
    sub = family.subset(range(12))
    Z = (sub.miou - sub.miou.mean()) / sub.miou.std()
    problem = _Problem(design_matrix(sub, features), Z, features, epoch_kernel)
    theta = problem.prior_mean + 0.4 * np.random.default_rng(0).standard_normal(len(problem.names))
    numeric = approx_fprime(theta, lambda t: problem(t)[0], 1e-6)
    assert np.allclose(problem(theta)[1], numeric, rtol=1e-3, atol=1e-3)


def test_kronecker_solve_equals_the_dense_gp(family: Curves) -> None:
    features = features_from_space(family.space)
    sub = family.subset(range(7))
    Z = (sub.miou - sub.miou.mean()) / sub.miou.std()
    problem = _Problem(design_matrix(sub, features), Z, features, True)
    p = problem.parts(problem.prior_mean)
    dense = np.kron(p["kc"], p["kt"]) + p["noise"] * np.eye(Z.size)
    assert np.allclose(p["alpha"].ravel(), np.linalg.solve(dense, Z.ravel()), atol=1e-8)
    sign, logdet = np.linalg.slogdet(dense)
    assert sign > 0 and math.isclose(float(np.log(p["D"]).sum()), logdet, rel_tol=1e-8)


@pytest.mark.parametrize("kind", ["kron-gp", "trend-gp"])
def test_held_out_configurations_are_ranked_like_the_truth(family: Curves, kind: str) -> None:
    pred = held_out(family, kind, k=8)
    truth = np.stack([true_curve(p, family.epochs) for p in family.params])
    assert spearmanr(pred[:, -1], truth[:, -1]).statistic >= 0.9
    assert spearmanr(pred[:, -1], family.miou[:, -1]).statistic >= 0.75  # the recorded values are noisy
    assert np.sqrt(((pred - truth) ** 2).mean()) < NOISE  # closer to the truth than one recorded epoch
    knn = held_out(family, "knn", k=8)
    assert np.sqrt(((knn - truth) ** 2).mean()) > np.sqrt(((pred - truth) ** 2).mean())


def test_noise_size_is_recovered_and_white_noise_has_no_memory(family: Curves, fitted: Replay) -> None:
    level = np.full(family.epochs, 0.25)
    sd = fitted.noise_sd(level)
    assert np.all(np.abs(sd / NOISE - 1.0) < 0.2), sd
    assert abs(fitted.ar1) < 0.15


def test_noise_memory_is_recovered() -> None:
    curves = curves_from_doc(curves_doc(n=40, noise=NOISE, seed=4, ar1=0.3))
    replay = Replay(fit_surrogate(curves))
    assert 0.18 <= replay.ar1 <= 0.42


def test_seconds_of_held_out_configurations(family: Curves, fitted: Replay) -> None:
    truth = np.stack([true_seconds(p, family.epochs) for p in family.params])
    pred = held_out_seconds(family, k=8)
    assert np.median(np.abs(pred.sum(1) / truth.sum(1) - 1.0)) < 0.05
    first_over_rest = (
        fitted.mean_seconds(family.params[0])[0] / fitted.mean_seconds(family.params[0])[1:].mean()
    )
    assert abs(first_over_rest - 1.5) < 0.1  # the first epoch also builds the graph: 1.5x in this family


def test_trend_degree_follows_the_shape() -> None:
    u = np.log(np.arange(1, 13))
    rng = np.random.default_rng(0)
    straight = 0.1 + 0.1 * u + 0.01 * rng.standard_normal((30, 12))
    sigmoid = 0.1 + 0.3 / (1 + np.exp(-(u - 1.2) * 4)) + 0.01 * rng.standard_normal((30, 12))
    assert trend_degree(straight) == 1
    assert trend_degree(sigmoid) == 3
