"""Replay of the recorded U-Net learning curves: a fitted surrogate answers, for any configuration of the
space, the validation mIoU and the compute seconds of every epoch, as a recorded trial would have.

The evaluation side of the surrogate, kept small and self-contained (numpy and the standard library, no
imports from bench/) because it moves into the product as tuning/search/replay.py for
`objective.kind: replay`. bench/surrogate_fit.py writes the JSON file this reads; nothing is unpickled.

A curve is the surrogate's smooth mean plus noise with the structure measured on the recorded curves:
  val_miou[t] = clip(mean(x, t) + run[t] + sd(x, t) * z[t], 0, 1)
  seconds[t]  = exp(log_mean(x, t) + sd_seconds * e[t])
- mean, log_mean: Gaussian-process posterior means over configurations (weights on the recorded
  configurations, one column per epoch);
- run: this seed's own offset for the whole run, Gaussian with the covariance over epochs estimated from
  the recording (retraining a configuration does not give the same curve);
- sd(x, t): grows with the curve's level and epoch as the recorded residuals did, times a log-normal
  factor per run (some runs are jumpier than others), mean square 1;
- z: an AR(1) Gaussian series mapped onto the recorded residuals' quantiles (their skew: validation
  scores drop more often than they jump); e: a Gaussian AR(1) series (an epoch that met a busy machine
  is often followed by another).
Seconds are CPU seconds of one thread: what the epoch costs on an idle core, whatever the recording
machine's load was.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "tune replay surrogate v1"
MAX_BYTES = 50 << 20  # a fitted surrogate is ~30 KB; anything near this is not one


def encode(features: list[dict[str, Any]], params: Mapping[str, Any]) -> np.ndarray:
    """The numeric vector the kernels compare: every parameter scaled to [0, 1], strings one-hot.

    Refuses what the surrogate never saw (a missing or unknown name, a value outside the recorded
    range or choices): a replayed score there would be an extrapolation nobody measured."""
    names = [f["param"] for f in features]
    missing, unknown = sorted(set(names) - set(params)), sorted(set(params) - set(names))
    if missing or unknown:
        raise ValueError(f"replay: parameters must be exactly {names}; missing {missing}, unknown {unknown}")
    out: list[float] = []
    for f in features:
        value = params[f["param"]]
        choices = f.get("choices")
        if choices is not None and value not in choices:
            raise ValueError(f"replay: {f['param']}={value!r} is not one of the recorded choices {choices}")
        if f["kind"] == "onehot":
            out += [1.0 if value == c else 0.0 for c in choices]
            continue
        low, high, x = float(f["low"]), float(f["high"]), float(value)
        if not low <= x <= high:
            raise ValueError(f"replay: {f['param']}={value!r} is outside the recorded range [{low}, {high}]")
        if f["kind"] == "log":
            low, high, x = math.log(low), math.log(high), math.log(x)
        out.append((x - low) / (high - low) if high > low else 0.0)
    return np.asarray(out, dtype=float)


def scaled_distance(a: np.ndarray, b: np.ndarray, lengthscales: np.ndarray) -> np.ndarray:
    """Euclidean distance between rows of a (m, d) and b (n, d), each feature divided by its lengthscale."""
    diff = (a[:, None, :] - b[None, :, :]) / lengthscales
    return np.sqrt(np.maximum((diff**2).sum(-1), 0.0))


def matern52(r: np.ndarray) -> np.ndarray:
    """Matérn 5/2 correlation of scaled distances: smooth, but less so than an RBF (sharper landscapes)."""
    s = math.sqrt(5.0) * r
    return (1.0 + s + s**2 / 3.0) * np.exp(-s)


def feature_lengthscales(features: list[dict[str, Any]], per_param: list[float]) -> np.ndarray:
    """One lengthscale per parameter, repeated over the columns of a one-hot parameter."""
    out: list[float] = []
    for f, ell in zip(features, per_param, strict=True):
        out += [ell] * (len(f["choices"]) if f["kind"] == "onehot" else 1)
    return np.asarray(out, dtype=float)


def _normal_cdf(g: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(g / math.sqrt(2.0)))


def _ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    """A stationary Gaussian AR(1) series: unit variance, lag-1 correlation phi."""
    g = np.empty(n)
    g[0] = rng.standard_normal()
    innovation = math.sqrt(max(1.0 - phi**2, 0.0))
    for t in range(1, n):
        g[t] = phi * g[t - 1] + innovation * rng.standard_normal()
    return g


def _seed_sequence(x: np.ndarray, seed: int) -> np.random.SeedSequence:
    """Noise seeded by (configuration, seed): one configuration replays the same curve for one seed,
    and two configurations never share their noise (which would make their difference noise-free).
    Keyed on the encoded configuration, so 16 and 16.0 filters are one configuration."""
    key = json.dumps({"x": [round(float(v), 12) for v in x], "seed": int(seed)})
    digest = hashlib.sha256(key.encode()).digest()
    return np.random.SeedSequence([int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)])


class GPMean:
    """Posterior mean of a GP over configurations with one output per epoch:
    mean(x) = offset + scale * (k(x, X) @ weights), k = variance * Matérn52 + bias + linear * <x, X>."""

    def __init__(self, doc: Mapping[str, Any], features: list[dict[str, Any]]) -> None:
        self.lengthscales = feature_lengthscales(features, doc["lengthscales"])
        self.variance, self.bias, self.linear = (
            float(doc["variance"]),
            float(doc["bias"]),
            float(doc["linear"]),
        )
        self.offset, self.scale = float(doc["offset"]), float(doc["scale"])
        self.inputs = np.asarray(doc["inputs"], dtype=float)
        self.weights = np.asarray(doc["weights"], dtype=float)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        k = self.variance * matern52(scaled_distance(x[None, :], self.inputs, self.lengthscales))
        k = k + self.bias + self.linear * (self.inputs @ x)
        return self.offset + self.scale * (k @ self.weights)[0]


class Replay:
    """A fitted surrogate; `curve(params, seed)` is the whole contract the product relies on."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        if doc.get("format") != FORMAT:
            raise ValueError(f"replay: expected a {FORMAT!r} file, got format {doc.get('format')!r}")
        self.doc = doc
        epochs = doc["epochs"]
        if not isinstance(epochs, int) or isinstance(epochs, bool):
            raise ValueError(f"epochs must be a whole number, got {epochs!r}")
        self.epochs = epochs
        self.features: list[dict[str, Any]] = list(doc["features"])
        self.miou = GPMean(doc["miou"], self.features)
        self.log_seconds = GPMean(doc["log_seconds"], self.features)
        noise = doc["noise"]
        self.sd_coef = np.asarray(noise["miou"]["log_sd"], dtype=float)  # [1, level, log epoch]
        self.ar1 = float(noise["miou"]["ar1"])
        self.run_log_sd = float(noise["miou"]["run_log_sd"])
        self.probs = np.asarray(noise["miou"]["probabilities"], dtype=float)
        self.quantiles = np.asarray(noise["miou"]["quantiles"], dtype=float)
        self.run_chol = np.asarray(noise["run"]["chol"], dtype=float)
        self.sd_seconds = float(noise["log_seconds"]["sd"])
        self.ar1_seconds = float(noise["log_seconds"]["ar1"])
        self._check()

    def _check(self) -> None:
        """A hand-edited or truncated file is refused here, not by a NaN or a matmul error mid-study."""
        held = {np.shape(m.weights)[-1] for m in (self.miou, self.log_seconds)}
        if self.epochs < 1 or held != {self.epochs}:
            raise ValueError(f"epochs is {self.epochs} but the curves hold {sorted(held)}")
        arrays = [self.sd_coef, self.probs, self.quantiles, self.run_chol]
        scalars = [self.ar1, self.run_log_sd, self.sd_seconds, self.ar1_seconds]
        for m in (self.miou, self.log_seconds):
            arrays += [m.lengthscales, m.inputs, m.weights]
            scalars += [m.variance, m.bias, m.linear, m.offset, m.scale]
        if not all(np.all(np.isfinite(a)) for a in [*arrays, np.asarray(scalars)]):
            raise ValueError("it holds a NaN or an infinite number")

    @classmethod
    def from_json(cls, path: str | Path) -> Replay:
        path = Path(path).expanduser()
        if path.exists() and not path.is_file():  # a folder, a device (/dev/zero reads forever), a pipe
            raise ValueError("not a regular file")
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES >> 20} MB; a fitted surrogate is far smaller")
        doc = json.loads(path.read_text())
        if not isinstance(doc, Mapping):
            raise ValueError("not a JSON object")
        return cls(doc)

    def mean_curve(self, params: Mapping[str, Any]) -> np.ndarray:
        """The smooth (noise-free) validation mIoU per epoch."""
        return self.miou(encode(self.features, params))

    def mean_seconds(self, params: Mapping[str, Any]) -> np.ndarray:
        """The typical CPU seconds of each epoch (the first includes building the graph)."""
        return np.exp(self.log_seconds(encode(self.features, params)))

    def noise_sd(self, level: np.ndarray) -> np.ndarray:
        log_t = np.log(np.arange(1, len(level) + 1))
        c = self.sd_coef
        return np.exp(c[0] + c[1] * level + c[2] * log_t)

    def noise(self, level: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Epoch-to-epoch noise around `level`: AR(1) in a Gaussian copula, recorded marginal shape."""
        z = np.interp(_normal_cdf(_ar1(len(level), self.ar1, rng)), self.probs, self.quantiles)
        return self.noise_sd(level) * z

    def curve(self, params: Mapping[str, Any], seed: int) -> list[tuple[float, float]]:
        """One replayed trial: (val_miou, seconds) per epoch 1..epochs; the same (params, seed), the same."""
        x = encode(self.features, params)
        rng = np.random.default_rng(_seed_sequence(x, seed))
        level = self.miou(x) + self.run_chol @ rng.standard_normal(self.epochs)
        jumpy = math.exp(self.run_log_sd * rng.standard_normal() - self.run_log_sd**2)  # E[jumpy^2] = 1
        miou = np.clip(level + jumpy * self.noise(level, rng), 0.0, 1.0)
        seconds = np.exp(self.log_seconds(x) + self.sd_seconds * _ar1(self.epochs, self.ar1_seconds, rng))
        return [(float(m), float(s)) for m, s in zip(miou, seconds, strict=True)]
