"""Pix2Pix: the PatchGAN's shapes, the loss parts, one real epoch of fit(), and the shipped generator."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest

from marstune.data.augment import make_dataset
from marstune.data.synthetic import synthetic_data
from marstune.models.class_weights import class_weights
from marstune.models.losses import build_loss
from marstune.models.metrics import MeanIoU
from marstune.models.patchgan import build_patchgan, receptive_field
from marstune.models.pix2pix import SEG_WEIGHT, Pix2Pix, build_pix2pix

TINY = {"base_filters": 8, "levels": 2, "kernel": 3, "dropout": 0.0, "activation": "relu"}
LOSSES = ("d_loss", "g_loss", "seg_loss", "adv_loss")


@pytest.fixture(scope="module")
def tiny_data() -> tuple[np.ndarray, np.ndarray]:
    data = synthetic_data(n_train=20, n_test=0, seed=3)
    return data.images, data.labels


def test_patchgan_is_sized_for_64x128() -> None:
    disc = build_patchgan()
    assert disc.output_shape == (None, 16, 32, 1)  # two halvings, not pix2pix's three
    assert [tuple(i.shape) for i in disc.inputs] == [(None, 64, 128, 1), (None, 64, 128, 5)]
    assert receptive_field(2) == 34  # each patch sees about half the image height
    assert receptive_field(3) == 70  # pix2pix's 70x70 PatchGAN, as a check of the formula
    with pytest.raises(ValueError, match="divisible by 2\\*\\*7"):
        build_patchgan(filters=(8,) * 7)


def test_loss_functions_return_their_parts() -> None:
    model = build_pix2pix(TINY)
    confident = keras.ops.full((2, 16, 32, 1), 20.0)
    total, real, fake = model.discriminator_loss(confident, -confident)
    assert float(total) == pytest.approx(float(real) + float(fake)) and float(total) < 1e-6
    total, real, fake = model.discriminator_loss(-confident, confident)  # fooled both ways
    assert float(real) == pytest.approx(20.0, rel=1e-3) and float(fake) == pytest.approx(20.0, rel=1e-3)

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (2, 64, 128))
    onehot = np.eye(5, dtype="float32")[labels]
    probs = rng.dirichlet(np.ones(5), (2, 64, 128)).astype("float32")
    logits = keras.ops.zeros((2, 16, 32, 1))
    total, adversarial, segmentation = model.generator_loss(logits, onehot, probs)
    expected_seg = -np.mean(np.log(np.take_along_axis(probs, labels[..., None], -1)))
    assert float(segmentation) == pytest.approx(expected_seg, rel=1e-4)
    assert float(adversarial) == pytest.approx(math.log(2), rel=1e-4)  # BCE(1, sigmoid(0))
    assert float(total) == pytest.approx(float(adversarial) + SEG_WEIGHT * expected_seg, rel=1e-4)


def test_one_epoch_trains_both_players_and_ships_a_safe_generator(tiny_data, tmp_path: Path) -> None:
    images, labels = tiny_data
    keras.utils.set_random_seed(0)
    train = make_dataset(images[:16], labels[:16], 8, training=True, seed=0)
    val = make_dataset(images[16:], labels[16:], 4, training=False, seed=0)
    model = build_pix2pix(TINY)
    model.compile(jit_compile=False)
    assert model.optimizer is model.g_optimizer  # callbacks that read model.optimizer see the generator's
    assert model.g_optimizer.get_config()["beta_1"] == 0.5
    assert model.g_optimizer.get_config()["learning_rate"] == pytest.approx(2e-4)
    g_before = [w.numpy().copy() for w in model.generator.trainable_weights]
    d_before = [w.numpy().copy() for w in model.discriminator.trainable_weights]

    history = model.fit(train, validation_data=val, epochs=1, verbose=0, shuffle=False).history
    for key in (*LOSSES, "miou"):
        for logged in (key, f"val_{key}"):
            assert len(history[logged]) == 1 and math.isfinite(history[logged][0]), logged
    assert history["g_loss"][0] == pytest.approx(
        history["adv_loss"][0] + SEG_WEIGHT * history["seg_loss"][0], rel=1e-3
    )
    assert 0.0 <= history["val_miou"][0] <= 1.0
    assert int(model.g_optimizer.iterations) == 2 and int(model.d_optimizer.iterations) == 2
    # Each optimizer owns its player's slots only (Keras would otherwise build on every variable).
    assert len(model.g_optimizer.variables) == 2 + 2 * len(model.generator.trainable_variables)
    assert any(
        not np.array_equal(a, w.numpy())
        for a, w in zip(g_before, model.generator.trainable_weights, strict=True)
    )
    assert any(
        not np.array_equal(a, w.numpy())
        for a, w in zip(d_before, model.discriminator.trainable_weights, strict=True)
    )

    path = tmp_path / "generator.keras"
    model.generator.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = images[16:, ..., None] / np.float32(255)
    probs = loaded.predict(x, verbose=0)
    assert probs.shape == (4, 64, 128, 5)
    np.testing.assert_allclose(probs, model.generator.predict(x, verbose=0), atol=1e-5)
    predicted = probs.argmax(-1)
    assert predicted.shape == (4, 64, 128) and predicted.min() >= 0 and predicted.max() <= 4
    # evaluate() goes through test_step: same metrics, no training.
    weights = [w.numpy().copy() for w in model.generator.weights]
    scores = model.evaluate(val, verbose=0, return_dict=True)
    assert set(scores) >= {*LOSSES, "miou"}
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(weights, model.generator.weights, strict=True))


def test_mixed_precision_uses_loss_scaling(tiny_data) -> None:
    images, labels = tiny_data
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_pix2pix(TINY)
        model.compile(jit_compile=False)
        assert isinstance(model.g_optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(model.d_optimizer, keras.optimizers.LossScaleOptimizer)
        logs = model.train_on_batch(images[:2, ..., None] / np.float32(255), labels[:2], return_dict=True)
        assert all(math.isfinite(float(logs[k])) for k in LOSSES)
        assert model.generator.output.dtype == "float32"  # softmax head stays float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_pix2pix_metric_is_the_shared_mean_iou() -> None:
    model = Pix2Pix(build_pix2pix(TINY).generator, build_patchgan())
    assert isinstance(model.miou, MeanIoU) and model.miou.name == "miou"
    assert [m.name for m in model.metrics] == [*LOSSES, "miou"]


def test_segmentation_term_takes_the_searchs_loss_object() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, (2, 64, 128))
    onehot = np.eye(5, dtype="float32")[labels]
    probs = rng.dirichlet(np.ones(5), (2, 64, 128)).astype("float32")
    logits = keras.ops.zeros((2, 16, 32, 1))
    _, _, default = build_pix2pix(TINY).generator_loss(logits, onehot, probs)
    _, _, crossentropy = build_pix2pix(TINY, seg_loss=build_loss("crossentropy")).generator_loss(
        logits, onehot, probs
    )
    assert float(crossentropy) == pytest.approx(float(default), rel=1e-5)  # the default, by Keras' sparse CE

    weighted = build_loss("weighted_crossentropy", class_weights=class_weights((1, 4, 3, 2, 0.01), 1.0))
    model = build_pix2pix(TINY)
    model.compile(seg_loss=weighted, jit_compile=False)  # compile's seg_loss replaces the constructor's
    total, adversarial, segmentation = model.generator_loss(logits, onehot, probs)
    assert float(segmentation) == pytest.approx(float(weighted(labels, probs)), rel=1e-6)
    assert float(segmentation) != pytest.approx(float(default), rel=1e-3)
    assert float(total) == pytest.approx(float(adversarial) + SEG_WEIGHT * float(segmentation), rel=1e-5)


def test_trains_with_a_loss_of_the_family(tiny_data) -> None:
    images, labels = tiny_data
    model = build_pix2pix(TINY, seg_loss=build_loss("dice_crossentropy"))
    model.compile(jit_compile=False)
    logs = model.train_on_batch(images[:2, ..., None] / np.float32(255), labels[:2], return_dict=True)
    assert all(math.isfinite(float(logs[k])) for k in LOSSES)
    assert float(logs["seg_loss"]) > 0
