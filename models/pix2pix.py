"""Pix2Pix for segmentation: the tuned U-Net as generator, a conditional PatchGAN as discriminator.

The generator maps an image to per-pixel class probabilities; the discriminator sees (image, mask) pairs
and tells the ground-truth one-hot mask from the generator's softmax patch by patch. The generator is
trained on both objectives:

    g_loss = adv_loss + seg_weight * seg_loss
    adv_loss = BCE(1, D(image, G(image)))           # fool the discriminator
    seg_loss = categorical cross-entropy(y, G(image))  # match the labels (or any loss of models.losses)
    d_loss = BCE(1, D(image, y)) + BCE(0, D(image, G(image)))

`seg_loss` takes the same loss object as the search's U-Net (`build_loss(...)`, passed to build_pix2pix,
Pix2Pix or compile), so the final run and the trials share one loss definition; None (the default) keeps
the categorical cross-entropy above.

`Pix2Pix` is a `keras.Model` with its own `train_step`/`test_step`, so `fit()`, `evaluate()` and every
callback work unchanged; it logs d_loss, g_loss, seg_loss, adv_loss and miou (val_* on validation).
Only the generator is shipped (`model.generator.save(...)`): a plain functional U-Net that loads with
`keras.saving.load_model(path, safe_mode=True)` and no custom objects. Training uses TensorFlow's
GradientTape (the project's backend); nothing here imports tuning/ or data/.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from marstune.models.metrics import MeanIoU
from marstune.models.patchgan import DEFAULT_FILTERS, build_patchgan
from marstune.models.settings import BETA_1, LEARNING_RATE, SEG_WEIGHT
from marstune.models.unet import INPUT_SHAPE, NUM_CLASSES, build_unet


def default_optimizer() -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(learning_rate=LEARNING_RATE, beta_1=BETA_1)


def _with_loss_scale(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """Mixed float16 gradients need loss scaling; Keras adds it in compile(), only to `model.optimizer`."""
    mixed = keras.config.dtype_policy().name == "mixed_float16"
    if mixed and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def build_pix2pix(
    config: Mapping[str, Any],
    input_shape: Sequence[int] = INPUT_SHAPE,
    num_classes: int = NUM_CLASSES,
    disc_filters: Sequence[int] = DEFAULT_FILTERS,
    seg_weight: float = SEG_WEIGHT,
    seg_loss: keras.losses.Loss | None = None,
) -> Pix2Pix:
    """The generator `build_unet(config)` (the search's builder) and a PatchGAN sized for `input_shape`;
    `seg_loss` a loss of `models.losses` (None: categorical cross-entropy)."""
    generator = build_unet(config, input_shape, num_classes)  # (B, 64, 128, 1) -> (B, 64, 128, 5)
    discriminator = build_patchgan(input_shape, num_classes, disc_filters)  # -> (B, 16, 32, 1) logits
    return Pix2Pix(generator, discriminator, seg_weight=seg_weight, seg_loss=seg_loss, name="pix2pix")


class Pix2Pix(keras.Model):
    """Adversarial training of a segmentation generator; batches are (x (B,H,W,C), y int labels (B,H,W))."""

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        seg_weight: float = SEG_WEIGHT,
        seg_loss: keras.losses.Loss | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.seg_weight = float(seg_weight)
        self.seg_loss = seg_loss
        self.num_classes = int(generator.output_shape[-1])
        self._bce = keras.losses.BinaryCrossentropy(from_logits=True)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.seg_loss_tracker = keras.metrics.Mean(name="seg_loss")
        self.adv_loss_tracker = keras.metrics.Mean(name="adv_loss")
        self.miou = MeanIoU(self.num_classes)
        self.g_optimizer: keras.optimizers.Optimizer | None = None
        self.d_optimizer: keras.optimizers.Optimizer | None = None
        self.built = True  # both sub-models are functional and already built

    def compile(
        self,
        g_optimizer: keras.optimizers.Optimizer | None = None,
        d_optimizer: keras.optimizers.Optimizer | None = None,
        seg_weight: float | None = None,
        seg_loss: keras.losses.Loss | None = None,
        **kwargs: Any,
    ) -> None:
        """Two optimizers (Adam 2e-4, beta1 0.5 by default); other kwargs (jit_compile, ...) go to Keras.
        `seg_weight` and `seg_loss`, when given, replace the constructor's.

        `model.optimizer` is the generator's, so callbacks that read or schedule it (iterations, learning
        rate) act on the generator. Both are built here, each on its own player's variables: Keras would
        otherwise build `model.optimizer` on every trainable variable, the discriminator's included, and a
        resumed run needs the slots to exist before it loads saved optimizer state into them.
        """
        self.g_optimizer = _with_loss_scale(g_optimizer or default_optimizer())
        self.d_optimizer = _with_loss_scale(d_optimizer or default_optimizer())
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)
        super().compile(optimizer=self.g_optimizer, **kwargs)
        if seg_weight is not None:
            self.seg_weight = float(seg_weight)
        if seg_loss is not None:
            self.seg_loss = seg_loss

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        # Listed here so Keras resets them at the start of each epoch and of each evaluation.
        return [
            self.d_loss_tracker,
            self.g_loss_tracker,
            self.seg_loss_tracker,
            self.adv_loss_tracker,
            self.miou,
        ]

    def call(self, inputs: Any, training: bool = False) -> Any:
        return self.generator(inputs, training=training)  # (B, H, W, num_classes) probabilities

    def discriminator_loss(self, real_logits: Any, fake_logits: Any) -> tuple[Any, Any, Any]:
        """(total, real part, fake part): real pairs should score 1, generated pairs 0."""
        real = self._bce(ops.ones_like(real_logits), real_logits)
        fake = self._bce(ops.zeros_like(fake_logits), fake_logits)
        return real + fake, real, fake

    def generator_loss(self, fake_logits: Any, y_onehot: Any, probs: Any) -> tuple[Any, Any, Any]:
        """(total, adversarial, segmentation): total = adversarial + seg_weight * segmentation."""
        adversarial = self._bce(ops.ones_like(fake_logits), fake_logits)
        if self.seg_loss is None:
            segmentation = ops.mean(keras.losses.categorical_crossentropy(y_onehot, probs))
        else:  # the losses of models.losses take class ids; argmax of a one-hot mask gives them back
            segmentation = self.seg_loss(ops.argmax(y_onehot, axis=-1), probs)
        return adversarial + self.seg_weight * segmentation, adversarial, segmentation

    def _forward(self, x: Any, y: Any, training: bool) -> tuple[Any, ...]:
        y_onehot = ops.one_hot(ops.cast(y, "int32"), self.num_classes)  # (B, H, W, K) float32
        probs = self.generator(x, training=training)  # (B, H, W, K)
        real_logits = self.discriminator([x, y_onehot], training=training)  # (B, H/4, W/4, 1)
        fake_logits = self.discriminator([x, probs], training=training)  # (B, H/4, W/4, 1)
        d_total, _, _ = self.discriminator_loss(real_logits, fake_logits)
        g_total, adversarial, segmentation = self.generator_loss(fake_logits, y_onehot, probs)
        return probs, d_total, g_total, adversarial, segmentation

    def _log(self, y: Any, probs: Any, d: Any, g: Any, adv: Any, seg: Any) -> dict[str, Any]:
        for tracker, value in (
            (self.d_loss_tracker, d),
            (self.g_loss_tracker, g),
            (self.adv_loss_tracker, adv),
            (self.seg_loss_tracker, seg),
        ):
            tracker.update_state(value)
        self.miou.update_state(y, probs)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y = data[0], data[1]
        # One forward pass serves both players; each tape differentiates its own loss.
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            probs, d_total, g_total, adversarial, segmentation = self._forward(x, y, training=True)
            g_scaled = self.g_optimizer.scale_loss(g_total)
            d_scaled = self.d_optimizer.scale_loss(d_total)
        g_vars = self.generator.trainable_variables
        d_vars = self.discriminator.trainable_variables
        self.g_optimizer.apply(g_tape.gradient(g_scaled, g_vars), g_vars)
        self.d_optimizer.apply(d_tape.gradient(d_scaled, d_vars), d_vars)
        return self._log(y, probs, d_total, g_total, adversarial, segmentation)

    def test_step(self, data: Any) -> dict[str, Any]:
        x, y = data[0], data[1]
        probs, d_total, g_total, adversarial, segmentation = self._forward(x, y, training=False)
        return self._log(y, probs, d_total, g_total, adversarial, segmentation)

    def predict_step(self, data: Any) -> Any:
        x = data[0] if isinstance(data, tuple | list) else data
        return self.generator(x, training=False)
