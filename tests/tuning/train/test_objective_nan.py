"""A diverging trial: the objective stops it after the epoch whose loss is not finite and fails it."""

from __future__ import annotations

import pytest

from marstune.tuning.config.spec import load_spec
from marstune.tuning.search.objective import TrialContext, TrialFailed, evaluate


def test_a_nan_loss_stops_training_after_that_epoch_and_fails_the_trial() -> None:
    spec = load_spec(
        None,
        [
            "objective.kind=unet",
            "train.epochs=4",
            "train.max_items=16",
            "train.batch_size=8",
            "train.patience=0",
            "train.optimizer=sgd",
            "train.learning_rate=1e30",  # the first updates overflow the weights
            "data.synthetic_items=40",
        ],
    )
    reported: list[int] = []
    ctx = TrialContext(0, lambda epoch, value: bool(reported.append(epoch)), threads=1)
    # elu, not relu: overflowing relu units die (output 0) and the loss stays finite
    config = {"base_filters": 8, "levels": 2, "kernel": 3, "dropout": 0.0, "activation": "elu"}
    with pytest.raises(TrialFailed, match=r"loss became NaN at epoch 1; try a lower learning_rate"):
        evaluate(config, spec, ctx)
    assert ctx.attrs["epochs_run"] == 1  # stopped: the three epochs left were not trained
    assert reported == []  # a diverged epoch's mIoU is never reported to the sampler


def test_weights_that_blow_up_in_the_last_update_fail_the_trial_not_score_zero() -> None:
    """One batch per epoch and one epoch: the training loss is computed before the update that makes
    the weights NaN, so only the validation loss and the outputs show it (it completed at 0.0)."""
    spec = load_spec(
        None,
        [
            "objective.kind=unet",
            "train.epochs=1",
            "train.max_items=16",
            "train.batch_size=32",  # every training pair in one batch
            "train.patience=0",
            "train.learning_rate=1e9",
            "data.synthetic_items=48",
        ],
    )
    reported: list[int] = []
    ctx = TrialContext(0, lambda epoch, value: bool(reported.append(epoch)), threads=1)
    config = {"base_filters": 8, "levels": 2, "kernel": 3, "dropout": 0.0, "activation": "relu"}
    with pytest.raises(
        TrialFailed, match=r"validation loss became NaN at epoch 1; try a lower learning_rate"
    ):
        evaluate(config, spec, ctx)
    assert reported == [] and "per_class_iou" not in ctx.attrs


def test_non_finite_outputs_with_finite_losses_are_divergence() -> None:
    import keras
    import numpy as np

    from marstune.models.metrics import MeanIoU
    from marstune.tuning.train.callbacks import EpochTracker

    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(5, 1, activation="softmax")(inputs))
    model.set_weights([np.full(w.shape, np.inf, "float32") for w in model.get_weights()])
    reported: list[int] = []
    tracker = EpochTracker(
        lambda epoch, value: bool(reported.append(epoch)),
        MeanIoU(),
        0,
        probe=np.ones((2, 4, 4, 1), "float32"),
    )
    tracker.set_model(model)
    tracker.on_epoch_end(0, {"loss": 1.0, "val_loss": 1.0, "val_miou": 0.0})
    assert tracker.diverged == "the model's outputs became NaN or infinite"
    assert model.stop_training is True and reported == [] and tracker.best is None
