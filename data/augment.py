"""The tf.data input pipeline: scaling, seeded shuffling and random flips of image and mask together.

TensorFlow is imported inside make_dataset so that importing `data` stays cheap (the CLI's --help, the
cleaner and the loaders never load it).

Why the flips are not `keras.layers.RandomFlip` (Keras 3.15.1, TF 2.21, measured by `python -m
bench.flips` on 2026-11-30: 320 synthetic images, batch 32, one TensorFlow thread, 4 alternating rounds):
- same flip per pair: yes, on `{"images": x, "segmentation_masks": y[..., None]}`, but it takes two
  layers ("horizontal", "vertical"): one "horizontal_and_vertical" layer draws one coin per image for both
  axes (only no flip or a 180-degree turn), and masks come back float32 (the layer casts every input).
- reproducible from the seed: NO with a parallel map. The layers' SeedGenerator is a variable that
  concurrent map calls read and then advance, so fresh pipelines with one seed repeated epoch 1 in 0-1 of
  5 tries (ours: 5 of 5). Only a sequential map (num_parallel_calls=None) is reproducible.
- not slower: NO. Pipeline images/s were 0.48x ours both ways (parallel 2,491, sequential 2,524, ours
  5,233); a baseline U-Net fit (16-32-64-128, 2 epochs) took 0.91x ours' speed (68.7 s vs 62.8 s;
  rounds 0.80-1.08 on a shared, loaded machine: the model dominates there, the pipeline shows the cost).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from marstune.data.mars import IMAGE_SHAPE, NUM_CLASSES, DataError

if TYPE_CHECKING:
    import tensorflow as tf


def _check(images: np.ndarray, labels: np.ndarray, batch_size: int) -> None:
    n = len(images)
    if images.shape != (n, *IMAGE_SHAPE) or labels.shape != images.shape or n < 1:
        raise DataError(
            f"dataset: images {images.shape} and labels {labels.shape}; "
            f"expected two (N, 64, 128) arrays of the same N >= 1 pairs"
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DataError(
            f"dataset: labels are {labels.dtype} with values {labels.min()}..{labels.max()}; "
            f"expected integer class ids 0..{NUM_CLASSES - 1} (MarsData.labels)"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise DataError(f"dataset: batch_size is {batch_size!r}; expected a positive integer")


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    training: bool,
    seed: int,
    augment: bool = True,
    cache: bool = True,
) -> tf.data.Dataset:
    """Batches of x (B, 64, 128, 1) float32 in 0..1 and y (B, 64, 128) int32 class ids.

    training=True shuffles (seeded, a new order each epoch) and, with augment=True, flips each pair
    left-right and up-down independently with p=0.5, the same flip on image and mask. The flips come from
    stateless ops keyed on a seeded random stream that is redrawn each epoch, so a run is reproducible
    from `seed` while epochs see different flips. Evaluation (training=False) keeps the input order.
    """
    import tensorflow as tf

    images, labels = np.asarray(images), np.asarray(labels)
    _check(images, labels, batch_size)
    # Held once in memory as compact arrays (float32 images, uint8 masks); scaling happens in the graph.
    ds = tf.data.Dataset.from_tensor_slices((images.astype(np.float32, copy=False), labels.astype(np.uint8)))
    ds = ds.map(_prepare, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache()  # before shuffling and augmentation, which must differ per epoch
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training and augment:
        # One (2,) stateless seed per batch; rerandomize_each_iteration gives each epoch new draws.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(_flip_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _prepare(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    import tensorflow as tf

    x = tf.expand_dims(image / 255.0, axis=-1)  # (64, 128, 1) float32 in 0..1
    y = tf.cast(label, tf.int32)  # (64, 128) class ids for sparse categorical losses
    return x, y


def _flip_batch(batch: tuple[tf.Tensor, tf.Tensor], seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    import tensorflow as tf

    x, y = batch  # (B, 64, 128, 1), (B, 64, 128)
    flips = tf.random.stateless_uniform([tf.shape(x)[0], 2], seed=seed) < 0.5  # (B, 2): [left-right, up-down]
    lr, ud = flips[:, 0], flips[:, 1]
    # tf.where with a per-pair condition applies the same choice to image and mask.
    x = tf.where(lr[:, None, None, None], tf.reverse(x, axis=[2]), x)
    y = tf.where(lr[:, None, None], tf.reverse(y, axis=[2]), y)
    x = tf.where(ud[:, None, None, None], tf.reverse(x, axis=[1]), x)
    y = tf.where(ud[:, None, None], tf.reverse(y, axis=[1]), y)
    return x, y
