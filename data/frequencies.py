"""How often each class occurs in label masks: the input of the class-weighted losses.

Count the training split only (after `remove_contamination`): validation pixels must not shape the loss,
and the contaminated pairs' identical masks would inflate one class. Flips do not change the counts, so
the masks are counted before augmentation.
"""

from __future__ import annotations

import numpy as np

from marstune.data.layout import NUM_CLASSES
from marstune.data.mars import DataError

# Masks are counted this many at a time: np.bincount widens uint8 labels to int64, so counting the
# 2,615 real masks at once would allocate ~170 MB; 256 masks take ~17 MB.
CHUNK = 256


def class_frequencies(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """The share of pixels of each class 0..num_classes-1 over all masks, float64 (num_classes,), sum 1.

    `labels`: integer class ids, e.g. MarsData.labels (N, 64, 128) uint8. A class that never occurs has
    frequency exactly 0.0. Raises DataError on non-integer labels, values out of range or no pixels.
    """
    arr = np.asarray(labels)
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(
            f"class frequencies: labels are {arr.dtype}; expected integer class ids 0..{num_classes - 1} "
            "(MarsData.labels)"
        )
    if arr.size == 0:
        raise DataError(f"class frequencies: labels {arr.shape} hold no pixels; expected at least one mask")
    low, high = int(arr.min()), int(arr.max())
    if low < 0 or high >= num_classes:
        raise DataError(
            f"class frequencies: labels hold values {low}..{high}; expected class ids 0..{num_classes - 1}"
        )
    flat = arr.reshape(len(arr), -1) if arr.ndim > 1 else arr.reshape(1, -1)
    counts = np.zeros(num_classes, dtype=np.int64)
    for start in range(0, len(flat), CHUNK):
        counts += np.bincount(flat[start : start + CHUNK].ravel(), minlength=num_classes)
    return counts / counts.sum()
