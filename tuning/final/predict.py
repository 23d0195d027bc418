"""Segment test images with a saved generator and write the challenge submission CSV.

The model file is loaded with `keras.saving.load_model(..., safe_mode=True)`: a file holding Python code
(a Lambda layer) is refused, never run. Inputs are read with `allow_pickle=False`. The CSV has the
header `id,0,1,...,8191` and one row per image: its index, then its predicted mask flattened row-major.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from marstune.tuning.errors import DataError, translate
from marstune.tuning.outputs import replace_atomically
from marstune.tuning.train.saved import load_saved_model

if TYPE_CHECKING:
    import keras

CHUNK = 1024  # images per predict() call: bounds memory (probabilities are 5x the images) for any N
FIX_MODEL = "pass the generator.keras (or unet.keras) a `tune pix2pix` run wrote"


def load_model(path: Path) -> keras.Model:
    """A segmentation model from a .keras file `--model` names (train/saved.py checks and loads it)."""
    return load_saved_model(path, flag="--model", fix=FIX_MODEL)


def load_images(path: Path) -> np.ndarray:
    """(N, 64, 128) float32 images 0..255 from the challenge .npz (`test_set`), a one-array .npz or a .npy."""
    where = str(path)
    if path.suffix not in (".npz", ".npy") or not path.is_file():
        what = "does not exist" if not path.exists() else "is not an .npz or .npy file"
        raise DataError(
            f"--data {where} {what}; pass the challenge .npz (with test_set) or a .npy of shape (N, 64, 128)"
        )
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as npz:
                if "test_set" in npz.files:
                    key = "test_set"
                elif len(npz.files) == 1:
                    key = npz.files[0]
                else:
                    raise DataError(
                        f"--data {where} has no test_set (keys: {', '.join(npz.files) or 'none'}); expected "
                        "the challenge layout (test_set (N, 64, 128)) or a single (N, 64, 128) array"
                    )
                arr = npz[key]
                where = f"{where}[{key}]"
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"--data {where} cannot be read ({detail}); expected float images (N, 64, 128) saved with "
            "np.save / np.savez (object arrays are refused)"
        ) from None
    from marstune.data.mars import validate_test_set

    try:
        validate_test_set(arr, where)
    except Exception as exc:
        raise (translate(exc) or exc) from None
    if len(arr) == 0:
        raise DataError(f"--data {where} holds no images; expected (N, 64, 128) with N >= 1")
    return np.ascontiguousarray(arr, dtype=np.float32)


def predict_labels(model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """(N, 64, 128) uint8 labels: scaled as in training (x / 255), batched, arg-max per pixel."""
    labels = np.empty(images.shape, dtype=np.uint8)
    for start in range(0, len(images), CHUNK):
        x = images[start : start + CHUNK, ..., None] / np.float32(255.0)  # (n, 64, 128, 1)
        probs = model.predict(x, batch_size=batch_size, verbose=0)  # (n, 64, 128, K)
        labels[start : start + CHUNK] = np.argmax(probs, axis=-1)
    return labels


def csv_header(pixels: int) -> str:
    return "id," + ",".join(map(str, range(pixels))) + "\n"


def write_submission(path: Path, labels: np.ndarray, inputs: Sequence[Path] = ()) -> None:
    """The challenge CSV, written atomically (an interrupted write leaves no half file).

    Single-digit labels (every model here: 5 classes) are turned into text by numpy in one step, a row of
    ASCII digits and commas per image; anything else falls back to np.savetxt.
    """
    n = len(labels)
    flat = labels.reshape(n, -1)

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            handle.write(csv_header(flat.shape[1]).encode())
            if n and int(flat.max()) <= 9:
                text = np.empty((n, 2 * flat.shape[1]), dtype=np.uint8)
                text[:, 0::2] = flat + ord("0")
                text[:, 1::2] = ord(",")
                text[:, -1] = ord("\n")
                for i in range(n):  # one write per image row; the pixels were formatted above
                    handle.write(f"{i},".encode())
                    handle.write(text[i].tobytes())
            else:
                np.savetxt(handle, np.column_stack([np.arange(n), flat]), fmt="%d", delimiter=",")

    replace_atomically(path, write, inputs=inputs)
