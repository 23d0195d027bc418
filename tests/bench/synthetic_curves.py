"""A known family of learning curves over the seed's space, in the exported curves format: the truth
the surrogate tests recover (final level from the parameters, a sigmoid in log epoch, white noise)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SPACE = {
    "base_filters": {"type": "categorical", "choices": [8, 16, 32]},
    "levels": {"type": "int", "low": 2, "high": 5},
    "kernel": {"type": "categorical", "choices": [3, 5]},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "activation": {"type": "categorical", "choices": ["relu", "elu", "gelu", "swish"]},
}
ACTIVATION_GAIN = {"relu": 0.0, "elu": 0.02, "gelu": 0.04, "swish": 0.06}


def true_curve(p: dict[str, Any], epochs: int) -> np.ndarray:
    """The noise-free curve: bigger, wider and less dropped-out models end higher and rise later."""
    final = (
        0.18
        + 0.06 * math.log2(p["base_filters"] / 8)
        + 0.04 * (p["levels"] - 2)
        + 0.02 * (p["kernel"] == 5)
        - 0.2 * p["dropout"]
        + ACTIVATION_GAIN[p["activation"]]
    )
    t = np.arange(1, epochs + 1)
    onset = 0.8 + 0.15 * (p["levels"] - 2)  # in log epochs
    return 0.08 + (final - 0.08) / (1.0 + np.exp(-(np.log(t) - onset) * 3.0))


def true_seconds(p: dict[str, Any], epochs: int) -> np.ndarray:
    base = 0.5 * (p["base_filters"] / 8) ** 2 * (1 + 0.6 * (p["levels"] - 2)) * (p["kernel"] / 3) ** 2
    return np.array([1.5 * base if t == 0 else base for t in range(epochs)])


def random_params(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "activation": str(rng.choice(SPACE["activation"]["choices"])),
        "base_filters": int(rng.choice([8, 16, 32])),
        "dropout": round(float(rng.uniform(0.0, 0.5)), 3),
        "kernel": int(rng.choice([3, 5])),
        "levels": int(rng.integers(2, 6)),
    }


def ar1_noise(rng: np.random.Generator, epochs: int, sd: float, ar1: float) -> np.ndarray:
    """Stationary AR(1) noise: marginal sd `sd`, lag-1 correlation `ar1`."""
    out = np.empty(epochs)
    out[0] = rng.standard_normal()
    for t in range(1, epochs):
        out[t] = ar1 * out[t - 1] + np.sqrt(1 - ar1**2) * rng.standard_normal()
    return sd * out


def curves_doc(
    n: int = 49,
    epochs: int = 12,
    noise: float = 0.03,
    seed: int = 0,
    ar1: float = 0.0,
    run_sd: float = 0.0,
    jumpy: float = 0.0,
) -> dict[str, Any]:
    """n configurations trained once each: the true curve, plus the run's own offset (`run_sd`, the same
    for all its epochs: its seed), plus epoch-to-epoch noise (sd `noise` times a log-normal factor per
    run with log sd `jumpy` and mean square 1)."""
    rng = np.random.default_rng(seed)
    configs = []
    for number in range(n):
        p = random_params(rng)
        run = run_sd * rng.standard_normal()
        sd = noise * np.exp(jumpy * rng.standard_normal() - jumpy**2)
        miou = np.clip(true_curve(p, epochs) + run + ar1_noise(rng, epochs, sd, ar1), 0.0, 1.0)
        cpu = true_seconds(p, epochs) * np.exp(0.02 * rng.standard_normal(epochs))
        rows = [
            {"val_miou": round(float(m), 5), "per_class_iou": None, "seconds": round(float(c) * 1.2, 3),
             "cpu_seconds": round(float(c), 3), "train_seconds": None, "images_per_second": None}
            for m, c in zip(miou, cpu, strict=True)
        ]  # fmt: skip
        configs.append({"number": number, "params": p, "model_params": None, "epochs": rows})
    spec = {"space": SPACE, "train": {"epochs": epochs}}
    return {
        "format": "tune learning curves v1",
        "recipe": {"spec": spec, "design": {"size": n}},
        "configs": configs,
    }
