"""Keras models for Mars terrain segmentation: the U-Net family, Pix2Pix, the losses the search chooses
from (with class weights), and the challenge's mean IoU.

Nothing here imports tuning/ or data/. The names below are loaded on first use, so `import models` (and
`from models.unet import ModelConfigError`) does not load TensorFlow; `models.metrics` does.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelConfigError": "marstune.models.unet",
    "MAX_LEVELS": "marstune.models.unet",
    "UNetConfig": "marstune.models.unet",
    "build_unet": "marstune.models.unet",
    "validate_config": "marstune.models.unet",
    "MeanIoU": "marstune.models.metrics",
    "iou_per_class": "marstune.models.metrics",
    "mean_iou": "marstune.models.metrics",
    "LOSS_NAMES": "marstune.models.losses",
    "LossConfigError": "marstune.models.class_weights",
    "build_loss": "marstune.models.losses",
    "build_patchgan": "marstune.models.patchgan",
    "build_pix2pix": "marstune.models.pix2pix",
    "Pix2Pix": "marstune.models.pix2pix",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
