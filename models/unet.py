"""The seed report's U-Net family for 64x128 Mars terrain segmentation.

`build_unet(config)` reads exactly five hyperparameters from a plain dict (`base_filters`, `levels`,
`kernel`, `dropout`, `activation`); any other key (learning rate, batch size, ...) belongs to the caller
and is ignored. The seed's best configuration

    {"base_filters": 16, "levels": 4, "kernel": 3, "dropout": 0.2, "activation": "relu"}

gives encoder filters 16/32/64/128, a 256-filter bottleneck and 1,940,885 parameters.

Keras is imported inside `build_unet` only, so validating a configuration (and raising or catching
`ModelConfigError`) never loads TensorFlow.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from marstune.data.layout import IMAGE_SHAPE, NUM_CLASSES

if TYPE_CHECKING:
    import keras

CONFIG_KEYS = ("base_filters", "levels", "kernel", "dropout", "activation")
ACTIVATIONS = ("relu", "elu", "gelu", "swish")
INPUT_SHAPE = (*IMAGE_SHAPE, 1)  # (H, W, channels): grayscale
# The deepest feature map must keep at least this many pixels (height, width): below 2x4 the bottleneck
# sees too little context to be worth its parameters, and odd sizes would break the skip concatenation.
MIN_BOTTLENECK = (2, 4)


class ModelConfigError(ValueError):
    """A U-Net configuration cannot be built; the message is one line naming the key, value and fix."""


@dataclass(frozen=True)
class UNetConfig:
    """A validated U-Net configuration (what `build_unet` actually uses)."""

    base_filters: int
    levels: int
    kernel: int
    dropout: float
    activation: str

    @property
    def encoder_filters(self) -> tuple[int, ...]:
        """Filters of each encoder level, top to bottom: base_filters * 2**i."""
        return tuple(self.base_filters * 2**i for i in range(self.levels))

    @property
    def bottleneck_filters(self) -> int:
        return 2 * self.encoder_filters[-1]


def max_levels(input_shape: Sequence[int]) -> int:
    """The most pooling levels an (H, W, ...) input allows: H and W divisible by 2**levels and the
    bottleneck at least MIN_BOTTLENECK pixels."""
    height, width = int(input_shape[0]), int(input_shape[1])
    levels = 0
    while True:
        step = 2 ** (levels + 1)
        fits = height % step == 0 and width % step == 0
        if not (fits and height // step >= MIN_BOTTLENECK[0] and width // step >= MIN_BOTTLENECK[1]):
            return levels
        levels += 1


MAX_LEVELS = max_levels(INPUT_SHAPE)  # 5 for 64x128: the bottleneck is then 2x4


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _found(value: Any) -> str:
    """How a wrong value is shown in a message: integers as they are, anything else with its type."""
    if _is_int(value):
        return str(int(value))
    return f"{value!r} ({type(value).__name__})"


def _check_shape(input_shape: Any, num_classes: Any) -> tuple[int, int, int]:
    ok = (
        isinstance(input_shape, Sequence)
        and len(input_shape) == 3
        and all(_is_int(v) and v > 0 for v in input_shape)
    )
    if not ok:
        raise ModelConfigError(
            f"`input_shape` must be (height, width, channels) with positive integers, got {input_shape!r}"
        )
    height, width, channels = (int(v) for v in input_shape)
    if max_levels(input_shape) < 1:
        raise ModelConfigError(
            f"`input_shape` {height}x{width} fits no U-Net level: height and width must be even "
            f"and at least {2 * MIN_BOTTLENECK[0]}x{2 * MIN_BOTTLENECK[1]}"
        )
    if not (_is_int(num_classes) and num_classes >= 2):
        raise ModelConfigError(f"`num_classes` must be an integer >= 2, got {_found(num_classes)}")
    return height, width, channels


def validate_config(
    config: Mapping[str, Any], input_shape: Sequence[int] = INPUT_SHAPE, num_classes: int = NUM_CLASSES
) -> UNetConfig:
    """Check a hyperparameter dict against the U-Net family; raise ModelConfigError on the first fault."""
    height, width, _ = _check_shape(input_shape, num_classes)
    if not isinstance(config, Mapping):
        raise ModelConfigError(
            f"U-Net config must be a mapping with keys {', '.join(CONFIG_KEYS)}, got {type(config).__name__}"
        )
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        raise ModelConfigError(
            f"U-Net config is missing {', '.join(f'`{k}`' for k in missing)}; "
            f"required keys: {', '.join(CONFIG_KEYS)}"
        )

    base_filters = config["base_filters"]
    if not (_is_int(base_filters) and base_filters >= 1):
        raise ModelConfigError(
            f"`base_filters` must be an integer >= 1 (e.g. 8, 16, 32), got {_found(base_filters)}"
        )

    levels = config["levels"]
    top = max_levels(input_shape)
    if not _is_int(levels):
        raise ModelConfigError(
            f"`levels` must be an integer between 1 and {top} for {height}x{width} inputs, "
            f"got {_found(levels)}"
        )
    if not 1 <= levels <= top:
        raise ModelConfigError(
            f"`levels` must be between 1 and {top} for {height}x{width} inputs, got {int(levels)}"
        )

    kernel = config["kernel"]
    if not (_is_int(kernel) and kernel >= 1 and kernel % 2 == 1):
        raise ModelConfigError(f"`kernel` must be an odd integer >= 1 (e.g. 3 or 5), got {_found(kernel)}")

    dropout = config["dropout"]
    is_real = isinstance(dropout, numbers.Real) and not isinstance(dropout, bool)
    if not (is_real and math.isfinite(dropout) and 0.0 <= dropout < 1.0):
        shown = repr(float(dropout)) if is_real else _found(dropout)
        raise ModelConfigError(f"`dropout` must be a number with 0 <= dropout < 1, got {shown}")

    activation = config["activation"]
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ModelConfigError(
            f"`activation` must be one of {', '.join(ACTIVATIONS)}, got {_found(activation)}"
        )

    return UNetConfig(
        base_filters=int(base_filters),
        levels=int(levels),
        kernel=int(kernel),
        dropout=float(dropout),
        activation=activation,
    )


def build_unet(
    config: Mapping[str, Any], input_shape: Sequence[int] = INPUT_SHAPE, num_classes: int = NUM_CLASSES
) -> keras.Model:
    """Build the U-Net for `config`: (B, H, W, C) images -> (B, H, W, num_classes) softmax probabilities.

    Each level (encoder, bottleneck, decoder) is two same-padded kernel x kernel convolutions with the
    configured activation and He-normal init, followed by Dropout (rate 0.0 is a no-op). Encoder levels
    pool 2x2; decoder levels up-sample with a 2x2 stride-2 transposed convolution to the level's filters
    and concatenate the encoder's skip. The 1x1 softmax head computes in float32 so probabilities and
    losses stay float32 under a mixed-precision policy.
    """
    cfg = validate_config(config, input_shape, num_classes)

    import keras
    from keras import layers

    def conv_block(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
        for j in (1, 2):
            x = layers.Conv2D(
                filters,
                cfg.kernel,
                padding="same",
                activation=cfg.activation,
                kernel_initializer="he_normal",
                name=f"{name}_conv{j}",
            )(x)  # (B, h, w, filters)
        return layers.Dropout(cfg.dropout, name=f"{name}_dropout")(x)  # (B, h, w, filters)

    # Shapes below: level i works at (H / 2**i, W / 2**i) with f_i = base_filters * 2**i filters;
    # for the seed's best on 64x128: 64x128x16, 32x64x32, 16x32x64, 8x16x128, bottleneck 4x8x256.
    inputs = keras.Input(shape=tuple(input_shape), name="image")  # (B, H, W, C)
    x = inputs
    skips = []
    for i, filters in enumerate(cfg.encoder_filters):
        x = conv_block(x, filters, f"enc{i}")  # (B, H/2**i, W/2**i, f_i)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{i}_pool")(x)  # (B, H/2**(i+1), W/2**(i+1), f_i)

    x = conv_block(x, cfg.bottleneck_filters, "bottleneck")  # (B, H/2**L, W/2**L, 2 f_(L-1))

    for i in reversed(range(cfg.levels)):
        filters = cfg.encoder_filters[i]
        x = layers.Conv2DTranspose(
            filters, 2, strides=2, padding="same", kernel_initializer="he_normal", name=f"dec{i}_up"
        )(x)  # (B, H/2**i, W/2**i, f_i)
        x = layers.Concatenate(name=f"dec{i}_concat")([x, skips[i]])  # (B, H/2**i, W/2**i, 2 f_i)
        x = conv_block(x, filters, f"dec{i}")  # (B, H/2**i, W/2**i, f_i)

    # Glorot (the default) for the head: it feeds a softmax, not a rectifier.
    head = layers.Conv2D(num_classes, 1, activation="softmax", dtype="float32", name="probs")
    outputs = head(x)  # (B, H, W, num_classes) float32
    return keras.Model(inputs, outputs, name="unet")
