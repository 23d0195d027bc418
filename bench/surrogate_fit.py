"""The fitting side of the replay surrogate: recorded curves -> bench/curves/surrogate.json (read by
tuning/search/replay.py). Candidates for the smooth mean, all predicting a whole curve (one value per
epoch) for a configuration, so that every epoch of a replayed trial comes from one consistent model:

  kron-gp   one Gaussian process over (configuration x epoch) with a separable kernel
            (Matérn52 + linear)(config) x RBF(log epoch), a run's own offset and white noise: it learns
            from all the curves together how smooth a curve is along its epochs, how far one run sits
            from its configuration and how much of each recorded value is epoch noise. The grid of
            recorded values is complete, so the kernel matrix is a Kronecker product and one fit costs
            two small eigendecompositions (configs x configs, epochs x epochs).
  trend-gp  a parametric shape first: each recorded curve smoothed by a polynomial in log(epoch) (degree
            by generalised cross-validation), then a GP over configurations on those smooth curves.
  knn       Syne Tune's default surrogate, the nearest recorded configuration's raw curve: the baseline
            the two GPs must beat.

The GP itself is bench/kron_gp.py. Noise model: see fit_noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize import minimize

from bench.curves_data import Curves
from bench.kron_gp import GPFit, epoch_inputs, fit_gp, predictor
from bench.residual_map import ResidualMap
from marstune.tuning.search.replay import FORMAT, encode

QUANTILE_PROBS = np.linspace(0.0, 1.0, 41)


def features_from_space(space: dict[str, Any]) -> list[dict[str, Any]]:
    """How each parameter is compared: strings one-hot; numbers scaled to [0, 1] over their range, on a
    log scale when the choices span a factor of 4 or more (filters double per step: 8 -> 16 is as big a
    step as 16 -> 32)."""
    out: list[dict[str, Any]] = []
    for name, dim in sorted(space.items()):
        if dim["type"] == "categorical" and any(isinstance(c, str) for c in dim["choices"]):
            out.append({"param": name, "kind": "onehot", "choices": list(dim["choices"])})
        elif dim["type"] == "categorical":
            low, high = min(dim["choices"]), max(dim["choices"])
            kind = "log" if low > 0 and high / low >= 4 else "linear"
            out.append(
                {"param": name, "kind": kind, "low": low, "high": high, "choices": list(dim["choices"])}
            )
        else:
            kind = "log" if dim.get("log") else "linear"
            out.append({"param": name, "kind": kind, "low": dim["low"], "high": dim["high"]})
    return out


def trend_degree(Y: np.ndarray, max_degree: int = 3) -> int:
    """The polynomial degree in log(epoch) with the lowest generalised cross-validation score, pooled over
    the curves: flexible enough for the flat start and the plateau, not so flexible it follows noise."""
    T = Y.shape[1]
    scores = {}
    for d in range(1, max_degree + 1):
        _, rss = poly_smooth(Y, d)
        scores[d] = (rss / Y.size) / (1.0 - (d + 1) / T) ** 2
    return min(scores, key=scores.__getitem__)


def poly_smooth(Y: np.ndarray, degree: int) -> tuple[np.ndarray, float]:
    basis = np.vander(epoch_inputs(Y.shape[1]), degree + 1, increasing=True)  # (T, d + 1)
    coef, *_ = np.linalg.lstsq(basis, Y.T, rcond=None)
    smooth = (basis @ coef).T
    return smooth, float(((Y - smooth) ** 2).sum())


def fit_noise(residuals: np.ndarray, level: np.ndarray, smoother: ResidualMap) -> dict[str, Any]:
    """The recorded curves' noise around their smooth trend (residuals and levels are (n, T) grids):
    - size: sd(x, t) = exp(c0 + c1 * level + c2 * log t) by heteroscedastic Gaussian maximum likelihood
      (a curve stuck near 0 predicts one class and barely moves; a curve at 0.4 swings), then inflated by
      N / E[RSS]: residuals around a fitted smoother are smaller than the noise (bench/residual_map.py);
    - memory: AR(1), the phi whose residuals through this smoother would show the lag-1 correlation the
      standardised recorded residuals show (a smoother makes white noise look anti-correlated);
    - per run: some runs are jumpier than others at the same level. A log-normal scale per run, its sd
      what the curves' own log RMS vary by beyond what ~T residuals each would vary by anyway;
    - shape: quantiles of the residuals standardised by all of the above (a curve drops, then recovers:
      the skew a Gaussian would miss)."""
    n, T = residuals.shape
    log_t = np.broadcast_to(np.log(np.arange(1, T + 1)), (n, T))
    r2 = residuals**2

    def nll(c: np.ndarray) -> tuple[float, np.ndarray]:
        log_sd = c[0] + c[1] * level + c[2] * log_t
        w = 1.0 - r2 * np.exp(-2.0 * log_sd)  # d nll / d log_sd per point
        return float((log_sd + 0.5 * r2 * np.exp(-2.0 * log_sd)).sum()), np.array(
            [w.sum(), (w * level).sum(), (w * log_t).sum()]
        )

    start = np.array([math.log(float(np.sqrt(r2.mean())) or 1e-3), 0.0, 0.0])
    bounds = [(-12.0, 2.0), (-20.0, 20.0), (-3.0, 3.0)]
    c = minimize(nll, start, jac=True, method="L-BFGS-B", bounds=bounds).x
    z = residuals / np.exp(c[0] + c[1] * level + c[2] * log_t)
    z = z / np.sqrt((z**2).mean())  # unit scale: the inflation below carries the whole size
    lag1 = float((z[:, 1:] * z[:, :-1]).sum() / (z[:, :-1] ** 2).sum()) if T > 1 else 0.0
    phi = smoother.noise_ar1(lag1)
    dof = smoother.moments(phi)[0]
    c[0] += 0.5 * math.log(residuals.size / max(dof, 1.0))
    # Per-run scale: var(log RMS of a curve) = spread^2 + sampling, sampling ~ 1 / (2 m) for m effective
    # residuals per curve (fewer when they are correlated).
    m = max(dof / n * (1.0 - max(phi, 0.0)) / (1.0 + max(phi, 0.0)), 1.0)
    log_rms = 0.5 * np.log(np.maximum((z**2).mean(axis=1), 1e-12))
    spread2 = max(float(log_rms.var()) - 1.0 / (2.0 * m), 0.0) if n > 2 else 0.0
    shrunk = (log_rms - log_rms.mean()) * spread2 / (spread2 + 1.0 / (2.0 * m))
    z = z / np.exp(shrunk)[:, None]
    z = z / np.sqrt((z**2).mean())
    return {
        "log_sd": [round(float(v), 6) for v in c],
        "ar1": round(phi, 4),
        "run_log_sd": round(math.sqrt(spread2), 4),
        "probabilities": QUANTILE_PROBS.round(4).tolist(),
        "quantiles": np.quantile(z, QUANTILE_PROBS).round(4).tolist(),
        "residual_dof": round(dof, 2),
        "observed_lag1": round(lag1, 4),
    }


def design_matrix(curves: Curves, features: list[dict[str, Any]]) -> np.ndarray:
    return np.stack([encode(features, p) for p in curves.params])


Predictor = Callable[[np.ndarray], np.ndarray]  # encoded configurations (m, d) -> mean curves (m, T)


def fit_mean(kind: str, curves: Curves, features: list[dict[str, Any]]) -> tuple[Predictor, GPFit | None]:
    """The mean model `kind` fitted on `curves`: a predictor, and the GP fit when it can be exported."""
    X = design_matrix(curves, features)
    if kind == "kron-gp":
        fit = fit_gp(X, curves.miou, features, epoch_kernel=True)
    elif kind == "trend-gp":
        degree = trend_degree(curves.miou)
        smooth, _ = poly_smooth(curves.miou, degree)
        fit = fit_gp(X, smooth, features, epoch_kernel=False)
        # A run's effect over epochs: as correlated as the smooth runs' own departures from the GP.
        departures = fit.trend - fit.fitted
        corr = np.corrcoef(departures.T) if curves.n >= 3 and departures.std(axis=0).min() > 0 else None
        fit.run_cov = fit.hyper["run_sd"] ** 2 * (np.eye(curves.epochs) if corr is None else corr)
        # The noise: each curve around its own polynomial, which is what residual_map describes.
        basis = np.vander(epoch_inputs(curves.epochs), degree + 1, increasing=True)
        fit.trend = smooth
        fit.residual_map = ResidualMap.per_curve(
            np.eye(curves.epochs) - basis @ np.linalg.pinv(basis), curves.n
        )
        fit.hyper["trend_degree"] = degree
    elif kind == "knn":
        from sklearn.neighbors import KNeighborsRegressor

        knn = KNeighborsRegressor(n_neighbors=1).fit(X, curves.miou)
        return (lambda Xq: knn.predict(Xq)), None
    else:
        raise ValueError(f"unknown surrogate kind {kind!r}; choose from {', '.join(CANDIDATES)}")
    return predictor(fit.doc, features), fit


CANDIDATES = ("kron-gp", "trend-gp", "knn")
EXPORTABLE = ("kron-gp", "trend-gp")


def fit_seconds(X: np.ndarray, cpu_seconds: np.ndarray, features: list[dict[str, Any]]) -> GPFit:
    """log CPU seconds: every epoch after the first does the same work, so a trial has two numbers, its
    first epoch (which also builds the graph) and the rest; one GP over configurations for the pair,
    written as T columns (the rest repeated) so that replay reads it like the mIoU model."""
    log_cpu = np.log(cpu_seconds)
    pair = np.stack([log_cpu[:, 0], log_cpu[:, 1:].mean(axis=1)], axis=1)
    fit = fit_gp(X, pair, features, epoch_kernel=False)
    columns = [0] + [1] * (cpu_seconds.shape[1] - 1)
    fit.doc["weights"] = np.asarray(fit.doc["weights"])[:, columns].tolist()
    fit.fitted, fit.trend = fit.fitted[:, columns], fit.trend[:, columns]
    fit.run_cov = fit.run_cov[np.ix_(columns, columns)]
    return fit


def seconds_noise(cpu_seconds: np.ndarray) -> dict[str, float]:
    """Each epoch after the first against its own trial's mean (the same work every epoch), not against
    the GP, whose misfit between configurations is no epoch-to-epoch variation; AR(1) because the load
    a trial meets drifts (phi through the centring, as for the mIoU noise)."""
    later = np.log(cpu_seconds[:, 1:])
    n, m = later.shape
    resid = later - later.mean(axis=1, keepdims=True)
    centring = ResidualMap.per_curve(np.eye(m) - 1.0 / m, n)
    phi = centring.noise_ar1(
        float((resid[:, 1:] * resid[:, :-1]).sum() / max((resid[:, :-1] ** 2).sum(), 1e-12))
    )
    return {
        "sd": round(math.sqrt(float((resid**2).sum()) / max(centring.moments(phi)[0], 1.0)), 6),
        "ar1": round(phi, 4),
    }


def run_effect(cov: np.ndarray) -> dict[str, Any]:
    """What replay needs to draw a run's own effect: a Cholesky factor of its covariance over epochs
    (jittered: an RBF over epochs is nearly singular)."""
    jitter = 1e-9 * max(float(np.trace(cov)) / len(cov), 1e-12)
    chol = np.linalg.cholesky(cov + jitter * np.eye(len(cov)))
    return {"sd": [round(float(v), 6) for v in np.sqrt(np.diag(cov))], "chol": chol.tolist()}


def fit_surrogate(curves: Curves, kind: str = "kron-gp") -> dict[str, Any]:
    """The JSON document tuning/search/replay.py reads: the mean of `kind`, the seconds model, the noise."""
    if kind not in EXPORTABLE:
        raise ValueError(f"{kind!r} cannot be exported; choose from {', '.join(EXPORTABLE)}")
    features = features_from_space(curves.space)
    _, fit = fit_mean(kind, curves, features)
    assert fit is not None
    secs = fit_seconds(design_matrix(curves, features), curves.cpu_seconds, features)
    return {
        "format": FORMAT,
        "epochs": curves.epochs,
        "features": features,
        "miou": fit.doc,
        "log_seconds": secs.doc,
        "noise": {
            "miou": fit_noise(curves.miou - fit.trend, fit.trend, fit.residual_map),
            "run": run_effect(fit.run_cov),
            "log_seconds": seconds_noise(curves.cpu_seconds),
        },
        "fit": {
            "kind": kind,
            "configs": curves.n,
            "design_size": curves.design_size,
            "hyper_miou": {k: round(v, 5) for k, v in fit.hyper.items()},
            "hyper_log_seconds": {k: round(v, 5) for k, v in secs.hyper.items()},
            "compute": "cpu_seconds: one thread's CPU time, what the epoch costs on an idle core",
        },
    }
