"""Example predictions of the best configuration: retrain it briefly, segment a few held-out images.

The best trial's own model is used when the search kept it (search.keep_models, the top K only: a study
of 100 U-Nets would fill the disk). Otherwise the report trains the best configuration again on the
study's data (a few images, a few epochs): a picture of what the configuration learns, not the trial's
exact model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from marstune.tuning.train.data import Prepared

from marstune.tuning.constants import CLASS_COLOURS, CLASS_NAMES, MODEL_KEYS, class_label

NO_DATA = "the study's data file {path} is not here (run the report where the study ran, or --no-examples)"


@dataclass(frozen=True)
class Examples:
    images: np.ndarray  # (K, 64, 128) 0..255
    truth: np.ndarray  # (K, 64, 128) class ids
    predicted: np.ndarray  # (K, 64, 128) class ids
    miou: float  # over all held-out images of the quick run
    trained_on: int
    epochs: int
    source: str
    config: dict[str, Any]


def example_predictions(
    spec_raw: dict[str, Any],
    config: dict[str, Any],
    *,
    epochs: int,
    items: int,
    trial: int = 0,
    samples: int = 4,
    threads: int = 0,
) -> Examples | str:
    """Train `config` for `epochs` on the first `items` pairs of the study's data; or why it cannot."""
    from marstune.tuning.config.spec import spec_from_stored
    from marstune.tuning.train.data import prepare_data
    from marstune.tuning.train.devices import configure

    raw = {**spec_raw, "objective": {**spec_raw.get("objective", {}), "kind": "unet"}}
    raw["train"] = {**raw.get("train", {}), "max_items": max(items, 8), "epochs": epochs}
    path = (raw.get("data") or {}).get("path")
    if path and not Path(path).exists():
        return NO_DATA.format(path=path)
    spec = spec_from_stored(raw)
    setup = configure(threads or spec.train.threads, spec.train.mixed_precision)
    from marstune.tuning.train import recipe as training

    data = prepare_data(spec)
    recipe = training.Recipe.of(spec, config, setup)
    training.fresh_graph(setup, spec.train.seed + trial)  # the trial's own seed (search/objective.py)
    model, _ = training.compile_unet(config, recipe, data)
    training.fit(model, data, recipe, [])
    predicted = training.predict_labels(model, data.x_val, recipe.batch_size)
    return _examples(data, predicted, config, epochs, samples)


def from_kept_model(
    spec_raw: dict[str, Any], config: dict[str, Any], model: Path, *, samples: int = 4, threads: int = 0
) -> Examples | str:
    """The best trial's own model (its best epoch, kept by the search) on the study's validation split."""
    from marstune.tuning.config.spec import spec_from_stored
    from marstune.tuning.train.data import prepare_data
    from marstune.tuning.train.devices import configure

    path = (spec_raw.get("data") or {}).get("path")
    if path and not Path(path).exists():
        return NO_DATA.format(path=path)
    spec = spec_from_stored({**spec_raw, "objective": {**spec_raw.get("objective", {}), "kind": "unet"}})
    configure(threads or spec.train.threads, spec.train.mixed_precision)
    from marstune.tuning.train.recipe import predict_labels
    from marstune.tuning.train.saved import kept_model

    data = prepare_data(spec)
    with kept_model(model) as loaded:
        predicted = predict_labels(loaded, data.x_val, spec.train.batch_size)
    return _examples(data, predicted, config, 0, samples)  # epochs 0: the trial's own, not a retraining


def _examples(
    data: Prepared, predicted: np.ndarray, config: dict[str, Any], epochs: int, samples: int
) -> Examples:
    from marstune.models.metrics import mean_iou

    k = min(samples, len(data.x_val))
    return Examples(
        images=data.x_val[:k],
        truth=data.y_val[:k],
        predicted=predicted[:k],
        miou=float(mean_iou(data.y_val, predicted)),
        trained_on=len(data.x_train),
        epochs=epochs,
        source=data.source,
        config={name: config[name] for name in MODEL_KEYS},
    )


def caption(ex: Examples) -> str:
    if ex.epochs == 0:
        return (
            f"The best trial's own model (its best epoch, kept by the search), configuration {ex.config}, on "
            f"the held-out images of {ex.source}: mIoU {ex.miou:.3f}."
        )
    return (
        f"Best configuration {ex.config} retrained for {ex.epochs} epoch(s) on {ex.trained_on} images of "
        f"{ex.source} (the trial kept no model); held-out mIoU of this quick run {ex.miou:.3f}."
    )


def render(ex: Examples, path: Path) -> Path:
    """image | truth | prediction, one row per held-out image, with a class legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    cmap = ListedColormap(CLASS_COLOURS)
    rows = len(ex.images)
    fig, axes = plt.subplots(rows, 3, figsize=(10.5, 1.9 * rows + 0.9), squeeze=False)
    for r in range(rows):
        panels = (
            (ex.images[r], {"cmap": "gray", "vmin": 0, "vmax": 255}, "image"),
            (ex.truth[r], {"cmap": cmap, "vmin": -0.5, "vmax": 4.5}, "truth"),
            (ex.predicted[r], {"cmap": cmap, "vmin": -0.5, "vmax": 4.5}, "prediction"),
        )
        for c, (arr, style, title) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(arr, interpolation="nearest", **style)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=11, fontweight="bold")
    handles = [Patch(color=CLASS_COLOURS[i], label=class_label(name)) for i, name in enumerate(CLASS_NAMES)]
    fig.legend(handles=handles, loc="lower center", ncol=5, frameon=False)
    made = "the best trial's own model" if ex.epochs == 0 else f"quick retrain: {ex.epochs} epoch(s)"
    fig.suptitle(
        f"Example predictions ({made}, {ex.trained_on} training images, held-out mIoU {ex.miou:.3f})",
        x=0.01,
        ha="left",
        fontweight="bold",
    )
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    fig.savefig(path, dpi=110, facecolor="white")
    plt.close(fig)
    return path
