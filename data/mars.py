"""Load, validate and save the Mars terrain challenge data (`mars_for_students.npz`).

The challenge layout, and the only one accepted:
    training_set  float (N, 2, 64, 128): [:, 0] image values 0..255 (not integers),
                                         [:, 1] label masks 0.0..4.0 stored as floats
    test_set      float (M, 64, 128), optional
Other keys are ignored. Anything else is refused with one line naming the file, the key, what was found,
what is expected and how to fix it. Files are read with `allow_pickle=False` only: an object array is
refused from its header and never unpickled.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marstune.data.layout import CLASS_NAMES, IMAGE_SHAPE, NUM_CLASSES

__all__ = ["CLASS_NAMES", "IMAGE_SHAPE", "NUM_CLASSES"]  # re-exported: data.mars is where users look
TRAIN_KEY = "training_set"
TEST_KEY = "test_set"

_TRAIN_LAYOUT = "(N, 2, 64, 128) = pairs of image and label mask"
_TEST_LAYOUT = "(M, 64, 128) = test images"
_NPY_MAGIC = b"\x93NUMPY"


class DataError(ValueError):
    """Bad data: the message is one line naming the file, the key, what was found and what is expected."""


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays with == is ambiguous
class MarsData:
    """Validated training pairs (and optionally test images), ready for a model."""

    images: np.ndarray  # (N, 64, 128) float32, 0..255
    labels: np.ndarray  # (N, 64, 128) uint8, 0..4
    test_images: np.ndarray | None  # (M, 64, 128) float32 or None
    source: str  # file path, or "synthetic(n=..., seed=...)"
    fingerprint: str  # 16 hex chars of sha256 over the raw arrays; same file -> same value

    def __post_init__(self) -> None:
        # Cheap structural checks only: values were validated when the raw arrays were read.
        n = len(self.images)
        if self.images.shape != (n, *IMAGE_SHAPE) or self.images.dtype != np.float32:
            raise DataError(
                f"{self.source}: images are {self.images.dtype} {self.images.shape}; "
                f"expected float32 (N, 64, 128) — build MarsData with from_arrays()"
            )
        if self.labels.shape != self.images.shape or self.labels.dtype != np.uint8:
            raise DataError(
                f"{self.source}: labels are {self.labels.dtype} {self.labels.shape}; "
                f"expected uint8 {self.images.shape} matching the images — build MarsData with from_arrays()"
            )

    def __len__(self) -> int:
        return len(self.images)


def _first_bad(mask: np.ndarray) -> list[int]:
    return [int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape)]


def _object_array_error(where: str, key: str, layout: str) -> DataError:
    return DataError(
        f"{where}: {key} is an object array (pickled Python objects), refused without unpickling; "
        f"expected a float array {layout} — save it with np.asarray(x, dtype=np.float64)"
    )


def _check_float_array(arr: object, where: str, key: str, layout: str) -> np.ndarray:
    """Type and dtype checks shared by both keys; returns the array."""
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{where}: {key} is a {type(arr).__name__}; expected a numpy float array {layout}")
    if arr.dtype.hasobject:
        raise _object_array_error(where, key, layout)
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(
            f"{where}: {key} has dtype {arr.dtype}; expected a floating array (float32/float64) {layout} — "
            f"convert it with .astype(np.float64)"
        )
    return arr


def _check_finite(arr: np.ndarray, where: str, key: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        raise DataError(
            f"{where}: {key} has {int(bad.sum())} non-finite values (NaN/inf), first at {_first_bad(bad)}; "
            f"expected finite numbers — drop or repair those items"
        )


def _check_image_range(images: np.ndarray, where: str, what: str) -> None:
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 255.0:
        raise DataError(
            f"{where}: {what} range from {lo:g} to {hi:g}; expected pixel values 0..255 — "
            f"rescale the images to 0..255"
        )


def validate_training_set(arr: object, where: str) -> None:
    """Raise DataError unless `arr` is a finite float (N, 2, 64, 128) array: images 0..255, labels 0..4."""
    arr = _check_float_array(arr, where, TRAIN_KEY, _TRAIN_LAYOUT)
    if arr.ndim != 4 or arr.shape[1] != 2 or arr.shape[2:] != IMAGE_SHAPE or arr.shape[0] < 1:
        raise DataError(
            f"{where}: {TRAIN_KEY} has shape {arr.shape}; expected {_TRAIN_LAYOUT}, N >= 1 — "
            f"stack them with np.stack([images, masks], axis=1)"
        )
    _check_finite(arr, where, TRAIN_KEY)
    _check_image_range(arr[:, 0], where, f"{TRAIN_KEY} images ([:, 0])")
    labels = arr[:, 1]
    bad = (labels != np.round(labels)) | (labels < 0) | (labels > NUM_CLASSES - 1)
    if bad.any():
        values = np.unique(labels[bad])
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if len(values) > 5 else "")
        raise DataError(
            f"{where}: {TRAIN_KEY} labels ([:, 1]) contain {int(bad.sum())} pixels with values {shown} "
            f"(first at {_first_bad(bad)}); expected integer class ids 0..4 stored as floats — "
            f"fix or drop those masks"
        )
    if not (labels >= 1).any():  # the score is the mean IoU over classes 1..4: every trial would score 0
        raise DataError(
            f"{where}: {TRAIN_KEY} labels ([:, 1]) hold no terrain class 1..4 (every pixel is 0, "
            f"background), so every trial would score 0; expected masks labelled with the classes "
            f"{', '.join(CLASS_NAMES[1:])} — check that the masks are the labels, not empty placeholders"
        )


def validate_test_set(arr: object, where: str) -> None:
    """Raise DataError unless `arr` is a finite float (M, 64, 128) array with values 0..255."""
    arr = _check_float_array(arr, where, TEST_KEY, _TEST_LAYOUT)
    if arr.ndim != 3 or arr.shape[1:] != IMAGE_SHAPE:
        raise DataError(
            f"{where}: {TEST_KEY} has shape {arr.shape}; expected {_TEST_LAYOUT} — "
            f"store the test images alone, without masks"
        )
    _check_finite(arr, where, TEST_KEY)
    if arr.size:
        _check_image_range(arr, where, f"{TEST_KEY} values")


def fingerprint(training_set: np.ndarray, test_set: np.ndarray | None) -> str:
    """16 hex chars of sha256 over the raw arrays (key, dtype and shape first, so layouts cannot alias)."""
    h = hashlib.sha256()
    for key, arr in ((TRAIN_KEY, training_set), (TEST_KEY, test_set)):
        if arr is not None:
            h.update(f"{key}|{arr.dtype.str}|{arr.shape}|".encode())
            h.update(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))  # no copy of a large array
    return h.hexdigest()[:16]


def from_arrays(training_set: np.ndarray, test_set: np.ndarray | None, source: str) -> MarsData:
    """Validate arrays in the challenge layout and turn them into MarsData (the one path for every source)."""
    validate_training_set(training_set, source)
    if test_set is not None:
        validate_test_set(test_set, source)
    return MarsData(
        images=np.ascontiguousarray(training_set[:, 0], dtype=np.float32),
        labels=np.ascontiguousarray(training_set[:, 1]).astype(np.uint8),
        test_images=None if test_set is None else np.ascontiguousarray(test_set, dtype=np.float32),
        source=source,
        fingerprint=fingerprint(training_set, test_set),
    )


def _read_key(npz: np.lib.npyio.NpzFile, key: str, where: str, layout: str) -> np.ndarray:
    # Peek at the .npy header first: an object array is refused from its dtype, before any payload is read.
    try:
        with npz.zip.open(key + ".npy") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                _, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:  # (3, 0): utf-8 field names; the loader below still refuses pickles
                dtype = None
        if dtype is not None and dtype.hasobject:
            raise _object_array_error(where, key, layout)
        return npz[key]
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"{where}: could not read {key} ({detail}); expected a float array {layout} "
            f"written by np.savez — rewrite the file"
        ) from None


def load_npz(path: str | Path, max_items: int | None = None) -> MarsData:
    """Load and validate the challenge .npz; `max_items` keeps the first k pairs (and test images)."""
    path = Path(path)
    where = str(path)
    expected = f"an .npz with {TRAIN_KEY} {_TRAIN_LAYOUT} and optionally {TEST_KEY} {_TEST_LAYOUT}"
    if max_items is not None and (
        isinstance(max_items, bool) or not isinstance(max_items, int | np.integer) or max_items < 1
    ):
        raise DataError(
            f"{where}: max_items is {max_items!r}; expected a positive integer, or None for all pairs"
        )
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise DataError(f"{where}: {what}; expected {expected} — pass the path of the challenge file")
    if not zipfile.is_zipfile(path):
        with path.open("rb") as f:
            kind = "a single .npy array" if f.read(len(_NPY_MAGIC)) == _NPY_MAGIC else "not a zip archive"
        raise DataError(
            f"{where}: {TRAIN_KEY} cannot be read, the file is {kind}; expected {expected} — "
            f"write it with np.savez(path, {TRAIN_KEY}=..., {TEST_KEY}=...)"
        )
    try:
        npz = np.load(path, allow_pickle=False)  # never unpickle: a data file must not run code
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{where}: {TRAIN_KEY} cannot be read ({exc}); expected {expected} — rewrite it with np.savez"
        ) from None
    with npz:
        if TRAIN_KEY not in npz.files:
            found = ", ".join(npz.files) or "none"
            raise DataError(
                f"{where}: key {TRAIN_KEY} is missing (keys found: {found}); expected {expected} — "
                f"rename the array to {TRAIN_KEY}"
            )
        training_set = _read_key(npz, TRAIN_KEY, where, _TRAIN_LAYOUT)
        test_set = _read_key(npz, TEST_KEY, where, _TEST_LAYOUT) if TEST_KEY in npz.files else None
    if max_items is not None:
        # Slicing before validation keeps the check on what is used; the check itself needs 4-d arrays.
        _check_float_array(training_set, where, TRAIN_KEY, _TRAIN_LAYOUT)
        training_set = training_set[:max_items] if training_set.ndim == 4 else training_set
        if test_set is not None and test_set.ndim == 3:
            test_set = test_set[:max_items]
    return from_arrays(training_set, test_set, where)


def save_npz(path: str | Path, training_set: np.ndarray, test_set: np.ndarray | None) -> None:
    """Validate, then write the challenge layout to `path` (nothing is written if validation fails).

    A plain write, like np.savez: the service (`tune data synth`) makes it atomic through
    marstune.tuning.outputs, the one owner of atomic replacement.
    """
    path = Path(path)
    validate_training_set(training_set, str(path))
    if test_set is not None:
        validate_test_set(test_set, str(path))
    arrays = {TRAIN_KEY: training_set} if test_set is None else {TRAIN_KEY: training_set, TEST_KEY: test_set}
    with path.open("wb") as f:  # a file object: np.savez would append ".npz" to a bare name
        np.savez(f, **arrays)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, validation) index split: sorted int64 arrays, at least one index in each."""
    if n < 2:
        raise DataError(
            f"split: {n} pairs cannot be split; expected at least 2 (one to train, one to validate)"
        )
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"split: val_fraction is {val_fraction}; expected a number strictly between 0 and 1")
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
