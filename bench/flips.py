"""Should make_dataset's flips be `keras.layers.RandomFlip`? The three conditions, measured side by side.

    python -m bench.flips [--quick]

"ours" is `make_dataset(..., augment=True)`: stateless flips keyed on a seeded random stream. "keras" is
the same pipeline without augmentation followed by two `keras.layers.RandomFlip` layers ("horizontal",
then "vertical": one layer in "horizontal_and_vertical" mode draws ONE coin per image for both axes, so
it would only ever give no flip or a 180-degree turn) on `{"images": x, "segmentation_masks": y}`.
Its map runs in parallel (as ours does) or sequentially.

(a) the same flip per pair: images are 50 x their mask plus a marker, so alignment is checkable
    everywhere, and the marker tells which of the four flips happened;
(b) reproducible from the seed (fresh pipelines with one seed give the same epochs) while epochs differ;
(c) not slower: pipeline images/s, and a baseline U-Net fit (16-32-64-128, batch 32, 2 epochs of 320
    images, one TensorFlow thread), the sides alternating so machine load hits both alike.
Every figure is measured in this run; the ratios are keras / ours (above 1: keras is faster).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")  # read when TensorFlow loads: one thread each way
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from bench._common import machine_state, median, say, section
from marstune.data.mars import MarsData
from marstune.data.synthetic import synthetic_data

H, W = 64, 128
BASELINE = {"base_filters": 16, "levels": 4, "kernel": 3, "dropout": 0.2, "activation": "relu"}
Pipeline = Callable[[np.ndarray, np.ndarray, int, int], tf.data.Dataset]


def ours(images: np.ndarray, labels: np.ndarray, batch: int, seed: int) -> tf.data.Dataset:
    from marstune.data.augment import make_dataset

    return make_dataset(images, labels, batch, training=True, seed=seed)


def keras_flips(parallel: bool) -> Pipeline:
    def pipeline(images: np.ndarray, labels: np.ndarray, batch: int, seed: int) -> tf.data.Dataset:
        import keras

        from marstune.data.augment import make_dataset

        left_right = keras.layers.RandomFlip("horizontal", seed=seed)
        up_down = keras.layers.RandomFlip("vertical", seed=seed + 1)

        def flip(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            pair = {"images": x, "segmentation_masks": tf.expand_dims(y, -1)}  # masks need a channel
            pair = up_down(left_right(pair, training=True), training=True)
            return pair["images"], tf.cast(pair["segmentation_masks"][..., 0], tf.int32)  # back from float

        plain = make_dataset(images, labels, batch, training=True, seed=seed, augment=False)
        calls = tf.data.AUTOTUNE if parallel else None
        return plain.map(flip, num_parallel_calls=calls).prefetch(tf.data.AUTOTUNE)

    return pipeline


SIDES: dict[str, Pipeline] = {
    "ours": ours,
    "keras, parallel map": keras_flips(parallel=True),
    "keras, sequential map": keras_flips(parallel=False),
}
FIT_SIDES = ("ours", "keras, sequential map")  # the fit is timed for the keras side that passes (b)


def marked_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """image = 50 * mask, plus one marker pixel (label 4) per pair off the centre lines."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (n, H, W), dtype=np.uint8)
    labels[np.arange(n), rng.integers(0, H // 2 - 1, n), rng.integers(0, W // 2 - 1, n)] = 4
    return (labels * 50.0).astype(np.float32), labels


def epoch(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def check(name: str, pipeline: Pipeline, fresh: int) -> bool:
    images, labels = marked_pairs(48)
    ds = pipeline(images, labels, 8, 5)
    first, second = epoch(ds), epoch(ds)
    aligned = all(np.allclose(x[..., 0] * 255.0, y * 50.0, atol=1e-3) for x, y in (first, second))
    flips = set()
    for y in first[1]:
        source = next(i for i in range(len(labels)) if sorted(labels[i].ravel()) == sorted(y.ravel()))
        (r0, c0), (r, c) = np.argwhere(labels[source] == 4)[0], np.argwhere(y == 4)[0]
        flips.add((bool(c != c0), bool(r != r0)))
    same = [np.array_equal(epoch(pipeline(images, labels, 8, 5))[1], first[1]) for _ in range(fresh)]
    differ = not np.array_equal(first[1], second[1])
    ok = aligned and len(flips) == 4 and all(same) and differ
    say(
        f"{name:>22}: (a) image and mask aligned: {aligned}, flips seen {len(flips)}/4; "
        f"(b) {sum(same)}/{fresh} fresh pipelines repeat epoch 1, epochs differ: {differ} -> "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return ok


def timed_rounds(
    names: tuple[str, ...], rounds: int, measure: Callable[[str], float]
) -> dict[str, list[float]]:
    """`measure(name)` for every side, `rounds` times, the order reversed every other round (ABBA), so
    neither side always runs first after the other or under the same phase of the machine's load."""
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            results[name].append(measure(name))
    return results


def ratio(numerator: list[float], denominator: list[float]) -> str:
    """The ratio of medians, then each round's own ratio (the spread shows how much load noise there is)."""
    each = ", ".join(f"{a / b:.2f}" for a, b in zip(numerator, denominator, strict=True))
    return f"{median(numerator) / median(denominator):.2f} (rounds: {each})"


def pipeline_rate(pipeline: Pipeline, data: MarsData, epochs: int) -> float:
    images, labels = data.images, data.labels
    ds = pipeline(images, labels, 32, 0)
    epoch(ds)  # warm-up: tracing and the cache
    started = time.perf_counter()
    for _ in range(epochs):
        for _batch in ds:
            pass
    return epochs * len(images) / (time.perf_counter() - started)


def fit_seconds(pipeline: Pipeline, data: MarsData, epochs: int) -> float:
    import keras

    from marstune.models.losses import build_loss
    from marstune.models.metrics import MeanIoU
    from marstune.models.unet import build_unet

    keras.utils.set_random_seed(0)
    model = build_unet(BASELINE)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=build_loss("crossentropy"), metrics=[MeanIoU()])
    ds = pipeline(data.images, data.labels, 32, 0)
    started = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=0)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.flips", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smallest sizes: a smoke test, not figures")
    quick = parser.parse_args().quick

    tf.config.threading.set_intra_op_parallelism_threads(1)  # the env vars above, made certain
    tf.config.threading.set_inter_op_parallelism_threads(1)
    say(f"start: {machine_state()}; TensorFlow {tf.__version__}, one thread each way")
    section("(a) same flip per pair, (b) reproducible by seed, epochs differ")
    for name, pipeline in SIDES.items():
        check(name, pipeline, fresh=2 if quick else 5)

    n, rounds = (64, 2) if quick else (320, 4)
    data = synthetic_data(n_train=n, n_test=0, seed=0)
    passes = 5 if quick else 30
    section(f"(c) pipeline images/s: {n} images, batch 32, {passes} epochs, {rounds} rounds")
    rates = timed_rounds(tuple(SIDES), rounds, lambda name: pipeline_rate(SIDES[name], data, passes))
    for name in SIDES:
        say(f"{name:>22}: {median(rates[name]):9.0f} images/s  ratio {ratio(rates[name], rates['ours'])}")

    epochs = 1 if quick else 2
    section(f"(c) baseline U-Net fit: {n} images, batch 32, {epochs} epochs, {rounds} rounds (seconds)")
    fit_seconds(SIDES["ours"], data, 1)  # warm-up: the process's one-time costs hit neither side
    seconds = timed_rounds(FIT_SIDES, rounds, lambda name: fit_seconds(SIDES[name], data, epochs))
    for name in FIT_SIDES:
        each = ", ".join(f"{s:.1f}" for s in seconds[name])
        speed = ratio(seconds["ours"], seconds[name])  # above 1: keras is faster
        say(f"{name:>22}: {median(seconds[name]):6.1f} s (each: {each})  ratio {speed}")
    say(f"end: {machine_state()}")


if __name__ == "__main__":
    main()
