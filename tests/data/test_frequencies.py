"""Class frequencies of label masks: hand-counted, absent classes, counting in chunks, bad labels."""

from __future__ import annotations

import numpy as np
import pytest

from marstune.data.frequencies import CHUNK, class_frequencies
from marstune.data.mars import DataError
from marstune.data.synthetic import synthetic_data


def test_hand_counted_shares() -> None:
    labels = np.array([[[0, 1, 1, 2], [2, 2, 3, 1]]], dtype=np.uint8)  # 8 pixels, no big rock
    np.testing.assert_array_equal(class_frequencies(labels), [1 / 8, 3 / 8, 3 / 8, 1 / 8, 0.0])


def test_counts_across_chunks_equal_one_bincount() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (CHUNK * 2 + 17, 3, 4), dtype=np.uint8)
    counts = np.bincount(labels.ravel(), minlength=5)
    frequencies = class_frequencies(labels)
    np.testing.assert_allclose(frequencies, counts / counts.sum(), rtol=1e-15)
    assert frequencies.dtype == np.float64 and frequencies.sum() == pytest.approx(1.0)


def test_synthetic_terrain_has_every_class_and_rare_big_rock() -> None:
    frequencies = class_frequencies(synthetic_data(n_train=32, n_test=0, seed=0).labels)
    assert np.all(frequencies > 0) and frequencies[4] < 0.05


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.zeros((2, 3), np.float32), "labels are float32; expected integer class ids 0..4"),
        (np.full((2, 3), 5, np.uint8), "labels hold values 5..5; expected class ids 0..4"),
        (np.full((2, 3), -1, np.int64), "labels hold values -1..-1"),
        (np.zeros((0, 64, 128), np.uint8), "hold no pixels"),
    ],
)
def test_bad_labels_are_refused(labels: np.ndarray, match: str) -> None:
    with pytest.raises(DataError, match=match):
        class_frequencies(labels)
