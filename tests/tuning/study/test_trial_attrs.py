"""The trial record's wide parts are system attributes, its per-class IoU short user attributes; trials
stored the old way read the same."""

from __future__ import annotations

from marstune.tuning.study.trial_attrs import (
    EPOCH_LOG_ATTR,
    epoch_log,
    per_class_iou,
    stored_attrs,
    trial_config,
)

IOU = {"background": 0.9, "soil": 0.41, "bedrock": 0.38, "sand": 0.52, "big_rock": None}
LOG = [{"val_miou": 0.3, "per_class_iou": [0.9, 0.4, 0.3, 0.5, None], "seconds": 9.1}]


def test_the_objectives_attributes_are_stored_short() -> None:
    user, system = stored_attrs({"epochs_run": 1, "per_class_iou": IOU, "epoch_log": LOG})
    assert user == {
        "epochs_run": 1,
        "iou_background": 0.9,
        "iou_soil": 0.41,
        "iou_bedrock": 0.38,
        "iou_sand": 0.52,
        "iou_big_rock": None,
    }
    assert system == {EPOCH_LOG_ATTR: LOG}
    assert max(len(repr(v)) for v in user.values()) < 20  # nothing that widens the dashboard's page
    assert per_class_iou(user) == IOU and epoch_log(system, user) == LOG


def test_trials_stored_before_read_the_same() -> None:
    old = {"per_class_iou": IOU, "epoch_log": LOG, "config": {"levels": 3}}
    assert per_class_iou(old) == IOU and epoch_log({}, old) == LOG and trial_config({}, old) == {"levels": 3}
    assert (
        per_class_iou({"epochs_run": 1}) is None and epoch_log({}, {}) == [] and trial_config({}, {}) is None
    )
