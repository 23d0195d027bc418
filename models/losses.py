"""The segmentation losses the search chooses from, and `build_loss`, the one factory that makes them.

Every loss takes y_true integer class ids (B, H, W) or (B, H, W, 1) and y_pred softmax probabilities
(B, H, W, K), computes in float32 (float16 predictions under mixed precision are cast first) and returns
per-pixel values, which Keras averages over all pixels ("sum_over_batch_size", its default), so all are
on the seed's scale:

    name                   per pixel                                          class_weights   focal_gamma
    crossentropy           -log p_y (keras SparseCategoricalCrossentropy)     ignored         ignored
    weighted_crossentropy  w_y * -log p_y                                     used            ignored
    focal                  w_y * (1 - p_y)**gamma * -log p_y  (Lin et al.)    used (alpha)    used
    dice_crossentropy      w_y * -log p_y + soft Dice loss over classes 1..4  used (CE part)  ignored

- `crossentropy` is the seed's loss, computed by Keras' own function, so studies that use it stay
  comparable with every earlier trial; it takes no weights (a study's weight exponent has no effect on it,
  as focal_gamma has none on the other three: LOSS_PARAMETERS says which loss reads what).
- Weights are per class (models.class_weights): they scale each pixel by its true class. Not given (None)
  means all ones, so weighted_crossentropy is then crossentropy and focal with gamma 0 is crossentropy.
- focal is Keras' categorical_focal_crossentropy on one-hot labels with alpha = the class weights (Keras'
  default alpha 0.25 only rescales the loss, so it is not used).
- Dice is not weighted: it already gives each class an equal say whatever its size. It is Keras' `dice`
  over axis (batch, height, width), one value per class, averaged over classes 1..4. Keras' default
  axis=None would pool every class into one number (for one-hot labels that is 1 - the mean probability
  of the true class: accuracy-like, no class balance), so the axis is passed. Pooling over the batch, not
  per image, matches how the score counts pixels. A class absent from a batch adds a constant 1 (no
  gradient): Keras' dice has no smoothing term, so a batch without big rock does not push it down. The
  batch's Dice is added to every pixel's value, so Keras' mean over pixels gives CE + Dice.

Every loss is registered (`tune>...`) with get_config, so a model compiled with one saves to .keras and
loads with `keras.saving.load_model(path, safe_mode=True)`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import keras
from keras import ops

from marstune.data.layout import BACKGROUND
from marstune.models.class_weights import LossConfigError, check_class_weights
from marstune.models.settings import FOCAL_GAMMA, LOSS_NAMES, LOSS_PARAMETERS

__all__ = ["FOCAL_GAMMA", "LOSS_NAMES", "LOSS_PARAMETERS", "LossConfigError", "build_loss"]


def _check_gamma(gamma: float) -> float:
    is_real = isinstance(gamma, numbers.Real) and not isinstance(gamma, bool)
    if not (is_real and math.isfinite(gamma) and gamma >= 0):
        raise LossConfigError(f"focal_gamma must be a finite number >= 0 (0 is cross-entropy), got {gamma!r}")
    return float(gamma)


class _ClassWeightedLoss(keras.losses.Loss):
    """Common parts: the label/probability conventions and the per-class weights."""

    def __init__(
        self,
        class_weights: Sequence[float] | None = None,
        name: str | None = None,
        reduction: str = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.class_weights = check_class_weights(class_weights)

    def _inputs(self, y_true: Any, y_pred: Any) -> tuple[Any, Any]:
        """(labels (B, H, W) int32, probabilities (B, H, W, K) float32); checks the weights' length."""
        probs = ops.convert_to_tensor(y_pred, "float32")  # the same tensor when it is float32 already
        labels = ops.cast(y_true, "int32")
        if len(labels.shape) == len(probs.shape):
            labels = ops.squeeze(labels, -1)  # (B, H, W, 1) -> (B, H, W)
        num_classes, weights = probs.shape[-1], self.class_weights
        if weights is not None and num_classes is not None and num_classes != len(weights):
            raise LossConfigError(
                f"{self.name}: {len(self.class_weights)} class weights for {num_classes} predicted classes"
            )
        return labels, probs

    def _pixel_weights(self, labels: Any) -> Any:
        """w_y per pixel (B, H, W), or None when unweighted."""
        if self.class_weights is None:
            return None
        return ops.take(ops.convert_to_tensor(self.class_weights, "float32"), labels)

    def _crossentropy(self, labels: Any, probs: Any) -> Any:
        """(w_y *) -log p_y per pixel (B, H, W), by Keras' sparse cross-entropy (which reads the softmax's
        logits when it can, as the seed's string loss does)."""
        ce = keras.losses.sparse_categorical_crossentropy(labels, probs)  # (B, H, W)
        weights = self._pixel_weights(labels)
        return ce if weights is None else ce * weights

    def get_config(self) -> dict[str, Any]:
        weights = None if self.class_weights is None else list(self.class_weights)
        return {**super().get_config(), "class_weights": weights}


@keras.saving.register_keras_serializable(package="tune")
class CrossEntropy(_ClassWeightedLoss):
    """Sparse categorical cross-entropy, weighted per class when weights are given (weighted_crossentropy)."""

    def __init__(
        self, class_weights: Sequence[float] | None = None, name: str = "crossentropy", **kw: Any
    ) -> None:
        super().__init__(class_weights, name=name, **kw)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return self._crossentropy(*self._inputs(y_true, y_pred))  # (B, H, W)


@keras.saving.register_keras_serializable(package="tune")
class FocalCrossEntropy(_ClassWeightedLoss):
    """Keras' categorical focal cross-entropy on one-hot labels; alpha = the class weights (1 if None)."""

    def __init__(
        self,
        class_weights: Sequence[float] | None = None,
        gamma: float = FOCAL_GAMMA,
        name: str = "focal",
        **kw: Any,
    ) -> None:
        super().__init__(class_weights, name=name, **kw)
        self.gamma = _check_gamma(gamma)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        labels, probs = self._inputs(y_true, y_pred)
        onehot = ops.one_hot(labels, probs.shape[-1], dtype="float32")  # (B, H, W, K)
        alpha = 1.0 if self.class_weights is None else list(self.class_weights)
        return keras.losses.categorical_focal_crossentropy(onehot, probs, alpha=alpha, gamma=self.gamma)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="tune")
class DiceCrossEntropy(_ClassWeightedLoss):
    """(Weighted) cross-entropy plus the soft Dice loss of the scored classes, pooled over the batch."""

    def __init__(
        self, class_weights: Sequence[float] | None = None, name: str = "dice_crossentropy", **kw: Any
    ) -> None:
        super().__init__(class_weights, name=name, **kw)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        labels, probs = self._inputs(y_true, y_pred)
        onehot = ops.one_hot(labels, probs.shape[-1], dtype="float32")  # (B, H, W, K)
        scored = slice(BACKGROUND + 1, None)
        per_class = keras.losses.dice(onehot[..., scored], probs[..., scored], axis=(0, 1, 2))  # (K-1,)
        return self._crossentropy(labels, probs) + ops.mean(per_class)  # (B, H, W)


LossFactory = Callable[[tuple[float, ...] | None, float], keras.losses.Loss]

# name -> factory(class_weights, focal_gamma); each reads only what LOSS_PARAMETERS lists for it.
LOSSES: dict[str, LossFactory] = {
    "crossentropy": lambda weights, gamma: CrossEntropy(None, name="crossentropy"),
    "weighted_crossentropy": lambda weights, gamma: CrossEntropy(weights, name="weighted_crossentropy"),
    "focal": lambda weights, gamma: FocalCrossEntropy(weights, gamma, name="focal"),
    "dice_crossentropy": lambda weights, gamma: DiceCrossEntropy(weights, name="dice_crossentropy"),
}
assert tuple(LOSSES) == LOSS_NAMES, "models/settings.py names every loss, in this order"


def build_loss(
    name: str, *, class_weights: Sequence[float] | None = None, focal_gamma: float = FOCAL_GAMMA
) -> keras.losses.Loss:
    """The loss `name` (one of LOSS_NAMES) from plain values; see the module docstring for what each reads.

    Both arguments are checked whether or not the loss reads them, so a bad value fails the same way for
    every loss. Raises LossConfigError (a ModelConfigError) naming the valid names or the bad value.
    """
    factory = LOSSES.get(name) if isinstance(name, str) else None
    if factory is None:
        raise LossConfigError(f"`loss` must be one of {', '.join(LOSS_NAMES)}, got {name!r}")
    weights = check_class_weights(class_weights)
    gamma = _check_gamma(focal_gamma)
    return factory(weights, gamma)
