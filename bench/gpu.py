"""`python -m bench gpu`: trials per hour on one GPU, for choosing the GPU defaults.

Varied one at a time from the default GPU setting (mixed float16, XLA on, the tf.data pipeline's host
cache, one trial at a time), for the baseline (16-32-64-128, kernel 3) and the largest configuration of
the space (32 filters, 5 levels, kernel 5):
- K = 1, 2, 4, 8 trials at once on the GPU (K worker processes, memory growth on, as `--workers K`);
- precision: mixed_float16, mixed_bfloat16, float32;
- XLA on and off;
- the data on the device (tf.data's copy_to_device) instead of the host cache.
Each variant trains real U-Nets on challenge-sized synthetic data (2,615 pairs) for a fixed number of
epochs in fresh processes; trials/hour = K * 3600 / the wall time of K trials run side by side.
Where no GPU exists it says so and exits 0 (`--cpu-smoke` runs every code path on the CPU at toy sizes,
for tests; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace

from bench._common import machine_state, say, section

BASELINE = {"base_filters": 16, "levels": 4, "kernel": 3, "dropout": 0.2, "activation": "relu"}
LARGEST = {"base_filters": 32, "levels": 5, "kernel": 5, "dropout": 0.2, "activation": "relu"}


@dataclass(frozen=True)
class Variant:
    label: str
    precision: str = "mixed_float16"
    xla: bool = True
    device_data: bool = False
    concurrent: int = 1


def variants() -> list[Variant]:
    base = Variant("default: fp16, XLA, host cache, K=1")
    return [
        base,
        *(replace(base, label=f"K={k} at once", concurrent=k) for k in (2, 4, 8)),
        replace(base, label="bfloat16", precision="mixed_bfloat16"),
        replace(base, label="float32", precision="float32"),
        replace(base, label="XLA off", xla=False),
        replace(base, label="data on the device", device_data=True),
    ]


def train_one(spec_json: str) -> None:
    """One trial in this process (the child side): prints {"seconds": ..., "images_per_second": ...}."""
    job = json.loads(spec_json)
    import keras
    import numpy as np
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)  # K processes share one GPU
    keras.mixed_precision.set_global_policy(job["precision"])
    from marstune.data.augment import make_dataset
    from marstune.data.synthetic import synthetic_data
    from marstune.models.unet import build_unet

    data = synthetic_data(n_train=job["items"], n_test=0, seed=0)
    train = make_dataset(data.images, data.labels, job["batch"], training=True, seed=0)
    if job["device_data"]:
        train = train.apply(tf.data.experimental.copy_to_device("/gpu:0")).prefetch(2)
    model = build_unet(job["config"])
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=job["xla"])
    started = time.perf_counter()
    model.fit(train, epochs=job["epochs"], verbose=0, shuffle=False)  # the pipeline shuffles
    seconds = time.perf_counter() - started
    images = np.float64(job["epochs"] * len(data.images))
    print(json.dumps({"seconds": seconds, "images_per_second": float(images / seconds)}))


def measure(variant: Variant, config: dict[str, object], items: int, epochs: int, batch: int) -> float:
    """Trials/hour of `variant`: K processes each training one trial at once."""
    job = {**asdict(variant), "config": config, "items": items, "epochs": epochs, "batch": batch}
    command = [sys.executable, "-m", "bench.gpu", "--child", json.dumps(job)]
    started = time.perf_counter()
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(variant.concurrent)]
    outs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - started
    if any(p.returncode != 0 for p in procs):
        raise RuntimeError(f"{variant.label}: a trial failed (exit codes {[p.returncode for p in procs]})")
    rates = [json.loads(o.strip().splitlines()[-1])["images_per_second"] for o in outs]
    say(
        f"  {variant.label:<34} {variant.concurrent * 3600 / wall:8.1f} trials/h  ({sum(rates):.0f} images/s)"
    )
    return variant.concurrent * 3600 / wall


def gpus() -> int:
    from marstune.tuning.workers.plan import detect_gpus

    return len(detect_gpus())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="toy sizes on the CPU: code paths only")
    parser.add_argument("--epochs", type=int, default=3, help="epochs a trial (default 3)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        train_one(args.child)
        return 0
    if not args.cpu_smoke and gpus() == 0:
        say("no GPU here: nothing to measure. Run `python -m bench gpu` on a machine with one.")
        return 0
    items, epochs, batch = (16, 1, 8) if args.cpu_smoke else (2615, args.epochs, 32)
    say(f"start: {machine_state()}; {items} pairs, {epochs} epochs a trial, batch {batch}")
    for name, config in (("baseline", BASELINE), ("largest", LARGEST)):
        section(f"{name} {config}")
        chosen = variants()
        if args.cpu_smoke:  # no GPU: the GPU-only switches and the bigger K are left out
            chosen = [v for v in chosen if not v.device_data and v.precision != "mixed_bfloat16"][:3]
            chosen = [replace(v, xla=False) for v in chosen]
        for variant in chosen:
            measure(variant, config, items, epochs, batch)
    say(f"end: {machine_state()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
