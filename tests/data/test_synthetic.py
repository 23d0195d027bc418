from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from marstune.data.mars import DataError, load_npz, validate_test_set, validate_training_set
from marstune.data.synthetic import SyntheticSet, generate, synthetic_data, write_npz


@pytest.fixture(scope="module")
def big() -> SyntheticSet:
    return generate(300, 20, seed=11)


def test_same_seed_same_arrays_other_seed_other_arrays() -> None:
    a, b, c = generate(30, 5, seed=1), generate(30, 5, seed=1), generate(30, 5, seed=2)
    np.testing.assert_array_equal(a.training_set, b.training_set)
    np.testing.assert_array_equal(a.test_set, b.test_set)
    np.testing.assert_array_equal(a.contaminated, b.contaminated)
    assert not np.array_equal(a.training_set[:, 0], c.training_set[:, 0])
    assert not np.array_equal(a.training_set[:, 1], c.training_set[:, 1])
    assert not np.array_equal(a.test_set, c.test_set)


def test_challenge_layout(big: SyntheticSet) -> None:
    assert big.training_set.shape == (300, 2, 64, 128) and big.training_set.dtype == np.float64
    assert big.test_set.shape == (20, 64, 128) and big.test_set.dtype == np.float64
    validate_training_set(big.training_set, "synthetic")
    validate_test_set(big.test_set, "synthetic")
    images = big.training_set[:, 0]
    assert not np.array_equal(images, np.round(images))  # float pixel values, like the real file


def test_class_frequencies_are_sensible(big: SyntheticSet) -> None:
    clean = np.setdiff1d(np.arange(300), big.contaminated)
    share = np.bincount(big.training_set[clean, 1].astype(int).ravel(), minlength=5) / (len(clean) * 64 * 128)
    assert share[4] > 0.0002 and share[4] < 0.03  # big rock present but rare (real: 0.13%)
    assert 0.1 < share[0] < 0.4  # background band (real: 24%)
    assert all(0.08 < s < 0.6 for s in share[1:4])  # soil, bedrock, sand all substantial


def test_contamination_is_planted_with_one_shared_mask(big: SyntheticSet) -> None:
    bad = big.contaminated
    assert len(bad) == 12 and np.array_equal(bad, np.unique(bad))  # 4% of 300, sorted, distinct
    masks = big.training_set[bad, 1]
    assert all(np.array_equal(m, masks[0]) for m in masks)
    clean = np.setdiff1d(np.arange(300), bad)
    assert not any(np.array_equal(big.training_set[i, 1], masks[0]) for i in clean)
    # the pictures are unrelated to terrain: smooth, with none of the terrain grain
    grain = np.abs(np.diff(big.training_set[:, 0], axis=2)).mean(axis=(1, 2))
    assert grain[bad].max() < grain[clean].min()
    assert generate(250, 0, seed=3).contaminated.size == 10
    assert generate(50, 0, seed=3, contamination=0.0).contaminated.size == 0
    assert generate(20, 0, seed=3).contaminated.size == 3  # at least a group the cleaner can see


def _box(a: np.ndarray, k: int = 5) -> np.ndarray:
    """k x k local mean over each image of a (n, H, W) stack (reflect padding), via integral images."""
    p = k // 2
    c = np.pad(
        np.pad(a, ((0, 0), (p, p), (p, p)), mode="reflect").cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0))
    )
    return (c[:, k:, k:] - c[:, :-k, k:] - c[:, k:, :-k] + c[:, :-k, :-k]) / (k * k)


def test_classes_are_learnable_from_local_texture(big: SyntheticSet) -> None:
    """Learnability proxy without Keras: nearest class centroid on 5x5 mean and std of the pixel values."""
    clean = np.setdiff1d(np.arange(300), big.contaminated)
    images, labels = big.training_set[clean, 0], big.training_set[clean, 1].astype(int)
    mean = _box(images)
    std = np.sqrt(np.maximum(_box(images**2) - mean**2, 0.0))
    feats = np.stack([mean, std], axis=-1)
    half = len(clean) // 2  # centroids from the first half of the pictures, accuracy on the second
    fit, test = slice(0, half), slice(half, None)
    fit_mask, test_mask = labels[fit] > 0, labels[test] > 0  # terrain only: background is the easy part
    scale = feats[fit][fit_mask].std(axis=0)
    x_fit, y_fit = feats[fit][fit_mask] / scale, labels[fit][fit_mask]
    centroids = np.stack([x_fit[y_fit == c].mean(axis=0) for c in range(1, 5)])
    x_test, y_test = feats[test][test_mask][::5] / scale, labels[test][test_mask][::5]  # every 5th: cheaper
    pred = np.argmin(((x_test[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1) + 1
    accuracy = float((pred == y_test).mean())
    chance = float(np.bincount(y_test).max() / len(y_test))  # always guessing the commonest class
    assert accuracy > 0.6 and accuracy > chance + 0.2
    assert accuracy < 0.98  # classes overlap a bit: one pixel's neighbourhood is not a giveaway


def test_synthetic_data_is_what_load_npz_gives(tmp_path: Path) -> None:
    written = write_npz(tmp_path / "s.npz", n_train=12, n_test=4, seed=9)
    loaded, direct = load_npz(tmp_path / "s.npz"), synthetic_data(12, 4, seed=9)
    np.testing.assert_array_equal(loaded.images, direct.images)
    np.testing.assert_array_equal(loaded.labels, direct.labels)
    np.testing.assert_array_equal(loaded.test_images, direct.test_images)
    assert loaded.fingerprint == direct.fingerprint
    assert direct.source == "synthetic(n=12, seed=9)"
    np.testing.assert_array_equal(written.training_set, generate(12, 4, seed=9).training_set)


def test_generating_the_default_size_is_fast() -> None:
    generate(20, 0, seed=0)  # warm up imports
    start = time.process_time()  # CPU time: other work on the shared cores must not fail this test
    s = generate(600, 60, seed=0)
    elapsed = time.process_time() - start
    assert s.training_set.shape[0] == 600
    assert elapsed < 3.0  # ~0.5 s; the bound only catches a lost vectorization


def test_a_smaller_set_is_a_prefix_of_a_larger_one() -> None:
    small = generate(10, 3, seed=5, contamination=0.0)
    large = generate(70, 5, seed=5, contamination=0.0)  # crosses a generator block boundary
    np.testing.assert_array_equal(small.training_set, large.training_set[:10])
    np.testing.assert_array_equal(small.test_set, large.test_set[:3])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_train": 0}, "n_train"),
        ({"n_test": -1}, "n_test"),
        ({"contamination": 0.6}, "contamination"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(DataError, match=match):
        generate(**kwargs)  # type: ignore[arg-type]
