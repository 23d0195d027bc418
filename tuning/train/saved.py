"""Loading a saved segmentation model: .keras archives only, safe_mode=True, the right shapes.

One owner for every load (`tune predict --model`, kept models in export, the report and the final run),
so no path can load a pickle or run a Lambda layer's code.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from marstune.tuning.constants import IMAGE_SHAPE
from marstune.tuning.errors import ModelError

if TYPE_CHECKING:
    import keras


def load_saved_model(path: Path, *, flag: str = "model", fix: str = "") -> keras.Model:
    """A segmentation model from a .keras file: (B, 64, 128, 1) images -> (B, 64, 128, K) class scores."""
    if path.suffix != ".keras":
        raise ModelError(
            f"{flag} {path} is not a .keras file (HDF5, SavedModel folders and pickles are not read); {fix}"
        )
    if not path.is_file():
        raise ModelError(f"{flag} {path} {'is a directory' if path.is_dir() else 'does not exist'}; {fix}")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{flag} {path} is not a Keras archive (a .keras file is a zip); {fix}")
    import keras

    import marstune.models.metrics  # noqa: F401  registers tune>MeanIoU, which unet.keras names in its metrics

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        text = str(exc)
        if "Lambda" in text or "safe_mode" in text:
            raise ModelError(
                f"{flag} {path} holds a Lambda layer (Python code) and is refused: models are loaded with "
                f"safe_mode=True so a model file never runs code; {fix}"
            ) from None
        first = text.splitlines()[0][:200] if text else type(exc).__name__
        raise ModelError(f"{flag} {path} cannot be loaded ({first}); {fix}") from None
    inputs, outputs = tuple(model.input_shape), tuple(model.output_shape)
    if inputs[1:] != (*IMAGE_SHAPE, 1) or len(outputs) != 4 or outputs[1:3] != IMAGE_SHAPE or outputs[3] < 2:
        raise ModelError(
            f"{flag} {path} maps {inputs} to {outputs}; expected (None, 64, 128, 1) images to "
            f"(None, 64, 128, classes) scores; {fix}"
        )
    return model


@contextmanager
def kept_model(artifact: Path) -> Iterator[keras.Model]:
    """A kept model (an artifact file, stored without a suffix) loaded through load_saved_model."""
    with tempfile.TemporaryDirectory(prefix="tune-model-") as tmp:
        copy = Path(tmp) / "model.keras"  # Keras reads the format from the suffix
        copy.write_bytes(artifact.read_bytes())
        try:
            loaded = load_saved_model(copy, flag="kept model", fix="export it again or retrain the trial")
        except ModelError as exc:  # the user's file is the artifact, not our temporary copy of it
            raise ModelError(str(exc).replace(str(copy), str(artifact), 1)) from None
        yield loaded
