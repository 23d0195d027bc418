"""Per-class loss weights from the training set's class frequencies, with a searchable exponent.

    w_c = s * f_c ** -exponent    for the scored classes 1..K-1 that occur in the training set

exponent 0 gives all ones (the unweighted loss), 0.5 the inverse square root of the frequency, 1 the
inverse frequency. The rules, and why:

- Background is ignored, as the challenge score ignores it: its weight is 1 and its frequency enters
  nothing, so how much sky the pictures show never changes a terrain class's weight.
- `s` makes the mean weight over the scored pixels 1 (sum_c f_c w_c = sum_c f_c over classes 1..K-1), so
  a weighted loss stays on the unweighted loss's scale and the learning rate means the same thing.
- No weight exceeds MAX_CLASS_WEIGHT. Capped classes sit at the cap and `s` is solved again for the
  others, so the mean stays 1 and the order of the weights is kept.
- A scored class absent from the training set gets 1 (neutral, as with exponent 0): f ** -exponent is
  infinite there, and the weight multiplies only that class's pixels, which training never sees; 1 keeps
  any validation loss over such pixels on the unweighted scale. It does not enter the normalisation.

Only ratios of frequencies matter: pixel counts and fractions give the same weights. numpy only, so
weights can be computed and shown without loading TensorFlow.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from marstune.data.layout import BACKGROUND
from marstune.models.unet import ModelConfigError

# The largest weight a class can get. Inverse frequency gives big rock (0.13% of the real pixels)
# 146x the mean scored pixel's weight: a few hundred pixels would carry a quarter of the loss, and since
# most images hold no big rock, the batch-to-batch swing of those pixels would dominate the gradient.
# 20 lets the inverse square root of the real frequencies through unchanged (big rock 13.8) and holds
# big rock at ~3% of the scored loss (20x its unweighted share) at any exponent.
MAX_CLASS_WEIGHT = 20.0


class LossConfigError(ModelConfigError):
    """A loss cannot be built (unknown name, bad weights or gamma); one line naming the value and fix."""


def _real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_class_weights(class_weights: Sequence[float] | None) -> tuple[float, ...] | None:
    """`class_weights` as a tuple of floats (None stays None: unweighted); LossConfigError unless each is
    a finite number > 0 and there are at least two."""
    if class_weights is None:
        return None
    weights = tuple(class_weights)
    if len(weights) < 2 or not all(_real(w) and w > 0 for w in weights):
        raise LossConfigError(
            f"class_weights must be one finite number > 0 per class (see class_weights()), got {weights!r}"
        )
    return tuple(float(w) for w in weights)


def class_weights(
    frequencies: Sequence[float] | np.ndarray, exponent: float, *, max_weight: float = MAX_CLASS_WEIGHT
) -> tuple[float, ...]:
    """One weight per class (see the module docstring), as plain floats a config or a database can hold.

    `frequencies`: per-class pixel shares or counts of the training split, background included, e.g.
    `marstune.data.frequencies.class_frequencies(train_labels)`. Raises LossConfigError on a negative or
    non-finite frequency, a negative exponent or a cap below 1 (the mean weight is 1, so the cap must be
    at least that).
    """
    freq = np.asarray(frequencies, dtype=np.float64)
    if freq.ndim != 1 or len(freq) <= BACKGROUND + 1:
        raise LossConfigError(
            f"class frequencies must be one number per class (background and at least one scored class), "
            f"got shape {freq.shape}"
        )
    if not (np.all(np.isfinite(freq)) and np.all(freq >= 0)):
        raise LossConfigError(f"class frequencies must be finite and >= 0, got {freq.tolist()}")
    if not (_real(exponent) and exponent >= 0):
        raise LossConfigError(
            "class weight exponent must be a number >= 0 (0 unweighted, 1 inverse frequency), "
            f"got {exponent!r}"
        )
    if not (_real(max_weight) and max_weight >= 1):
        raise LossConfigError(f"max_weight must be a number >= 1 (the mean weight is 1), got {max_weight!r}")

    weights = np.ones(len(freq))
    present = freq > 0
    present[BACKGROUND] = False
    if exponent == 0 or not present.any():
        return tuple(float(w) for w in weights)  # the unweighted loss, exactly
    weights[present] = _normalise_capped(freq[present], freq[present] ** -float(exponent), float(max_weight))
    return tuple(float(w) for w in weights)


def _normalise_capped(freq: np.ndarray, raw: np.ndarray, cap: float) -> np.ndarray:
    """min(s * raw, cap) with s such that sum(freq * w) == sum(freq): cap the k largest, solve s for the
    rest, for the smallest k that leaves every uncapped weight within the cap."""
    total = freq.sum()
    order = np.argsort(-raw, kind="stable")  # largest raw weight (rarest class) first
    for k in range(len(order)):
        capped, free = order[:k], order[k:]
        scale = (total - cap * freq[capped].sum()) / (freq[free] * raw[free]).sum()
        if scale * raw[free[0]] <= cap:
            weights = np.minimum(scale * raw, cap)
            weights[capped] = cap
            return weights
    # Unreachable for cap >= 1: the most frequent class alone can always take the remaining mass.
    raise AssertionError(f"no class weights within the cap {cap} for frequencies {freq.tolist()}")
