"""Procedural Mars-like terrain with labels, in the challenge layout, for demos and tests.

Each picture is a background band (sky, label 0) over terrain split into soil (1), bedrock (2) and sand (3)
by the argmax of a few smooth random fields, with rare dark big rocks (4). Each class has its own
brightness AND texture (soil: mid grey fine grain; bedrock: brighter, layered streaks with edges; sand:
smooth ripples; big rock: dark with a lit side; sky: a smooth gradient), so a small neighbourhood mostly
tells the class, while per-image lighting makes the brightness ranges overlap. About `contamination` of
the training pairs are replaced by unrelated smooth pictures that all share one identical mask, like the
real data set. Everything is vectorized numpy and deterministic by seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marstune.data.mars import IMAGE_SHAPE, DataError, MarsData, from_arrays, save_npz

H, W = IMAGE_SHAPE
_F = np.float32
CHUNK = 64  # pictures per vectorized block: amortizes numpy calls while the arrays stay in cache

# Per-class texture parameters, indexed by label: background, soil, bedrock, sand, big rock.
# Means overlap once lighting varies (gain 0.85..1.15); the texture terms keep classes apart.
_MEAN = np.array([185.0, 108.0, 150.0, 128.0, 62.0], dtype=_F)
_GRAIN = np.array([1.5, 15.0, 6.0, 2.5, 5.0], dtype=_F)  # std of per-pixel noise
_STREAK_AMP = 22.0  # bedrock layering
_RIPPLE_AMP = 11.0  # sand ripples
_HIGHLIGHT = 70.0  # lit side of a big rock


@dataclass(frozen=True, eq=False)
class SyntheticSet:
    training_set: np.ndarray  # (N, 2, 64, 128) float64: [:, 0] images 0..255, [:, 1] labels 0..4
    test_set: np.ndarray  # (M, 64, 128) float64
    contaminated: np.ndarray  # sorted indices of the planted outliers in training_set


def _upsample_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) matrix interpolating a coarse axis smoothly (smoothstep weights) onto `dst` pixels."""
    pos = np.linspace(0.0, src - 1.0, dst)
    i0 = np.minimum(np.floor(pos).astype(int), src - 2)
    t = pos - i0
    t = t * t * (3.0 - 2.0 * t)
    m = np.zeros((dst, src), dtype=_F)
    m[np.arange(dst), i0] = 1.0 - t
    m[np.arange(dst), i0 + 1] = t
    return m


def _smooth_fields(rng: np.random.Generator, shape: tuple[int, ...], coarse: tuple[int, int]) -> np.ndarray:
    """Smooth random fields (*shape, H, W), ~unit variance: coarse noise upsampled by two matrix products."""
    low = rng.standard_normal((*shape, *coarse), dtype=_F)
    return _upsample_matrix(coarse[0], H) @ low @ _upsample_matrix(coarse[1], W).T


def _terrain(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n terrain pictures and their masks: ((n, H, W) float32 0..255, (n, H, W) uint8 0..4)."""
    yy = np.arange(H, dtype=_F)[:, None]
    xx = np.arange(W, dtype=_F)[None, :]

    # Regions: argmax of three smooth fields (two octaves for irregular borders) plus a per-image class bias,
    # so some pictures are mostly one terrain type.
    fields = _smooth_fields(rng, (n, 3), (4, 7)) + 0.5 * _smooth_fields(rng, (n, 3), (9, 17))
    fields += rng.normal(0.0, 0.6, (n, 3, 1, 1)).astype(_F) + np.array([0.5, 0.15, 0.0], _F)[:, None, None]
    a, b, c = fields[:, 0], fields[:, 1], fields[:, 2]  # argmax by hand: 3x faster than np.argmax(axis=1)
    u1, u2, u3 = np.uint8(1), np.uint8(2), np.uint8(3)
    labels = np.where(a >= b, np.where(a >= c, u1, u3), np.where(b >= c, u2, u3))

    # Background band along the top: variable height (none in some pictures) with a wavy horizon.
    base = np.where(rng.random(n) < 0.15, -4.0, rng.uniform(6.0, 30.0, n)).astype(_F)
    wave = (_upsample_matrix(6, W) @ rng.normal(0.0, 2.5, (n, 6, 1)).astype(_F))[:, :, 0]  # (n, W)
    horizon = base[:, None] + wave
    labels[yy[None] < horizon[:, None, :]] = 0

    # Big rocks: up to two small ellipses in some pictures, below the horizon; lit from the upper left.
    # Only pictures that get a rock pay for the (k, 2, H, W) distance arrays.
    cy = horizon.max(axis=1)[:, None] + rng.uniform(4.0, 40.0, (n, 2)).astype(_F)
    cx = rng.uniform(4.0, W - 4.0, (n, 2)).astype(_F)
    ry = rng.uniform(1.5, 3.5, (n, 2)).astype(_F)
    rx = ry * rng.uniform(1.0, 1.8, (n, 2)).astype(_F)
    active = rng.random((n, 2)) < np.array([0.35, 0.12])
    has = np.flatnonzero(active.any(axis=1))
    dy = (yy - cy[has, :, None, None]) / ry[has, :, None, None]  # (k, 2, H, 1)
    dx = (xx - cx[has, :, None, None]) / rx[has, :, None, None]  # (k, 2, 1, W)
    inside = (dy**2 + dx**2 <= 1.0) & active[has, :, None, None]  # (k, 2, H, W)
    labels[has] = np.where(inside.any(axis=1), np.uint8(4), labels[has])
    highlight = np.zeros((n, H, W), dtype=_F)
    highlight[has] = (np.clip(-(dy + dx) * 0.7, 0.0, 1.0) * inside).max(axis=1)

    # Textures for every pixel, then picked by label: cheaper than masking per class.
    theta = rng.uniform(-0.5, 0.5, (n, 1, 1)).astype(_F)  # streak/ripple orientation around horizontal
    warp = 3.0 * _smooth_fields(rng, (n,), (3, 5))
    # Everything float32: a float64 sin over (n, H, W) alone costs more than the whole float32 generator.
    two_pi = _F(2 * np.pi)
    layer_period = rng.uniform(7.0, 14.0, (n, 1, 1)).astype(_F)
    streaks = np.tanh(3.0 * np.sin(two_pi * (yy * np.cos(theta) + xx * np.sin(theta) + warp) / layer_period))
    phase = rng.uniform(0.0, 2 * np.pi, (n, 1, 1)).astype(_F)
    period = rng.uniform(4.5, 7.0, (n, 1, 1)).astype(_F)
    ripples = np.sin(two_pi * (yy * np.cos(theta) - xx * np.sin(theta) + warp) / period + phase)
    sky = 12.0 * (yy / H - 0.2) * rng.choice(np.array([-1.0, 1.0], _F), (n, 1, 1))

    img = rng.standard_normal((n, H, W), dtype=_F)
    img *= _GRAIN[labels]
    img += _MEAN[labels]
    img += np.where(labels == 2, _STREAK_AMP * streaks, 0.0)
    img += np.where(labels == 3, _RIPPLE_AMP * ripples, 0.0)
    img += np.where(labels == 0, sky, 0.0)
    img += _HIGHLIGHT * highlight

    # Lighting: a gain and offset per picture and a soft illumination gradient across it.
    gain = rng.uniform(0.85, 1.15, (n, 1, 1)).astype(_F)
    offset = rng.normal(0.0, 6.0, (n, 1, 1)).astype(_F)
    shade = 1.0 + 0.08 * _smooth_fields(rng, (n,), (2, 3))
    img = np.clip(img * gain * shade + offset, 0.0, 255.0)
    return img.astype(_F), labels


def _outliers(rng: np.random.Generator, n: int) -> np.ndarray:
    """n unrelated pictures (smooth gradients and blobs, no terrain texture), (n, H, W) float32 0..255."""
    yy = np.linspace(-1.0, 1.0, H, dtype=_F)[:, None]
    xx = np.linspace(-1.0, 1.0, W, dtype=_F)[None, :]
    g = rng.normal(0.0, 60.0, (n, 2, 1, 1)).astype(_F)
    img = rng.uniform(60.0, 200.0, (n, 1, 1)).astype(_F) + g[:, 0] * yy + g[:, 1] * xx
    centres = rng.uniform(-1.0, 1.0, (n, 3, 2, 1, 1)).astype(_F)
    width = rng.uniform(0.1, 0.5, (n, 3, 1, 1)).astype(_F)
    amp = rng.normal(0.0, 80.0, (n, 3, 1, 1)).astype(_F)
    d2 = (yy - centres[:, :, 0]) ** 2 + (xx - centres[:, :, 1]) ** 2  # (n, 3, H, W)
    img = img + (amp * np.exp(-d2 / (2 * width**2))).sum(axis=1)
    return np.clip(img, 0.0, 255.0)


def _terrain_stream(seed: int, stream: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n terrain pictures from one seeded stream, in blocks of CHUNK with a generator per block.

    Blocks keep the arrays in cache (2-3x faster than one (n, ...) block) and make picture i the same
    for every n, so a smaller set is a prefix of a larger one with the same seed.
    """
    images = np.empty((n, H, W), dtype=_F)
    labels = np.empty((n, H, W), dtype=np.uint8)
    for block, start in enumerate(range(0, n, CHUNK)):
        stop = min(start + CHUNK, n)
        # Always a full block, cut afterwards: the random draws then do not depend on n.
        block_images, block_labels = _terrain(np.random.default_rng([seed, stream, block]), CHUNK)
        images[start:stop], labels[start:stop] = block_images[: stop - start], block_labels[: stop - start]
    return images, labels


def generate(
    n_train: int = 600, n_test: int = 60, seed: int = 0, contamination: float = 0.04
) -> SyntheticSet:
    """Training pairs and test images in the challenge layout (float64), deterministic by `seed`.

    round(contamination * n_train) training pairs, at least 3 when contamination > 0 (a single odd pair is
    not the pattern the cleaner looks for) and at most a third, are unrelated pictures sharing one mask.
    """
    if n_train < 1 or n_test < 0:
        raise DataError(f"generate: n_train={n_train}, n_test={n_test}; expected n_train >= 1, n_test >= 0")
    if not 0.0 <= contamination <= 0.5:
        raise DataError(f"generate: contamination={contamination}; expected a share between 0 and 0.5")
    if seed < 0:
        raise DataError(f"generate: seed={seed}; expected a non-negative integer")
    images, labels = _terrain_stream(seed, 0, n_train)
    test_images, _ = _terrain_stream(seed, 1, n_test)
    rng = np.random.default_rng([seed, 2])  # contamination: which pairs, their pictures and the shared mask
    k = round(contamination * n_train)
    if contamination > 0:
        k = min(max(k, 3), n_train // 3)
    bad = np.sort(rng.choice(n_train, size=k, replace=False))
    images[bad] = _outliers(rng, k)
    labels[bad] = _terrain(rng, 1)[1][0]
    training_set = np.empty((n_train, 2, H, W), dtype=np.float64)
    training_set[:, 0] = images
    training_set[:, 1] = labels
    return SyntheticSet(
        training_set=training_set, test_set=test_images.astype(np.float64), contaminated=bad.astype(np.int64)
    )


def synthetic_data(
    n_train: int = 600, n_test: int = 60, seed: int = 0, contamination: float = 0.04
) -> MarsData:
    """The MarsData that load_npz would return for write_npz(path, n_train, n_test, seed) (bar `source`)."""
    s = generate(n_train, n_test, seed, contamination)
    return from_arrays(s.training_set, s.test_set, f"synthetic(n={n_train}, seed={seed})")


def write_npz(
    path: str | Path, n_train: int = 600, n_test: int = 60, seed: int = 0, contamination: float = 0.04
) -> SyntheticSet:
    """Generate a synthetic set and write it in the challenge layout, as the real file would be."""
    s = generate(n_train, n_test, seed, contamination)
    save_npz(path, s.training_set, s.test_set)
    return s
