"""Example predictions of the best configuration: retrain it briefly, segment a few held-out images.

Trials keep no weights (a study of 100 U-Nets would fill the disk), so the report trains the best
configuration again on the study's data (a few images, a few epochs): a picture of what the
configuration learns, not the trial's exact model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Class colours for masks: background black, soil brown, bedrock grey, sand tan, big rock red.
PALETTE = ("#000000", "#8c564b", "#9a9a9a", "#e6c47a", "#d62728")


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
    from marstune.tuning.devices import configure
    from marstune.tuning.objective import prepare_data
    from marstune.tuning.spec import spec_from_stored

    raw = {**spec_raw, "objective": {**spec_raw.get("objective", {}), "kind": "unet"}}
    raw["train"] = {**raw.get("train", {}), "max_items": max(items, 8), "epochs": epochs}
    path = (raw.get("data") or {}).get("path")
    if path and not Path(path).exists():
        return (
            f"the study's data file {path} is not here (run the report where the study ran, or --no-examples)"
        )
    spec = spec_from_stored(raw)
    setup = configure(threads or spec.train.threads, spec.train.mixed_precision)
    import keras
    from marstune.data.augment import make_dataset
    from marstune.models.metrics import mean_iou
    from marstune.models.unet import CONFIG_KEYS, build_unet

    data = prepare_data(spec)
    keras.utils.set_random_seed(spec.train.seed + trial)  # the trial's own seed (tuning.objective)
    model = build_unet({k: config[k] for k in CONFIG_KEYS})
    model.compile(
        optimizer=keras.optimizers.Adam(float(config.get("learning_rate", spec.train.learning_rate))),
        loss="sparse_categorical_crossentropy",
        jit_compile=setup.jit_compile,
    )
    batch = min(int(config.get("batch_size", spec.train.batch_size)), max(1, len(data.x_train)))
    train = make_dataset(
        data.x_train, data.y_train, batch, training=True, seed=spec.train.seed, augment=spec.train.augment
    )
    model.fit(train, epochs=epochs, verbose=0, shuffle=False)  # the tf.data pipeline shuffles (seeded)
    val = make_dataset(data.x_val, data.y_val, batch, training=False, seed=0)
    predicted = np.argmax(model.predict(val, verbose=0), axis=-1).astype(np.uint8)
    k = min(samples, len(data.x_val))
    return Examples(
        images=data.x_val[:k],
        truth=data.y_val[:k],
        predicted=predicted[:k],
        miou=float(mean_iou(data.y_val, predicted)),
        trained_on=len(data.x_train),
        epochs=epochs,
        source=data.source,
        config={k: config[k] for k in CONFIG_KEYS},
    )


def caption(ex: Examples) -> str:
    return (
        f"Best configuration {ex.config} retrained for {ex.epochs} epoch(s) on {ex.trained_on} images of "
        f"{ex.source}; held-out mIoU of this quick run {ex.miou:.3f}."
    )


def render(ex: Examples, path: Path) -> Path:
    """image | truth | prediction, one row per held-out image, with a class legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from marstune.tuning.report_data import CLASS_NAMES
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    cmap = ListedColormap(PALETTE)
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
    handles = [Patch(color=PALETTE[i], label=name.replace("_", " ")) for i, name in enumerate(CLASS_NAMES)]
    fig.legend(handles=handles, loc="lower center", ncol=5, frameon=False)
    fig.suptitle(
        f"Example predictions (quick retrain: {ex.epochs} epoch(s), {ex.trained_on} images, "
        f"held-out mIoU {ex.miou:.3f})",
        x=0.01,
        ha="left",
        fontweight="bold",
    )
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    fig.savefig(path, dpi=110, facecolor="white")
    plt.close(fig)
    return path
