"""Data sets for tune: the challenge .npz loader, the contamination cleaner, the tf.data pipeline and the
synthetic terrain generator. Imports neither `tuning` nor `models`; TensorFlow loads only in make_dataset."""

from __future__ import annotations

from marstune.data.augment import make_dataset
from marstune.data.clean import CleanReport, find_contamination, remove_contamination
from marstune.data.mars import (
    CLASS_NAMES,
    IMAGE_SHAPE,
    NUM_CLASSES,
    DataError,
    MarsData,
    load_npz,
    save_npz,
    split_indices,
    validate_test_set,
    validate_training_set,
)
from marstune.data.synthetic import SyntheticSet, generate, synthetic_data, write_npz

__all__ = [
    "CLASS_NAMES",
    "IMAGE_SHAPE",
    "NUM_CLASSES",
    "CleanReport",
    "DataError",
    "MarsData",
    "SyntheticSet",
    "find_contamination",
    "generate",
    "load_npz",
    "make_dataset",
    "remove_contamination",
    "save_npz",
    "split_indices",
    "synthetic_data",
    "validate_test_set",
    "validate_training_set",
    "write_npz",
]
