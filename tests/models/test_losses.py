"""The loss family: one contract over every loss name, then what each loss must equal."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from marstune.data.synthetic import synthetic_data
from marstune.models.class_weights import MAX_CLASS_WEIGHT, class_weights
from marstune.models.losses import LOSS_NAMES, LOSS_PARAMETERS, LOSSES, LossConfigError, build_loss
from marstune.models.metrics import MeanIoU
from marstune.models.unet import ModelConfigError, build_unet

TINY = {"base_filters": 4, "levels": 2, "kernel": 3, "dropout": 0.0, "activation": "relu"}
REAL_FREQUENCIES = (0.24, 0.34, 0.24, 0.18, 0.0013)  # the challenge's training set, roughly
WEIGHTS = class_weights(REAL_FREQUENCIES, 1.0)  # inverse frequency: big rock at the cap


def random_batch(seed: int, shape: tuple[int, ...] = (2, 8, 16)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, shape)
    probs = rng.dirichlet(np.ones(5), shape).astype(np.float32)
    return labels, probs


def value(name: str, labels: object, probs: object, **kw: object) -> float:
    return float(build_loss(name, **kw)(labels, probs))  # type: ignore[arg-type]


def grad_wrt_logits(name: str, labels: np.ndarray, logits: np.ndarray, **kw: object) -> np.ndarray:
    """d loss / d logits through the softmax, as in training."""
    loss = build_loss(name, **kw)  # type: ignore[arg-type]
    var = tf.Variable(logits)
    with tf.GradientTape() as tape:
        total = loss(labels, keras.ops.softmax(var, axis=-1))
    return tape.gradient(total, var).numpy()


@pytest.fixture(params=LOSS_NAMES)
def loss_name(request: pytest.FixtureRequest) -> str:
    return request.param


class TestLossContract:
    """What every loss of the family guarantees; a new loss gets all of it by joining LOSSES."""

    def test_finite_on_random_and_extreme_inputs(self, loss_name: str) -> None:
        labels, probs = random_batch(0)
        onehot = np.eye(5, dtype=np.float32)[labels]  # probabilities exactly 0 and 1
        cases = {
            "random": (labels, probs),
            "certain and right": (labels, onehot),
            "certain and wrong": (labels, np.roll(onehot, 1, axis=-1)),
            "float16": (labels, probs.astype(np.float16)),
            "labels with a channel": (labels[..., None], probs),
        }
        for case, (y, p) in cases.items():
            for weights in (None, WEIGHTS):
                loss = value(loss_name, y, p, class_weights=weights, focal_gamma=2.0)
                assert np.isfinite(loss) and loss >= 0, (case, weights)
        assert value(loss_name, labels, probs, class_weights=WEIGHTS) > 0.1  # a random guess costs something

    def test_extreme_inputs_keep_gradients_finite(self, loss_name: str) -> None:
        labels, _ = random_batch(1)
        onehot = np.eye(5, dtype=np.float32)[labels]
        for probs in (onehot, np.roll(onehot, 1, axis=-1)):
            var = tf.Variable(probs)
            with tf.GradientTape() as tape:
                total = build_loss(loss_name, class_weights=WEIGHTS, focal_gamma=0.5)(labels, var)
            assert np.all(np.isfinite(tape.gradient(total, var).numpy()))

    def test_gradients_are_finite_and_nonzero(self, loss_name: str) -> None:
        labels, _ = random_batch(2)
        logits = np.random.default_rng(2).normal(size=(*labels.shape, 5)).astype(np.float32)
        grad = grad_wrt_logits(loss_name, labels, logits, class_weights=WEIGHTS)
        assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 1e-6

    def test_a_one_pixel_rare_class_pulls_its_pixel(self, loss_name: str) -> None:
        rng = np.random.default_rng(3)
        labels = rng.integers(0, 4, (2, 16, 32))
        labels[1, 5, 7] = 4  # the only big-rock pixel of the batch
        logits = rng.normal(size=(*labels.shape, 5)).astype(np.float32)
        for weights in (None, WEIGHTS):
            grad = grad_wrt_logits(loss_name, labels, logits, class_weights=weights)
            assert grad[1, 5, 7, 4] < -1e-8  # raising big rock's logit there lowers the loss

    def test_reads_exactly_its_parameters(self, loss_name: str) -> None:
        labels, probs = random_batch(4)
        base = value(loss_name, labels, probs, class_weights=WEIGHTS, focal_gamma=2.0)
        changed = {
            "class_weights": value(loss_name, labels, probs, class_weights=None, focal_gamma=2.0),
            "focal_gamma": value(loss_name, labels, probs, class_weights=WEIGHTS, focal_gamma=0.5),
        }
        for parameter, other in changed.items():
            if parameter in LOSS_PARAMETERS[loss_name]:
                assert other != pytest.approx(base, rel=1e-3), parameter
            else:
                assert other == base, parameter

    def test_compiled_unet_saves_and_loads_in_safe_mode(self, loss_name: str, tmp_path: Path) -> None:
        rng = np.random.default_rng(5)
        x = rng.random((2, 64, 128, 1), dtype=np.float32)
        y = rng.integers(0, 5, (2, 64, 128))
        keras.utils.set_random_seed(5)
        model = build_unet(TINY)
        loss = build_loss(loss_name, class_weights=WEIGHTS, focal_gamma=1.5)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=[MeanIoU()])
        model.train_on_batch(x, y)
        path = tmp_path / f"{loss_name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        assert type(loaded.loss) is type(loss) and loaded.loss.get_config() == loss.get_config()
        np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
        scores = model.evaluate(x, y, verbose=0, return_dict=True)
        again = loaded.evaluate(x, y, verbose=0, return_dict=True)
        assert again["loss"] == pytest.approx(scores["loss"], rel=1e-6)

    def test_short_training_lowers_the_loss(self, loss_name: str) -> None:
        data = synthetic_data(n_train=8, n_test=0, seed=1)
        x, y = data.images[..., None] / np.float32(255), data.labels
        weights = class_weights(np.bincount(y.ravel(), minlength=5), 0.5)
        keras.utils.set_random_seed(1)
        model = build_unet(TINY)
        loss = build_loss(loss_name, class_weights=weights)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
        before = model.evaluate(x, y, verbose=0)
        for _ in range(20):
            model.train_on_batch(x, y)
        assert model.evaluate(x, y, verbose=0) < 0.95 * before  # ~0.85-0.89 of it when written


def test_registry_and_parameters_cover_the_same_names() -> None:
    assert set(LOSS_PARAMETERS) == set(LOSSES) == set(LOSS_NAMES)
    assert set(LOSS_NAMES) == {"crossentropy", "weighted_crossentropy", "focal", "dice_crossentropy"}


def test_crossentropy_is_keras_sparse_categorical_crossentropy() -> None:
    for seed in range(3):
        labels, probs = random_batch(seed)
        expected = float(keras.losses.SparseCategoricalCrossentropy()(labels, probs))
        assert value("crossentropy", labels, probs) == pytest.approx(expected, rel=1e-6)
        # It takes no weights: a study's exponent leaves the seed's loss as it was.
        assert value("crossentropy", labels, probs, class_weights=WEIGHTS) == value(
            "crossentropy", labels, probs
        )


def test_crossentropy_trains_exactly_like_the_seeds_string_loss() -> None:
    rng = np.random.default_rng(6)
    x = rng.random((4, 64, 128, 1), dtype=np.float32)
    y = rng.integers(0, 5, (4, 64, 128))
    models = []
    for loss in ("sparse_categorical_crossentropy", build_loss("crossentropy")):
        keras.utils.set_random_seed(6)
        model = build_unet(TINY)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
        history = model.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0).history
        models.append((model, history["loss"]))
    (seed_model, seed_losses), (our_model, our_losses) = models
    np.testing.assert_allclose(our_losses, seed_losses, rtol=1e-6)
    for a, b in zip(seed_model.get_weights(), our_model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_exponent_zero_weighted_crossentropy_is_crossentropy() -> None:
    labels, probs = random_batch(7)
    unweighted = class_weights(REAL_FREQUENCIES, 0.0)
    assert value("weighted_crossentropy", labels, probs, class_weights=unweighted) == value(
        "crossentropy", labels, probs
    )


def test_weighted_crossentropy_scales_each_pixel_by_its_class() -> None:
    labels, probs = random_batch(8)
    per_pixel = -np.log(np.take_along_axis(probs, labels[..., None], -1)[..., 0])
    expected = np.mean(per_pixel * np.asarray(WEIGHTS)[labels])
    got = value("weighted_crossentropy", labels, probs, class_weights=WEIGHTS)
    assert got == pytest.approx(expected, rel=1e-5)


def test_focal_with_gamma_zero_is_crossentropy() -> None:
    labels, probs = random_batch(9)
    plain = value("crossentropy", labels, probs)
    assert value("focal", labels, probs, focal_gamma=0.0) == pytest.approx(plain, rel=1e-6)
    weighted = value("weighted_crossentropy", labels, probs, class_weights=WEIGHTS)
    focal = value("focal", labels, probs, class_weights=WEIGHTS, focal_gamma=0.0)
    assert focal == pytest.approx(weighted, rel=1e-6)


def test_focal_down_weights_easy_pixels() -> None:
    labels, probs = random_batch(10)
    p_true = np.take_along_axis(probs, labels[..., None], -1)[..., 0]
    expected = np.mean((1 - p_true) ** 2 * -np.log(p_true))
    assert value("focal", labels, probs, focal_gamma=2.0) == pytest.approx(expected, rel=1e-5)


def test_dice_crossentropy_adds_the_batch_dice_of_the_scored_classes() -> None:
    labels, probs = random_batch(11)
    labels[labels == 4] = 3  # big rock absent from the batch: its Dice term is a constant 1
    onehot = np.eye(5)[labels]
    dice = [
        1 - 2 * (onehot[..., c] * probs[..., c]).sum() / (onehot[..., c].sum() + probs[..., c].sum())
        for c in (1, 2, 3)
    ]
    expected = value("weighted_crossentropy", labels, probs, class_weights=WEIGHTS) + np.mean([*dice, 1.0])
    got = value("dice_crossentropy", labels, probs, class_weights=WEIGHTS)
    assert got == pytest.approx(expected, rel=1e-5)


def test_weights_give_the_rare_pixel_more_pull() -> None:
    rng = np.random.default_rng(12)
    labels = rng.integers(0, 4, (2, 16, 32))
    labels[0, 3, 3] = 4
    logits = rng.normal(size=(*labels.shape, 5)).astype(np.float32)
    plain = grad_wrt_logits("crossentropy", labels, logits)[0, 3, 3, 4]
    weighted = grad_wrt_logits("weighted_crossentropy", labels, logits, class_weights=WEIGHTS)[0, 3, 3, 4]
    assert weighted == pytest.approx(MAX_CLASS_WEIGHT * plain, rel=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"name": "dice"},
            r"^`loss` must be one of crossentropy, weighted_crossentropy, focal, "
            r"dice_crossentropy, got 'dice'$",
        ),  # fmt: skip
        ({"name": "focal", "focal_gamma": -1.0}, "focal_gamma must be a finite number >= 0"),
        ({"name": "focal", "focal_gamma": float("nan")}, "focal_gamma must be a finite number >= 0"),
        ({"name": "crossentropy", "class_weights": (1.0, 0.0, 1.0)}, "class_weights must be one finite"),
        ({"name": "focal", "class_weights": (1.0, float("inf"))}, "class_weights must be one finite"),
    ],
)
def test_bad_values_are_refused(kwargs: dict[str, object], match: str) -> None:
    name = kwargs.pop("name")
    with pytest.raises(LossConfigError, match=match) as info:
        build_loss(name, **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ModelConfigError) and isinstance(info.value, ValueError)


def test_weights_must_match_the_predicted_classes() -> None:
    labels, probs = random_batch(13)
    with pytest.raises(LossConfigError, match="3 class weights for 5 predicted classes"):
        build_loss("weighted_crossentropy", class_weights=(1.0, 2.0, 3.0))(labels, probs)
