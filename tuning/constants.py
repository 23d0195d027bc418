"""The constants every room shares, each with one owner.

The challenge layout (image shape, classes) is owned by data/mars.py and the U-Net's hyperparameter names
by models/unet.py: those leaves know nothing of tuning, so the service imports them from there. What
only the service uses (colours, the scored classes' names) is defined here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from marstune.data.layout import CLASS_NAMES, IMAGE_SHAPE, NUM_CLASSES
from marstune.models.unet import CONFIG_KEYS as MODEL_KEYS

__all__ = [
    "CLASS_COLOURS",
    "CLASS_NAMES",
    "IMAGE_SHAPE",
    "METRIC_NAME",
    "MODEL_KEYS",
    "NUM_CLASSES",
    "SCORED_CLASSES",
    "class_label",
    "per_class_dict",
]

# The challenge scores the mean IoU over classes 1..4: background is left out.
SCORED_CLASSES = CLASS_NAMES[1:]
# Masks in every figure: background black, soil brown, bedrock grey, sand tan, big rock red (the rare
# class gets the loudest colour, so a miss is easy to see).
CLASS_COLOURS = ("#000000", "#8c564b", "#9a9a9a", "#e6c47a", "#d62728")
# What a study maximises, as optuna-dashboard and every table name it.
METRIC_NAME = "val mIoU"
# beside an SQLite study database: the file study/claim.py flocks; outputs/ refuses to write over it
CLAIM_LOCK_SUFFIX = ".lock"


def per_class_dict(values: Sequence[float]) -> dict[str, float | None]:
    """Per-class IoU keyed by class name (None where a class was never seen), as every record keeps it."""
    return {
        name: (None if math.isnan(v) else round(float(v), 4))
        for name, v in zip(CLASS_NAMES, values, strict=True)
    }


def class_label(name: str) -> str:
    """A class name as people read it ("big_rock" -> "big rock")."""
    return name.replace("_", " ")
