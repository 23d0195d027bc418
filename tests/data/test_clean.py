from __future__ import annotations

import numpy as np
import pytest

from marstune.data.clean import check_enough_left, find_contamination, group_threshold, remove_contamination
from marstune.data.mars import DataError
from marstune.data.synthetic import generate, synthetic_data


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_finds_every_planted_outlier_and_nothing_else(seed: int) -> None:
    s = generate(150, 0, seed=seed)
    report = find_contamination(s.training_set[:, 0], s.training_set[:, 1].astype(np.uint8))
    assert len(s.contaminated) == 6
    np.testing.assert_array_equal(report.removed, s.contaminated)
    assert report.kept == 144 and report.shared_mask_count == 1


def test_real_scale_contamination_is_found() -> None:
    s = generate(600, 0, seed=7)  # ~ the real share: 24 of 600 against a threshold of 6
    report = find_contamination(s.training_set[:, 0], s.training_set[:, 1])
    np.testing.assert_array_equal(report.removed, s.contaminated)
    assert len(report.removed) == 24


def test_clean_data_loses_nothing() -> None:
    data = synthetic_data(120, 0, seed=2, contamination=0.0)
    cleaned, report = remove_contamination(data)
    assert cleaned is data
    assert len(report.removed) == 0 and report.kept == 120 and report.shared_mask_count == 0
    assert report.summary().startswith("No contamination found in 120 training pairs")
    assert "no label mask is shared by more than 1 pair(s)" in report.summary()


def _labels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 5, (n, 64, 128), dtype=np.uint8)


@pytest.mark.parametrize(("n", "copies", "removed"), [(100, 2, 0), (100, 3, 3), (1000, 9, 0), (1000, 10, 10)])
def test_group_threshold_is_max_of_3_and_one_percent(n: int, copies: int, removed: int) -> None:
    labels = _labels(n)
    labels[1 : 1 + copies] = _labels(1, seed=99)[0]  # exactly `copies` identical masks
    report = find_contamination(np.zeros(labels.shape, np.float32), labels)
    assert len(report.removed) == removed
    assert group_threshold(n) == max(3, int(np.ceil(n / 100)))


def test_several_shared_masks_are_all_removed() -> None:
    labels = _labels(50)
    labels[[3, 9, 20]] = labels[3]
    labels[[5, 6, 40, 41]] = labels[40]
    report = find_contamination(np.zeros(labels.shape, np.float32), labels)
    assert report.removed.tolist() == [3, 5, 6, 9, 20, 40, 41]
    assert report.shared_mask_count == 2 and report.kept == 43
    assert "group size(s) 4, 3" in report.reason


def test_remove_returns_the_clean_pairs_and_a_report() -> None:
    data = synthetic_data(100, 5, seed=4)
    truth = generate(100, 5, seed=4).contaminated
    cleaned, report = remove_contamination(data)
    keep = np.setdiff1d(np.arange(100), truth)
    assert len(cleaned) == 96 and len(keep) == 96
    np.testing.assert_array_equal(cleaned.images, data.images[keep])
    np.testing.assert_array_equal(cleaned.labels, data.labels[keep])
    assert cleaned.test_images is data.test_images and cleaned.source == data.source
    assert cleaned.fingerprint != data.fingerprint
    assert remove_contamination(data)[0].fingerprint == cleaned.fingerprint
    # the histogram is the shared mask's own class share
    shared = data.labels[truth[0]]
    expected = np.bincount(shared.ravel(), minlength=5) / shared.size
    np.testing.assert_allclose(report.class_shares, expected)
    summary = report.summary()
    assert summary.startswith(
        "Removed 4 of 100 training pairs (4.0%): they all carry one identical label mask"
    )
    assert f"background {expected[0]:.0%}" in summary and "96 pairs kept" in summary
    assert "\n" not in summary


def test_mismatched_arrays_are_refused() -> None:
    with pytest.raises(DataError, match="do not match"):
        find_contamination(np.zeros((3, 64, 128)), np.zeros((4, 64, 128), np.uint8))


def test_a_filter_that_takes_most_pairs_is_refused_by_name() -> None:
    data = synthetic_data(40, 0, seed=3, contamination=0.0)
    labels = data.labels.copy()
    labels[:30] = labels[0]  # 30 of 40 masks identical: real tiles of one scene, say
    report = find_contamination(data.images, labels)
    with pytest.raises(
        DataError, match=r"d.npz: the contamination filter .* removed 30 of 40 pairs, leaving 10;"
    ):
        check_enough_left(report, "d.npz")
    check_enough_left(find_contamination(data.images, data.labels), "d.npz")  # nothing removed: fine
