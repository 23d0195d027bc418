"""THE U-Net training recipe: optimizer, compile, data pipeline, fit. Trials, the final run and the
report all train through these functions, so a setting in the spec (`train.optimizer`, the learning
rate, the batch size, patience, augmentation) means the same thing everywhere.

Imported only where training happens: it loads Keras.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from marstune.tuning.config.spec import Spec
from marstune.tuning.constants import MODEL_KEYS
from marstune.tuning.errors import translate
from marstune.tuning.train.data import Prepared
from marstune.tuning.train.devices import DeviceSetup

if TYPE_CHECKING:
    import tensorflow as tf

    from marstune.models.metrics import MeanIoU


@dataclass(frozen=True)
class Recipe:
    """How one configuration is trained: the spec's training settings with the trial's overrides."""

    optimizer: str  # a keras.optimizers name the spec allows (adam, adamw, sgd, rmsprop)
    learning_rate: float
    batch_size: int
    epochs: int
    patience: int  # epochs without a better validation mIoU before stopping (0 = never)
    seed: int
    augment: bool
    jit_compile: bool
    loss: str  # a name of models/settings.LOSS_NAMES
    class_weight_exponent: float  # class weights = training frequency ** -exponent (losses that read them)
    focal_gamma: float

    @classmethod
    def of(cls, spec: Spec, config: Mapping[str, Any], setup: DeviceSetup) -> Recipe:
        """The spec's settings; `learning_rate` and `batch_size` may be searched (then in `config`)."""
        return cls(
            optimizer=spec.train.optimizer,
            learning_rate=float(config.get("learning_rate", spec.train.learning_rate)),
            batch_size=int(config.get("batch_size", spec.train.batch_size)),
            epochs=spec.train.epochs,
            patience=spec.train.patience,
            seed=spec.train.seed,
            augment=spec.train.augment,
            jit_compile=setup.jit_compile,
            loss=str(config.get("loss", spec.loss.name)),
            class_weight_exponent=float(config.get("class_weight_exponent", spec.loss.class_weight_exponent)),
            focal_gamma=float(config.get("focal_gamma", spec.loss.focal_gamma)),
        )


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """The one optimizer lookup: Keras' own registry of names."""
    return keras.optimizers.get({"class_name": name, "config": {"learning_rate": learning_rate}})


def fresh_graph(setup: DeviceSetup, seed: int) -> None:
    """Before building a model: no graph or state left from the previous one, a seeded start."""
    keras.backend.clear_session()  # no graph/state growth from one model to the next
    keras.mixed_precision.set_global_policy(setup.precision)  # clear_session reset it to float32
    gc.collect()
    keras.utils.set_random_seed(seed)


def class_weights_for(recipe: Recipe, data: Prepared) -> tuple[float, ...] | None:
    """The recipe's class weights from the training split's frequencies, for the losses that read them."""
    from marstune.models.class_weights import class_weights
    from marstune.models.settings import LOSS_PARAMETERS

    if "class_weights" not in LOSS_PARAMETERS.get(recipe.loss, ()):
        return None
    return class_weights(data.class_frequencies, recipe.class_weight_exponent)


def make_loss(recipe: Recipe, data: Prepared) -> keras.losses.Loss:
    """THE loss of a run: trials, the final run (Pix2Pix's segmentation term and the plain U-Net) and the
    report all train with this."""
    from marstune.models.losses import build_loss

    try:
        weights = class_weights_for(recipe, data)
        return build_loss(recipe.loss, class_weights=weights, focal_gamma=recipe.focal_gamma)
    except Exception as exc:
        raise (translate(exc) or exc) from None


def compile_unet(config: Mapping[str, Any], recipe: Recipe, data: Prepared) -> tuple[keras.Model, MeanIoU]:
    """build_unet(config) compiled with the recipe's optimizer, its loss and the challenge's mIoU."""
    from marstune.models.metrics import MeanIoU
    from marstune.models.unet import build_unet

    try:
        model = build_unet({k: config[k] for k in MODEL_KEYS})
    except Exception as exc:
        raise (translate(exc) or exc) from None
    miou = MeanIoU()
    model.compile(
        optimizer=make_optimizer(recipe.optimizer, recipe.learning_rate),
        loss=make_loss(recipe, data),
        metrics=[miou],
        jit_compile=recipe.jit_compile,
    )
    return model, miou


def save_inference_model(config: Mapping[str, Any], weights: list[np.ndarray], path: Path) -> None:
    """The U-Net of `config` with these weights, uncompiled (no optimizer state: a third of the size, and
    no custom objects), saved as a .keras file that loads with safe_mode=True."""
    from marstune.models.unet import build_unet

    model = build_unet({k: config[k] for k in MODEL_KEYS})
    model.set_weights(weights)
    model.save(path)


def datasets(data: Prepared, recipe: Recipe) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The training pipeline (seeded shuffle, flips) and the validation one (in order)."""
    from marstune.data.augment import make_dataset

    batch = min(recipe.batch_size, max(1, len(data.x_train)))
    train = make_dataset(
        data.x_train, data.y_train, batch, training=True, seed=recipe.seed, augment=recipe.augment
    )
    val = make_dataset(data.x_val, data.y_val, batch, training=False, seed=recipe.seed)
    return train, val


def fit(
    model: keras.Model,
    data: Prepared,
    recipe: Recipe,
    callbacks: Sequence[keras.callbacks.Callback],
    *,
    initial_epoch: int = 0,
) -> keras.callbacks.History:
    """Train to recipe.epochs with validation every epoch; callbacks decide about stopping early."""
    train, val = datasets(data, recipe)
    return model.fit(
        train,
        validation_data=val,
        initial_epoch=initial_epoch,
        epochs=recipe.epochs,
        verbose=0,
        shuffle=False,  # the tf.data pipeline shuffles (seeded); fit cannot shuffle a Dataset
        callbacks=list(callbacks),
    )


def predict_labels(model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Class ids (N, 64, 128) uint8 for images (N, 64, 128) in 0..255."""
    probs = model.predict(np.asarray(images)[..., None] / np.float32(255.0), batch_size=batch_size, verbose=0)
    return np.argmax(probs, axis=-1).astype(np.uint8)
