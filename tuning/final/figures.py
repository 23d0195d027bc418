"""Figures of the final run (loss and mIoU curves, example panels) and the prediction overlays.

matplotlib is imported inside the functions that draw (Agg: files only, no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from marstune.tuning.constants import CLASS_COLOURS, CLASS_NAMES, class_label

# The class colours (constants.CLASS_COLOURS) as an RGB lookup table for label images.
LEGEND = tuple(zip(CLASS_NAMES, CLASS_COLOURS, strict=True))
RGB = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in CLASS_COLOURS], dtype=np.uint8)
LOSSES = ("d_loss", "g_loss", "seg_loss", "adv_loss")


def colourize(labels: np.ndarray) -> np.ndarray:
    """(..., H, W) labels -> (..., H, W, 3) uint8 RGB with the class colours."""
    return RGB[np.clip(labels, 0, len(RGB) - 1)]


def overlay(images: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend class colours over grey images: (N, H, W) 0..255 and (N, H, W) labels -> (N, H, W, 3) uint8."""
    grey = np.clip(images, 0, 255).astype(np.float32)[..., None]
    return ((1 - alpha) * grey + alpha * colourize(labels)).astype(np.uint8)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def loss_curves(history: Sequence[dict[str, Any]], path: Path) -> None:
    """The four Pix2Pix losses by epoch, training and validation, one panel each."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    for ax, key in zip(axes.ravel(), LOSSES, strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            xs, ys = _series(history, prefix + key)
            if xs:
                ax.plot(xs, ys, style, marker="o", markersize=3, label="validation" if prefix else "training")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    fig.suptitle("Pix2Pix losses (g_loss = adv_loss + lambda x seg_loss)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def miou_curves(histories: dict[str, Sequence[dict[str, Any]]], path: Path) -> None:
    """Validation (and training) mIoU by epoch of every model trained in the run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, history in histories.items():
        xs, ys = _series(history, "val_miou")
        line = ax.plot(xs, ys, marker="o", markersize=3, label=f"{name} validation")[0]
        xs, ys = _series(history, "miou")
        ax.plot(xs, ys, "--", color=line.get_color(), alpha=0.6, label=f"{name} training")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean IoU (classes 1..4)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def example_panels(
    images: np.ndarray, truth: np.ndarray, predictions: dict[str, np.ndarray], path: Path
) -> None:
    """One row per image: image | ground truth | each model's prediction, with the class legend."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    columns = [
        ("image", None),
        ("ground truth", truth),
        *((f"{k} prediction", v) for k, v in predictions.items()),
    ]
    rows = len(images)
    fig, axes = plt.subplots(
        rows, len(columns), figsize=(3.2 * len(columns), 1.75 * rows + 0.8), squeeze=False
    )
    for r in range(rows):
        for c, (title, labels) in enumerate(columns):
            ax = axes[r, c]
            if labels is None:
                ax.imshow(images[r], cmap="gray", vmin=0, vmax=255)
            else:
                ax.imshow(colourize(labels[r]))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=10)
    handles = [
        Patch(color=CLASS_COLOURS[i], label=f"{i} {class_label(n)}") for i, n in enumerate(CLASS_NAMES)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_overlays(images: np.ndarray, labels: np.ndarray, folder: Path, chunk: int = 256) -> None:
    """<folder>/<id>.png per image: the grey image beside its colour overlay (PNG via Pillow)."""
    from PIL import Image

    for start in range(0, len(images), chunk):  # chunks: 10,000 RGB pairs at once would take ~1 GB
        grey = np.clip(images[start : start + chunk], 0, 255)
        pairs = np.concatenate(
            [
                np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1),
                overlay(grey, labels[start : start + chunk]),
            ],
            axis=2,
        )  # (n, H, 2W, 3)
        for i, pair in enumerate(pairs):
            Image.fromarray(pair).save(folder / f"{start + i}.png")
