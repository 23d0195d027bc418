"""A Gaussian process over (configuration x epoch) for complete grids of learning curves.

The kernel is separable, k((x, t), (x', t')) = (kc(x, x') + run * [same run]) * kt(t, t') + noise *
[same point], with
  kc = variance * Matérn52(ARD over the parameters) + bias + linear * <x, x'>
  kt = an RBF in log epoch (or the identity: epochs as independent outputs sharing kc).
`run` is what one training run adds to its configuration's curve for the whole run (its seed, its data
order): a smooth offset no other configuration shares. Each configuration was trained once, so only
the GP can tell it from the configuration's own effect; prediction for a configuration leaves it out,
and the replay draws a fresh one per seed. With the identity over epochs it could not be told from the
white noise, so there the white noise is the run's departure (the targets are then smooth curves).
The linear part is a Bayesian linear trend: CPU seconds are nearly linear in log filters, kernel size
and depth, and a trend carries to the corners of the space where a stationary kernel alone would fall
back to the mean. Every configuration is recorded at every epoch, so the kernel matrix is the Kronecker
product Kc (x) Kt, and the marginal likelihood and its gradient need only the eigendecompositions of Kc
(configs x configs) and Kt (epochs x epochs): milliseconds per evaluation, which is what lets the
validation refit it once per held-out fold.

Hyperparameters are maximum a posteriori under weak log-normal priors, with analytic gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from bench.residual_map import ResidualMap
from marstune.tuning.search.replay import feature_lengthscales, matern52, scaled_distance

# (mean, sd) of the log of each hyperparameter: lengthscales on [0, 1]-scaled inputs near 1, signal and
# shared-curve (bias) variance near the standardised data's, the noise near a tenth of it. Weak, but with
# ~49 configurations an unregularised fit can send a lengthscale to a bound.
PRIORS = {
    "ell": (0.0, 1.0),
    "variance": (0.0, 1.5),
    "bias": (0.0, 1.5),
    "linear": (math.log(0.1), 1.5),
    "run": (math.log(0.1), 1.5),
    "ell_t": (math.log(0.5), 1.0),
    "noise": (math.log(0.1), 1.5),
}
BOUNDS = {
    "ell": (math.log(0.03), math.log(30.0)),
    "variance": (-8.0, 4.0),
    "bias": (-8.0, 4.0),
    "linear": (-10.0, 4.0),
    "run": (-12.0, 2.0),
    "ell_t": (math.log(0.03), math.log(30.0)),
    "noise": (math.log(1e-5), math.log(4.0)),
}


def epoch_inputs(epochs: int) -> np.ndarray:
    """Epochs on a log scale in [0, 1]: a curve changes fastest in its first epochs."""
    return np.log(np.arange(1, epochs + 1)) / math.log(max(epochs, 2))


@dataclass
class GPFit:
    """A fitted GP mean (the JSON of replay.GPMean) and its in-sample smoothing, for the noise model."""

    doc: dict[str, Any]
    fitted: np.ndarray  # (n, T) posterior mean of each recorded configuration (what replay gives)
    trend: np.ndarray  # (n, T) posterior mean of each recorded run (its configuration + its run effect)
    residual_map: ResidualMap  # what the smoother giving `trend` does to noise (for the noise model)
    run_cov: np.ndarray  # (T, T) covariance over epochs of a run's own effect, in data units
    hyper: dict[str, float]


def _param_sq_dists(X: np.ndarray, features: list[dict[str, Any]]) -> np.ndarray:
    """(P, n, n): squared differences per parameter (a one-hot parameter sums its columns)."""
    out, col = [], 0
    for f in features:
        width = len(f["choices"]) if f["kind"] == "onehot" else 1
        block = X[:, col : col + width]
        out.append(((block[:, None, :] - block[None, :, :]) ** 2).sum(-1))
        col += width
    return np.stack(out)


class _Problem:
    """The negative log posterior of the hyperparameters and its gradient."""

    def __init__(
        self, X: np.ndarray, Z: np.ndarray, features: list[dict[str, Any]], epoch_kernel: bool
    ) -> None:
        self.Z, self.P, self.epoch_kernel = Z, len(features), epoch_kernel
        self.dists = _param_sq_dists(X, features)
        self.gram = X @ X.T
        u = epoch_inputs(Z.shape[1])
        self.du2 = (u[:, None] - u[None, :]) ** 2
        self.names = ["ell"] * self.P + ["variance", "bias", "linear"]
        self.names += (["run", "ell_t"] if epoch_kernel else []) + ["noise"]
        self.prior_mean = np.array([PRIORS[k][0] for k in self.names])
        self.prior_sd = np.array([PRIORS[k][1] for k in self.names])
        self.bounds = [BOUNDS[k] for k in self.names]

    def parts(self, theta: np.ndarray) -> dict[str, Any]:
        P = self.P
        ell, variance, bias = np.exp(theta[:P]), math.exp(theta[P]), math.exp(theta[P + 1])
        linear, noise = math.exp(theta[P + 2]), math.exp(theta[-1])
        run = math.exp(theta[P + 3]) if self.epoch_kernel else 0.0
        scaled = self.dists / ell[:, None, None] ** 2
        r = np.sqrt(np.maximum(scaled.sum(0), 0.0))
        kc_config = variance * matern52(r) + bias + linear * self.gram
        kc = kc_config + run * np.eye(len(kc_config))  # each recorded curve is also its own run
        if self.epoch_kernel:
            ell_t = math.exp(theta[P + 4])
            kt = np.exp(-0.5 * self.du2 / ell_t**2)
        else:
            ell_t, kt = None, np.eye(self.Z.shape[1])
        lc, uc = np.linalg.eigh(kc)
        lt, ut = np.linalg.eigh(kt)
        D = np.maximum(np.outer(lc, lt), 0.0) + noise
        rotated = uc.T @ self.Z @ ut
        alpha = uc @ (rotated / D) @ ut.T
        return dict(ell=ell, variance=variance, bias=bias, linear=linear, run=run, noise=noise, ell_t=ell_t,
                    scaled=scaled, r=r, kc=kc, kc_config=kc_config, kt=kt, lc=lc, uc=uc, lt=lt, ut=ut, D=D,
                    rotated=rotated, alpha=alpha)  # fmt: skip

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        p = self.parts(theta)
        D, A, inv_d = p["D"], p["alpha"], 1.0 / p["D"]
        value = 0.5 * float((p["rotated"] ** 2 * inv_d).sum() + np.log(D).sum())

        def config_grad(dk: np.ndarray) -> float:  # dK = dKc (x) Kt
            diag = np.einsum("ij,ij->j", p["uc"], dk @ p["uc"])
            return 0.5 * float(diag @ (inv_d @ p["lt"])) - 0.5 * float((A * (dk @ A @ p["kt"])).sum())

        s5r = math.sqrt(5.0) * p["r"]
        dmatern = (5.0 / 3.0) * (1.0 + s5r) * np.exp(-s5r)  # d Matérn52 / d log(ell_p) = this * scaled_p
        grad = [config_grad(p["variance"] * dmatern * p["scaled"][i]) for i in range(self.P)]
        grad.append(config_grad(p["variance"] * matern52(p["r"])))
        grad.append(config_grad(np.full_like(p["kc"], p["bias"])))
        grad.append(config_grad(p["linear"] * self.gram))
        if self.epoch_kernel:
            grad.append(config_grad(p["run"] * np.eye(len(p["kc"]))))
            dkt = p["kt"] * self.du2 / p["ell_t"] ** 2
            diag_t = np.einsum("ij,ij->j", p["ut"], dkt @ p["ut"])
            grad.append(0.5 * float(p["lc"] @ inv_d @ diag_t) - 0.5 * float((A * (p["kc"] @ A @ dkt)).sum()))
        grad.append(0.5 * p["noise"] * float(inv_d.sum()) - 0.5 * p["noise"] * float((A**2).sum()))
        deviation = (theta - self.prior_mean) / self.prior_sd
        value += 0.5 * float((deviation**2).sum())
        return value, np.asarray(grad) + deviation / self.prior_sd


def fit_gp(X: np.ndarray, Y: np.ndarray, features: list[dict[str, Any]], epoch_kernel: bool = True) -> GPFit:
    """MAP fit of the separable GP to the complete (n configurations, T epochs) grid Y."""
    with threadpool_limits(1):  # tiny matrices: BLAS threads only fight the machine's other work
        return _fit_gp(X, Y, features, epoch_kernel)


def _fit_gp(X: np.ndarray, Y: np.ndarray, features: list[dict[str, Any]], epoch_kernel: bool) -> GPFit:
    offset, scale = float(Y.mean()), float(Y.std()) or 1.0
    problem = _Problem(X, (Y - offset) / scale, features, epoch_kernel)
    low, high = (np.array(b) for b in zip(*problem.bounds, strict=True))
    rng = np.random.default_rng(0)  # fixed restarts: the same curves give the same surrogate
    starts = [problem.prior_mean, problem.prior_mean + 0.5 * problem.prior_sd * rng.standard_normal(len(low))]
    results = [
        minimize(problem, np.clip(s, low, high), jac=True, method="L-BFGS-B", bounds=problem.bounds)
        for s in starts
    ]
    p = problem.parts(min(results, key=lambda r: r.fun).x)
    weights = p["alpha"] @ p["kt"]  # mean(x) = k(x, X) @ alpha @ Kt
    doc = {
        "lengthscales": [float(v) for v in p["ell"]],
        "variance": p["variance"],
        "bias": p["bias"],
        "linear": p["linear"],
        "offset": offset,
        "scale": scale,
        "inputs": X.tolist(),
        "weights": weights.tolist(),
    }
    run = p["run"] if epoch_kernel else p["noise"]  # see the module's docstring
    hyper = {"noise_sd": math.sqrt(p["noise"]) * scale, "run_sd": math.sqrt(run) * scale}
    hyper |= {"ell_t": p["ell_t"] or 0.0} | {k: p[k] for k in ("variance", "bias", "linear")}
    hyper |= {f"ell_{f['param']}": float(v) for f, v in zip(features, p["ell"], strict=True)}
    return GPFit(
        doc,
        fitted=offset + scale * (p["kc_config"] @ weights),
        trend=offset + scale * (p["kc"] @ weights),
        # I - S is diagonal in the eigenbasis of (Kc + run I) (x) Kt, with gain noise / (lambda + noise)
        residual_map=ResidualMap(p["ut"], p["noise"] / p["D"]),
        run_cov=run * scale**2 * p["kt"],
        hyper=hyper,
    )


def predictor(doc: dict[str, Any], features: list[dict[str, Any]]):
    """Vectorised GP mean over many encoded configurations (m, d) -> (m, T), same numbers as replay."""
    ell = feature_lengthscales(features, doc["lengthscales"])
    X, W = np.asarray(doc["inputs"]), np.asarray(doc["weights"])

    def predict(Xq: np.ndarray) -> np.ndarray:
        k = doc["variance"] * matern52(scaled_distance(Xq, X, ell)) + doc["bias"] + doc["linear"] * (Xq @ X.T)
        return doc["offset"] + doc["scale"] * (k @ W)

    return predict
