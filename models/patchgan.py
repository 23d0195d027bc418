"""A conditional PatchGAN discriminator for (image, class mask) pairs of 64x128 Mars terrain.

pix2pix's PatchGAN judges overlapping patches rather than the whole picture: for 256x256 inputs it
down-samples three times (to 32x32) and each of its 30x30 outputs sees a 70x70 patch. A 64x128 picture
is a quarter of that height, so two stride-2 down-samplings are enough: every one of the 16x32 outputs
then sees a 34x34 patch, about half the image height, which covers a rock and the terrain around it
without judging the whole scene at once (a third down-sampling would see 70x70: more than the picture).

The mask enters as one channel per class: the real pair carries the one-hot ground truth, the fake pair
the generator's softmax, so the discriminator learns what plausible label maps look like for an image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from marstune.data.layout import NUM_CLASSES
from marstune.models.unet import INPUT_SHAPE

if TYPE_CHECKING:
    import keras

# Filters per stride-2 block; the stride-1 block after them doubles the last. pix2pix uses 64/128/256/512
# for 256x256; half of that is plenty for 64x128 grey images and keeps a CPU epoch short.
DEFAULT_FILTERS = (32, 64)


def receptive_field(n_down: int, kernel: int = 4) -> int:
    """Pixels (per side) one output of the discriminator sees: n_down stride-2 convs, then two stride-1."""
    field = 1
    for stride in (1, 1, *([2] * n_down)):  # walk from the output back to the input
        field = field * stride + (kernel - stride)
    return field


def build_patchgan(
    input_shape: Sequence[int] = INPUT_SHAPE,
    num_classes: int = NUM_CLASSES,
    filters: Sequence[int] = DEFAULT_FILTERS,
) -> keras.Model:
    """(image (B, H, W, C), mask (B, H, W, num_classes)) -> patch logits (B, H/2**n, W/2**n, 1), float32.

    n = len(filters) stride-2 4x4 convolutions (LeakyReLU 0.2, batch norm after the first, as pix2pix),
    one stride-1 4x4 convolution with twice the last filters, and a 4x4 convolution to one logit per
    patch. The logits are for `from_logits=True` binary cross-entropy: 1 = real pair, 0 = generated.
    """
    import keras
    from keras import layers

    height, width, channels = (int(v) for v in input_shape)
    if not filters or height % 2 ** len(filters) or width % 2 ** len(filters):
        raise ValueError(
            f"PatchGAN: {height}x{width} inputs need height and width divisible by 2**{len(filters)} "
            f"(one halving per entry of filters={tuple(filters)}); pass fewer filters"
        )
    init = keras.initializers.RandomNormal(0.0, 0.02)  # pix2pix's initialisation

    image = keras.Input(shape=(height, width, channels), name="image")  # (B, 64, 128, 1)
    mask = keras.Input(shape=(height, width, num_classes), name="mask")  # (B, 64, 128, 5)
    x = layers.Concatenate(name="pair")([image, mask])  # (B, 64, 128, 1 + 5)
    for i, f in enumerate(filters):
        # Shapes for the defaults: block 0 -> (B, 32, 64, 32), block 1 -> (B, 16, 32, 64).
        x = layers.Conv2D(
            f, 4, strides=2, padding="same", use_bias=i == 0, kernel_initializer=init, name=f"down{i}_conv"
        )(x)  # (B, H/2**(i+1), W/2**(i+1), f)
        if i > 0:  # no normalisation on the first block: it would wash out the raw pair statistics
            x = layers.BatchNormalization(name=f"down{i}_norm")(x)  # (B, H/2**(i+1), W/2**(i+1), f)
        x = layers.LeakyReLU(0.2, name=f"down{i}_act")(x)  # (B, H/2**(i+1), W/2**(i+1), f)
    x = layers.Conv2D(
        2 * filters[-1], 4, padding="same", use_bias=False, kernel_initializer=init, name="patch_conv"
    )(x)  # (B, 16, 32, 128)
    x = layers.BatchNormalization(name="patch_norm")(x)  # (B, 16, 32, 128)
    x = layers.LeakyReLU(0.2, name="patch_act")(x)  # (B, 16, 32, 128)
    # float32 logits so the loss stays float32 under a mixed-precision policy.
    logits = layers.Conv2D(1, 4, padding="same", kernel_initializer=init, dtype="float32", name="logits")(
        x
    )  # (B, 16, 32, 1)
    return keras.Model([image, mask], logits, name="patchgan")
