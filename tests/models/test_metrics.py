"""Per-class and mean IoU: hand-computed cases, the Keras metric against numpy, and inside model.fit."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from marstune.models.metrics import MeanIoU, confusion_matrix, iou_per_class, mean_iou
from marstune.models.unet import build_unet

nan = float("nan")


def onehot_probs(labels: np.ndarray, num_classes: int = 5) -> np.ndarray:
    """Scores whose argmax is `labels` (what a model's softmax would give for that prediction)."""
    return np.eye(num_classes, dtype=np.float32)[labels] * 0.9 + 0.02


# Each case: truth, prediction, the per-class IoU worked out by hand, the mean over classes 1..4.
HAND_CASES = {
    "mixed": (
        [[0, 1, 1, 2], [2, 3, 3, 4]],
        [[0, 1, 2, 2], [2, 3, 1, 4]],
        # 0: {(0,0)} vs {(0,0)}                      -> 1/1
        # 1: {(0,1),(0,2)} vs {(0,1),(1,2)}           -> 1 shared of 3 -> 1/3
        # 2: {(0,3),(1,0)} vs {(0,2),(0,3),(1,0)}     -> 2 shared of 3 -> 2/3
        # 3: {(1,1),(1,2)} vs {(1,1)}                 -> 1 shared of 2 -> 1/2
        # 4: {(1,3)} vs {(1,3)}                       -> 1/1
        [1.0, 1 / 3, 2 / 3, 1 / 2, 1.0],
        (1 / 3 + 2 / 3 + 1 / 2 + 1.0) / 4,  # 0.625
    ),
    "absent classes are skipped": (
        [[0, 1], [1, 0]],
        [[0, 1], [0, 0]],
        # 0: {(0,0),(1,1)} vs {(0,0),(1,0),(1,1)} -> 2/3;  1: {(0,1),(1,0)} vs {(0,1)} -> 1/2;  2..4: nowhere
        [2 / 3, 1 / 2, nan, nan, nan],
        1 / 2,  # only class 1 is scored
    ),
    "predicted but absent from truth scores 0": (
        [[1, 1, 1, 1]],
        [[1, 1, 3, 3]],
        # 1: 2 shared of 4 -> 1/2;  3: 0 shared of 2 -> 0
        [nan, 1 / 2, nan, 0.0, nan],
        (1 / 2 + 0.0) / 2,
    ),
    "background is ignored in the mean": (
        [[0, 0, 0, 2], [0, 0, 4, 4]],
        [[1, 1, 0, 2], [0, 0, 4, 4]],
        # 0: {(0,0),(0,1),(0,2),(1,0),(1,1)} vs {(0,2),(1,0),(1,1)} -> 3 shared of 5 -> 3/5 (not in the mean)
        # 1: nowhere in truth, predicted at (0,0),(0,1) -> 0/2;  2: 1/1;  3: nowhere;  4: 2/2
        [3 / 5, 0.0, 1.0, nan, 1.0],
        (0.0 + 1.0 + 1.0) / 3,
    ),
}


@pytest.mark.parametrize("case", sorted(HAND_CASES))
def test_hand_computed_cases(case: str) -> None:
    truth, pred, per_class, mean = HAND_CASES[case]
    np.testing.assert_allclose(iou_per_class(truth, pred), per_class, equal_nan=True)
    assert mean_iou(truth, pred) == pytest.approx(mean)


@pytest.mark.parametrize("case", sorted(HAND_CASES))
def test_keras_metric_on_hand_cases(case: str) -> None:
    truth, pred, per_class, mean = HAND_CASES[case]
    metric = MeanIoU()
    metric.update_state(np.array([truth]), onehot_probs(np.array([pred])))
    assert float(metric.result()) == pytest.approx(mean, rel=1e-6)
    np.testing.assert_allclose(metric.per_class(), per_class, equal_nan=True)


def test_confusion_matrix_rows_are_truth() -> None:
    cm = confusion_matrix([0, 1, 1, 2], [0, 2, 1, 2], num_classes=3)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])


def test_nothing_to_score() -> None:
    zeros = np.zeros((1, 2, 3), dtype=np.int64)
    np.testing.assert_array_equal(iou_per_class(zeros, zeros), [1.0, nan, nan, nan, nan])
    assert np.isnan(mean_iou(zeros, zeros))  # numpy: there is no score
    metric = MeanIoU()
    metric.update_state(zeros, onehot_probs(zeros))
    assert float(metric.result()) == 0.0  # the Keras metric stays finite for training logs


def test_label_formats() -> None:
    truth = np.array([[0, 1, 2], [3, 4, 4]])
    pred = np.array([[0, 1, 1], [3, 4, 0]])
    expected = iou_per_class(truth, pred)
    # The challenge stores labels as floats; a (N, H, W, 1) channel is fine on either side.
    np.testing.assert_array_equal(iou_per_class(truth.astype(np.float64), pred), expected)
    np.testing.assert_array_equal(iou_per_class(truth[..., None], pred), expected)
    np.testing.assert_array_equal(iou_per_class(truth, pred[..., None].astype(np.uint8)), expected)


@pytest.mark.parametrize(
    ("truth", "pred", "message"),
    [
        ([0, 5], [0, 1], r"^y_true labels must be in 0\.\.4, found 0\.\.5$"),
        ([0, 1], [-1, 1], r"^y_pred labels must be in 0\.\.4, found -1\.\.1$"),
        ([0.5, 1.0], [0, 1], r"^y_true must hold whole class labels 0\.\.4"),
        ([[0, 1]], np.zeros((1, 2, 5)), r"got \(1, 2\) and \(1, 2, 5\); pass predicted labels"),
    ],
)
def test_bad_labels_refused(truth: object, pred: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mean_iou(truth, pred)


def random_batches(seed: int, n: int = 3, classes: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (rng.integers(0, classes, size=(2, 8, 16)), rng.random((2, 8, 16, 5), dtype=np.float32))
        for _ in range(n)
    ]


def test_keras_metric_matches_numpy_over_batches() -> None:
    batches = random_batches(seed=0)
    metric = MeanIoU()
    for truth, probs in batches:
        metric.update_state(truth, probs)
    all_truth = np.concatenate([t for t, _ in batches])
    all_pred = np.concatenate([p.argmax(-1) for _, p in batches])
    assert float(metric.result()) == pytest.approx(mean_iou(all_truth, all_pred), rel=1e-6)
    np.testing.assert_allclose(metric.per_class(), iou_per_class(all_truth, all_pred), rtol=1e-12)
    # The stream is not the mean of per-batch scores (that would weight small batches wrongly).
    per_batch = np.mean([mean_iou(t, p.argmax(-1)) for t, p in batches])
    assert float(metric.result()) != pytest.approx(per_batch, rel=1e-9)


def test_keras_metric_matches_numpy_when_a_class_never_appears() -> None:
    batches = [(t % 4, p * np.array([1, 1, 1, 1, 0], dtype=np.float32)) for t, p in random_batches(seed=1)]
    metric = MeanIoU()
    for truth, probs in batches:
        metric.update_state(truth[..., None], probs)  # (B, H, W, 1) labels too
    all_truth = np.concatenate([t for t, _ in batches])
    all_pred = np.concatenate([p.argmax(-1) for _, p in batches])
    assert np.isnan(metric.per_class()[4])
    assert float(metric.result()) == pytest.approx(mean_iou(all_truth, all_pred), rel=1e-6)


def test_reset_state() -> None:
    (t1, p1), (t2, p2) = random_batches(seed=2, n=2)
    metric = MeanIoU()
    metric.update_state(t1, p1)
    metric.reset_state()
    assert float(metric.result()) == 0.0
    assert np.all(np.isnan(metric.per_class()))
    metric.update_state(t2, p2)
    assert float(metric.result()) == pytest.approx(mean_iou(t2, p2.argmax(-1)), rel=1e-6)


def test_sample_weight() -> None:
    (t1, p1), (t2, p2) = random_batches(seed=3, n=2)
    metric = MeanIoU()
    metric.update_state(t1, p1, sample_weight=np.zeros(2))  # per image: nothing counted
    metric.update_state(t2, p2, sample_weight=np.ones((2, 8, 16, 1)))  # per pixel, with a channel
    assert float(metric.result()) == pytest.approx(mean_iou(t2, p2.argmax(-1)), rel=1e-6)


def test_config_round_trip_and_registration() -> None:
    metric = MeanIoU(num_classes=3, name="val_score")
    config = metric.get_config()
    assert config["num_classes"] == 3 and config["name"] == "val_score"
    assert MeanIoU.from_config(config).get_config() == config
    assert keras.saving.get_registered_name(MeanIoU) == "tune>MeanIoU"
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert isinstance(again, MeanIoU) and again.get_config() == config
    assert MeanIoU().name == "miou"
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        MeanIoU(num_classes=1)


def test_inside_fit_and_evaluate(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    x = rng.random((4, 64, 128, 1), dtype=np.float32)
    y = rng.integers(0, 5, size=(4, 64, 128)).astype(np.int32)
    model = build_unet({"base_filters": 4, "levels": 2, "kernel": 3, "dropout": 0.0, "activation": "relu"})
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=[MeanIoU()])  # fmt: skip
    # The logged training metric sees the forward pass before the weight update (no dropout: same as predict).
    before = model.predict(x, verbose=0).argmax(-1)
    history = model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    assert history.history["miou"][0] == pytest.approx(mean_iou(y, before), rel=1e-5)

    after = model.predict(x, verbose=0).argmax(-1)
    scores = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)  # two batches accumulate
    assert scores["miou"] == pytest.approx(mean_iou(y, after), rel=1e-5)

    # A compiled model with the metric reloads in safe mode (the metric is registered by name).
    path = tmp_path / "compiled.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)["miou"] == pytest.approx(
        scores["miou"], rel=1e-6
    )


def random_case(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """1-3 batches whose truth and prediction each use a random subset of the classes (so some classes are
    absent from truth, prediction or both; sometimes only background is left)."""
    in_truth = rng.choice(5, size=rng.integers(1, 6), replace=False)
    in_pred = rng.choice(5, size=rng.integers(1, 6), replace=False)
    batches = []
    for _ in range(rng.integers(1, 4)):
        truth = rng.choice(in_truth, size=(2, 8, 16))
        scores = rng.random((2, 8, 16, 5), dtype=np.float32)
        scores[..., np.setdiff1d(np.arange(5), in_pred)] = -1.0  # never the argmax
        batches.append((truth, scores))
    return batches


def ops_numpy(value: object) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64)


def test_equals_keras_iou_over_the_scored_classes() -> None:
    rng = np.random.default_rng(7)
    absent_seen = 0
    for _ in range(20):
        batches = random_case(rng)
        ours = MeanIoU()
        theirs = keras.metrics.IoU(num_classes=5, target_class_ids=[1, 2, 3, 4], sparse_y_pred=False)
        for truth, scores in batches:
            ours.update_state(truth, scores)
            theirs.update_state(truth, scores)
        assert abs(float(ours.result()) - float(theirs.result())) <= 7e-9
        np.testing.assert_array_equal(ops_numpy(ours.total_cm), ops_numpy(theirs.total_cm))
        all_truth = np.concatenate([t for t, _ in batches])
        all_pred = np.concatenate([s.argmax(-1) for _, s in batches])
        expected = mean_iou(all_truth, all_pred)
        assert float(ours.result()) == pytest.approx(0.0 if np.isnan(expected) else expected, rel=1e-6)
        absent_seen += int(np.isnan(ours.per_class()).any())
    assert absent_seen >= 5  # the cases did exercise absent classes


def test_background_pixels_still_count_against_terrain_classes() -> None:
    # Background predicted as soil lowers soil's IoU; ignore_class=0 would drop those pixels instead.
    truth, pred = np.array([[0, 0, 1, 1]]), np.array([[1, 1, 1, 1]])
    metric = MeanIoU()
    metric.update_state(truth, onehot_probs(pred))
    assert float(metric.result()) == pytest.approx(0.5, rel=1e-6)
    ignoring = keras.metrics.MeanIoU(num_classes=5, ignore_class=0, sparse_y_pred=False)
    ignoring.update_state(truth, onehot_probs(pred))
    assert float(ignoring.result()) == pytest.approx(1.0, rel=1e-6)  # not the challenge's score


def test_float16_scores_and_mixed_precision() -> None:
    batches = random_batches(seed=5)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        metric = MeanIoU()
        for truth, probs in batches:
            metric.update_state(truth, probs.astype(np.float16))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert metric.total_cm.dtype == "float64"  # the policy does not shrink the counts
    all_truth = np.concatenate([t for t, _ in batches])
    all_pred = np.concatenate([p.astype(np.float16).argmax(-1) for _, p in batches])
    assert float(metric.result()) == pytest.approx(mean_iou(all_truth, all_pred), rel=1e-6)
    np.testing.assert_allclose(metric.per_class(), iou_per_class(all_truth, all_pred), rtol=1e-12)


def test_inside_an_xla_compiled_fit() -> None:
    rng = np.random.default_rng(6)
    x = rng.random((4, 64, 128, 1), dtype=np.float32)
    y = rng.integers(0, 5, size=(4, 64, 128)).astype(np.int32)
    model = build_unet({"base_filters": 4, "levels": 2, "kernel": 3, "dropout": 0.0, "activation": "relu"})
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=[MeanIoU()], jit_compile=True)  # fmt: skip
    assert model.jit_compile  # Keras did not fall back to a plain tf.function
    before = model.predict(x, verbose=0).argmax(-1)
    history = model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    assert history.history["miou"][0] == pytest.approx(mean_iou(y, before), rel=1e-5)
    after = model.predict(x, verbose=0).argmax(-1)
    assert model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)["miou"] == pytest.approx(
        mean_iou(y, after), rel=1e-5
    )
