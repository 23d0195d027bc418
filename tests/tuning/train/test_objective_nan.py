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
