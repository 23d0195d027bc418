"""`make run` fits in 5 minutes on 2 idle cores: the demo spec's worst case (every trial at the space's
dearest U-Net for every epoch, no pruning) stays within what such a machine trains in that time.

Not a timed test: it counts multiply-accumulates of the convolutions. The demo measured 341 training
CPU-seconds for ~510 G forward MACs of image-epochs (README, `make run`), ~1.5 G MACs per CPU-second
training included; 2 cores x 5 minutes = 600 CPU-seconds. DEMO_BUDGET keeps a third of that for the
start-up, the status and the export, and a margin.
"""

from __future__ import annotations

import itertools

from marstune.tuning.config.spec import load_spec
from tests.conftest import REPO

DEMO_BUDGET = 600e9  # forward MACs of every image-epoch of the demo, at most
BIG_ROCK_LOSS = "weighted_crossentropy"  # the seed's cross-entropy never learns big rock at a demo budget


def conv_macs(config: dict[str, object]) -> int:
    """Multiply-accumulates of one image through the U-Net's convolutions (64x128 input)."""
    import keras

    from marstune.models.unet import build_unet

    total = 0
    for layer in build_unet(config).layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            height, width = layer.input.shape[1:3]
        elif isinstance(layer, keras.layers.Conv2D):
            height, width = layer.output.shape[1:3]
        else:
            continue
        kh, kw, cin, cout = layer.kernel.shape
        total += height * width * kh * kw * cin * cout
    return total


def test_the_demos_worst_case_fits_five_minutes_on_two_cores() -> None:
    spec = load_spec(REPO / "studies" / "demo.yaml")
    space = spec.space.params

    def values(name: str) -> tuple[object, ...]:
        return tuple(space[name].extremes()) if name in space else (spec.baseline[name],)

    dearest = max(
        conv_macs({"base_filters": f, "levels": lv, "kernel": k, "dropout": 0.0, "activation": "relu"})
        for f, lv, k in itertools.product(values("base_filters"), values("levels"), values("kernel"))
    )
    work = spec.search.trials * spec.train.epochs * spec.data.synthetic_items * dearest
    assert work <= DEMO_BUDGET, f"{work / 1e9:.0f} G MACs"  # the old demo: 29,000 G (16 filters, 5x5)
    assert spec.loss.name == BIG_ROCK_LOSS and spec.loss.class_weight_exponent == 1.0
