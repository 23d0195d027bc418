"""Intersection over union per class, and its mean over the terrain classes as the challenge scores it.

Conventions shared by the numpy functions and the Keras metric:

- Counts are summed over every pixel given (all images, all batches) into one confusion matrix, then
  IoU_c = |truth == c and pred == c| / |truth == c or pred == c|. Per-image IoUs are never averaged.
- A class absent from both truth and prediction has no IoU: nan in per-class results, left out of the mean.
  A class predicted but absent from the truth (or the reverse) has IoU 0 and counts.
- The mean covers classes 1..num_classes-1: background (class 0) is ignored, as the challenge does.
- `mean_iou` returns nan when none of those classes appears in truth or prediction (there is nothing to
  score, and 0 or 1 would be a made-up number). `MeanIoU.result()` returns 0.0 in that case instead (as
  keras.metrics.IoU does), so a training log, an early-stopping callback or a pruner never receives nan
  from an empty metric.
"""

from __future__ import annotations

import numbers
from typing import Any

import keras
import numpy as np
from keras import ops

from marstune.data.layout import BACKGROUND, NUM_CLASSES


def _labels(values: Any, name: str, num_classes: int) -> np.ndarray:
    """An int64 label array; float labels (the challenge stores them as floats) must be whole numbers."""
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise ValueError(
                f"{name} must hold whole class labels 0..{num_classes - 1}, got non-integer or non-finite"
                " values"
            )
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{name} must be an array of class labels, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"{name} labels must be in 0..{num_classes - 1}, found {arr.min()}..{arr.max()}")
    return arr


def confusion_matrix(y_true_labels: Any, y_pred_labels: Any, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(num_classes, num_classes) int64 pixel counts: row = true class, column = predicted class.

    Both arguments are label arrays of one shape (a trailing channel of size 1 is dropped), e.g.
    (N, 64, 128); pass `probs.argmax(-1)`, not the probabilities.
    """
    if not (isinstance(num_classes, numbers.Integral) and num_classes >= 2):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    truth = _labels(y_true_labels, "y_true", num_classes)
    pred = _labels(y_pred_labels, "y_pred", num_classes)
    # A trailing channel of size 1 on one side only, e.g. labels (N, H, W, 1) against (N, H, W).
    if truth.ndim == pred.ndim + 1 and truth.shape[-1] == 1:
        truth = truth[..., 0]
    elif pred.ndim == truth.ndim + 1 and pred.shape[-1] == 1:
        pred = pred[..., 0]
    if truth.shape != pred.shape:
        raise ValueError(
            f"y_true and y_pred must be label arrays of one shape, got {truth.shape} and {pred.shape}; "
            "pass predicted labels (probabilities.argmax(-1)), not probabilities"
        )
    flat = truth.ravel() * num_classes + pred.ravel()
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(confusion: Any) -> np.ndarray:
    """Per-class IoU (float64) from a confusion matrix; nan where a class is in neither truth nor pred."""
    cm = np.asarray(confusion, dtype=np.float64)
    intersection = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / union, np.nan)


def mean_scored(per_class: Any) -> float:
    """Mean of per-class IoUs over classes 1.. (background ignored), skipping nan; nan if none is scored."""
    scored = np.asarray(per_class, dtype=np.float64)[BACKGROUND + 1 :]
    scored = scored[~np.isnan(scored)]
    return float(scored.mean()) if scored.size else float("nan")


def iou_per_class(y_true_labels: Any, y_pred_labels: Any, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """IoU of every class 0..num_classes-1 over all pixels given, shape (num_classes,); nan where absent."""
    return iou_from_confusion(confusion_matrix(y_true_labels, y_pred_labels, num_classes))


def mean_iou(y_true_labels: Any, y_pred_labels: Any, num_classes: int = NUM_CLASSES) -> float:
    """The challenge score: mean IoU over classes 1..num_classes-1 present in truth or prediction.

    nan when none of them is present (see the module docstring).
    """
    return mean_scored(iou_per_class(y_true_labels, y_pred_labels, num_classes))


@keras.saving.register_keras_serializable(package="tune")
class MeanIoU(keras.metrics.IoU):
    """Streaming mean IoU over classes 1..num_classes-1, logged as `miou` (`val_miou` on validation).

    This is `keras.metrics.IoU(num_classes, target_class_ids=[1, ..., num_classes - 1],
    sparse_y_pred=False)`: Keras keeps the confusion matrix (`total_cm`, row = true class) and computes
    the result, so it runs on any backend and inside XLA-compiled train steps. (`keras.metrics.MeanIoU(
    ignore_class=0)` is not the same score: it drops background *pixels*, so background predicted as
    soil no longer lowers soil's IoU.) What this class adds: the project's defaults and name, per-image
    sample weights, `per_class()`, and a float64 matrix so counts stay exact far beyond float32's 2**24
    and fractional sample weights are kept (Keras' default int64 would truncate them).

    update_state(y_true, y_pred, sample_weight=None): y_true holds integer labels (B, H, W) or
    (B, H, W, 1); y_pred holds class scores (B, H, W, num_classes), reduced with argmax. A pixel whose
    label is outside 0..num_classes-1 is not counted. sample_weight is per image (B,) or per pixel
    (B, H, W[, 1]).
    """

    def __init__(self, num_classes: int = NUM_CLASSES, name: str = "miou", dtype: Any = "float64") -> None:
        if not (isinstance(num_classes, numbers.Integral) and num_classes >= 2):
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        super().__init__(
            num_classes=int(num_classes),
            target_class_ids=list(range(BACKGROUND + 1, int(num_classes))),
            name=name,
            dtype=dtype,
            sparse_y_pred=False,
        )

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        if sample_weight is not None:
            # Keras flattens the weights and broadcasts them over the flat pixels, which fits per-pixel
            # weights only; a per-image weight (B,) is spread over its image's pixels first.
            weight = ops.convert_to_tensor(sample_weight, self.dtype)
            rank = len(y_pred.shape) - 1  # (B, H, W)
            if len(weight.shape) == rank + 1:
                weight = ops.squeeze(weight, -1)
            while len(weight.shape) < rank:
                weight = ops.expand_dims(weight, -1)
            sample_weight = ops.broadcast_to(weight, ops.shape(y_pred)[:-1])  # (B, H, W)
        super().update_state(y_true, y_pred, sample_weight)

    def per_class(self) -> np.ndarray:
        """The IoU of every class (num_classes,) as float64 numpy, nan where a class was never seen."""
        return iou_from_confusion(ops.convert_to_numpy(self.total_cm))

    def get_config(self) -> dict[str, Any]:
        # The target classes follow from num_classes; the saved config stays {name, dtype, num_classes}.
        return {**keras.metrics.Metric.get_config(self), "num_classes": self.num_classes}
