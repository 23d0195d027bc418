"""Data sets for tune: the challenge .npz loader, the contamination cleaner, class frequencies, the tf.data
pipeline and the synthetic terrain generator. Imports neither `tuning` nor `models`; TensorFlow loads only
in make_dataset."""

from __future__ import annotations

import importlib
from typing import Any

# name -> module; loaded on first use, so `import marstune.data.layout` costs no numpy (tune --help).
_EXPORTS = {
    "make_dataset": "augment",
    "CleanReport": "clean",
    "find_contamination": "clean",
    "remove_contamination": "clean",
    "class_frequencies": "frequencies",
    "CLASS_NAMES": "layout",
    "IMAGE_SHAPE": "layout",
    "NUM_CLASSES": "layout",
    "DataError": "mars",
    "MarsData": "mars",
    "load_npz": "mars",
    "save_npz": "mars",
    "split_indices": "mars",
    "validate_test_set": "mars",
    "validate_training_set": "mars",
    "SyntheticSet": "synthetic",
    "generate": "synthetic",
    "synthetic_data": "synthetic",
    "write_npz": "synthetic",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'marstune.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"marstune.data.{module}"), name)
