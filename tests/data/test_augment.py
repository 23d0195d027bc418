from __future__ import annotations

import os

# Two cores are shared with other work: keep TensorFlow to one thread each way (read at import time).
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from marstune.data.augment import make_dataset
from marstune.data.mars import DataError

H, W = 64, 128


def _pairs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images that are a fixed function of their masks (image = 50 * label) plus one marker pixel each.

    The marker (label 4, image 200) sits at a different place in each pair, away from the centre lines,
    so after any flip its position says which flips happened, and image == 50 * mask says they stayed
    aligned everywhere.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, (n, H, W), dtype=np.uint8)
    rows, cols = rng.integers(0, H // 2 - 1, n), rng.integers(0, W // 2 - 1, n)
    labels[np.arange(n), rows, cols] = 4
    return (labels * 50.0).astype(np.float32), labels


def _epoch(ds: object) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds), strict=True)  # type: ignore[attr-defined]
    return np.concatenate(xs), np.concatenate(ys)


def test_evaluation_batches_keep_order_and_scale() -> None:
    images, labels = _pairs(10)
    batches = list(make_dataset(images, labels, 4, training=False, seed=0))
    assert [int(x.shape[0]) for x, _ in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.dtype.name == "float32" and tuple(x.shape) == (4, H, W, 1)
    assert y.dtype.name == "int32" and tuple(y.shape) == (4, H, W)
    xs, ys = _epoch(batches)
    np.testing.assert_allclose(xs[..., 0] * 255.0, images, rtol=1e-6)
    np.testing.assert_array_equal(ys, labels)
    assert xs.min() >= 0.0 and xs.max() <= 1.0


def test_training_shuffles_per_epoch_and_by_seed() -> None:
    images, labels = _pairs(16)
    ds = make_dataset(images, labels, 5, training=True, seed=1, augment=False)
    (x1, y1), (_, y2) = _epoch(ds), _epoch(ds)

    def order(ys: np.ndarray) -> list[int]:  # which input each output is (masks are unique)
        return [int(np.flatnonzero((labels == m).all(axis=(1, 2)))[0]) for m in ys]

    assert sorted(order(y1)) == list(range(16)) and sorted(order(y2)) == list(range(16))
    assert order(y1) != order(y2)  # a new order each epoch
    assert order(y1) != list(range(16))
    np.testing.assert_allclose(x1[..., 0] * 255.0, y1 * 50.0, atol=1e-3)  # no flips without augment
    same = _epoch(make_dataset(images, labels, 5, training=True, seed=1, augment=False))
    np.testing.assert_array_equal(same[1], y1)
    other = _epoch(make_dataset(images, labels, 5, training=True, seed=2, augment=False))
    assert order(other[1]) != order(y1)


def test_flips_keep_image_and_mask_aligned_and_both_directions_occur() -> None:
    n = 24
    images, labels = _pairs(n)
    ds = make_dataset(images, labels, 8, training=True, seed=3)
    seen: set[tuple[bool, bool]] = set()
    flipped_pairs = []
    for _ in range(3):
        xs, ys = _epoch(ds)
        # alignment everywhere, not just at the marker
        np.testing.assert_allclose(xs[..., 0] * 255.0, ys * 50.0, atol=1e-3)
        for x, y in zip(xs[..., 0], ys, strict=True):
            source = next(i for i in range(n) if _matches(labels[i], y))
            (r0, c0), (r, c) = np.argwhere(labels[source] == 4)[0], np.argwhere(y == 4)[0]
            assert x[r, c] == pytest.approx(200.0 / 255.0)  # the image marker moved with the mask marker
            lr, ud = bool(c != c0), bool(r != r0)
            assert c == (W - 1 - c0 if lr else c0) and r == (H - 1 - r0 if ud else r0)
            seen.add((lr, ud))
            flipped_pairs.append((lr, ud))
    assert seen == {(False, False), (True, False), (False, True), (True, True)}
    share_lr = np.mean([lr for lr, _ in flipped_pairs])
    share_ud = np.mean([ud for _, ud in flipped_pairs])
    assert 0.25 < share_lr < 0.75 and 0.25 < share_ud < 0.75  # p=0.5 each, over 72 draws


def _matches(original: np.ndarray, out: np.ndarray) -> bool:
    return any(
        np.array_equal(out, v) for v in (original, original[:, ::-1], original[::-1], original[::-1, ::-1])
    )


def test_augmentation_is_reproducible_by_seed_and_varies_by_epoch() -> None:
    images, labels = _pairs(12)
    a = make_dataset(images, labels, 4, training=True, seed=5)
    b = make_dataset(images, labels, 4, training=True, seed=5)
    a1, a2 = _epoch(a)[1], _epoch(a)[1]
    np.testing.assert_array_equal(_epoch(b)[1], a1)
    assert not np.array_equal(a1, a2)
    assert not np.array_equal(_epoch(make_dataset(images, labels, 4, training=True, seed=6))[1], a1)


def test_cache_off_gives_the_same_data() -> None:
    images, labels = _pairs(6)
    on = _epoch(make_dataset(images, labels, 4, training=True, seed=2, cache=True))
    off = _epoch(make_dataset(images, labels, 4, training=True, seed=2, cache=False))
    np.testing.assert_array_equal(on[1], off[1])
    np.testing.assert_array_equal(on[0], off[0])


@pytest.mark.parametrize(
    ("images", "labels", "batch", "match"),
    [
        (np.zeros((3, H, W)), np.zeros((2, H, W), np.uint8), 2, "same N"),
        (np.zeros((3, H, 64)), np.zeros((3, H, 64), np.uint8), 2, r"\(N, 64, 128\)"),
        (np.zeros((3, H, W)), np.full((3, H, W), 5, np.uint8), 2, "class ids 0..4"),
        (np.zeros((3, H, W)), np.zeros((3, H, W), np.float32), 2, "integer class ids"),
        (np.zeros((3, H, W)), np.zeros((3, H, W), np.uint8), 0, "batch_size is 0"),
    ],
)
def test_bad_inputs_are_refused(images: np.ndarray, labels: np.ndarray, batch: int, match: str) -> None:
    with pytest.raises(DataError, match=match):
        make_dataset(images, labels, batch, training=True, seed=0)
