"""Target 2: the service's own cost. One trial of a fixed config through the engine that `tune run` uses
(`optuna_engine.run`: storage, claim, heartbeat, per-epoch reports and pruning checks, user
attributes) vs the same training done by a bare `model.fit` on the same arrays in the same process.

Both sides build, compile and fit the same model (same builder, optimizer, loss, metric, tf.data
pipeline, seed, threads) and are timed from "start this config" to "fit returned"; images/second =
epochs x training images / seconds. One warm-up of each comes first (TensorFlow start-up, data
generation), then the two alternate so that a change in machine load hits both alike.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from bench._common import Outcome, at_least, make_spec, median, say, section, sqlite_url, workdir

CONFIG = {"base_filters": 16, "levels": 4, "kernel": 3, "dropout": 0.2, "activation": "relu"}
QUICK_CONFIG = {"base_filters": 8, "levels": 2, "kernel": 3, "dropout": 0.2, "activation": "relu"}
THREADS = 2  # fixed TF threads for both sides (the whole machine)


def _spec(name: str, quick: bool) -> Any:
    config = QUICK_CONFIG if quick else CONFIG
    return make_spec(
        name,
        {
            # A one-point space: the grid sampler enqueues exactly this config, every study the same.
            "space": {"kernel": {"type": "categorical", "choices": [config["kernel"]]}},
            "train": {
                "epochs": 1 if quick else 2,
                "max_items": 32 if quick else 96,
                "batch_size": 16,
                "patience": 0,
                "threads": THREADS,
            },
            "search": {"sampler": "grid", "pruner": "none", "trials": 1},
        },
        baseline=config,
    )


def service_trial(spec: Any, url: str) -> tuple[float, float, dict[str, Any]]:
    """Wall and CPU seconds of `engine.run` for a one-trial study (study creation included), and the
    trial's attrs."""
    from marstune.tuning.search.engines import OptunaOptions
    from marstune.tuning.search.engines import optuna_engine as engine
    from marstune.tuning.study.storage import open_storage

    started, cpu = time.perf_counter(), time.process_time()
    summary = engine.run(spec, url, OptunaOptions(threads=THREADS, quiet=True))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if summary.finished != 1 or summary.failed_here:
        raise RuntimeError(f"the service trial did not complete: {summary}")
    storage = open_storage(url)
    trial = storage.get_all_trials(storage.get_study_id_from_name(spec.study), deepcopy=False)[0]
    return seconds, cpu, dict(trial.user_attrs)


def bare_fit(spec: Any) -> tuple[float, float]:
    """The same training without the service: build, compile, fit; wall and CPU seconds."""
    from marstune.tuning.train.devices import configure

    setup = configure(THREADS, spec.train.mixed_precision)
    import keras

    from marstune.data.augment import make_dataset
    from marstune.models.metrics import MeanIoU
    from marstune.models.unet import build_unet
    from marstune.tuning.train.data import prepare_data
    from marstune.tuning.train.recipe import make_optimizer

    data = prepare_data(spec)
    started, cpu = time.perf_counter(), time.process_time()
    keras.backend.clear_session()  # as the objective does before every trial
    gc.collect()
    keras.utils.set_random_seed(spec.train.seed)
    model = build_unet(spec.baseline)
    model.compile(
        optimizer=make_optimizer(spec.train.optimizer, spec.train.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=[MeanIoU()],
        jit_compile=setup.jit_compile,
    )
    seed, batch = spec.train.seed, spec.train.batch_size
    train = make_dataset(
        data.x_train, data.y_train, batch, training=True, seed=seed, augment=spec.train.augment
    )
    val = make_dataset(data.x_val, data.y_val, batch, training=False, seed=seed)
    model.fit(train, validation_data=val, epochs=spec.train.epochs, verbose=0, shuffle=False)
    return time.perf_counter() - started, time.process_time() - cpu


def run(quick: bool = False) -> Outcome:
    from marstune.tuning.train.data import prepare_data
    from marstune.tuning.train.devices import configure

    section("TARGET 2: service overhead")
    configure(THREADS)  # before any TensorFlow op: both sides run with the same thread pools
    reps = 1 if quick else 9  # wall time of identical fits varies by +-15% here: the median needs pairs
    probe = _spec("overhead-probe", quick)
    data = prepare_data(probe)
    images = probe.train.epochs * len(data.x_train)
    say(
        f"config {probe.baseline}; {len(data.x_train)} training / {len(data.x_val)} validation images "
        f"(train.max_items={probe.train.max_items}), {probe.train.epochs} epochs, batch "
        f"{probe.train.batch_size}, {THREADS} TF threads, SQLite storage; {reps} pairs (bare, service) in "
        "alternating order after one warm-up of each; the figure is the median of the pairs' ratios, "
        "so a change of machine load between pairs cancels out"
    )
    ratios: list[float] = []
    cpu_ratios: list[float] = []  # CPU seconds: the same work, less sensitive to what else runs
    outside: list[float] = []  # engine.run time outside `evaluate`: storage, claim, study creation
    with workdir("overhead") as folder:
        url = sqlite_url(folder)
        service_trial(_spec("overhead-warmup", quick), url)
        bare_fit(probe)
        for rep in range(reps):
            wall: dict[str, float] = {}
            cpu: dict[str, float] = {}
            for side in ("bare", "service") if rep % 2 == 0 else ("service", "bare"):
                if side == "bare":
                    wall[side], cpu[side] = bare_fit(probe)
                    continue
                wall[side], cpu[side], attrs = service_trial(_spec(f"overhead-{rep}", quick), url)
                outside.append(wall[side] - float(attrs.get("wall_seconds", 0.0)))
                fit_ips = float(attrs.get("images_per_second", 0.0))
            ratios.append(wall["bare"] / wall["service"])
            cpu_ratios.append(cpu["bare"] / cpu["service"])
            say(
                f"  pair {rep + 1}: bare model.fit {_rate(wall['bare'], images)}; service trial "
                f"{_rate(wall['service'], images)} (its fit alone {fit_ips:.1f} images/s; engine time "
                f"outside the objective {outside[-1]:.2f} s) -> {ratios[-1]:.3f}x; CPU seconds "
                f"{cpu['bare']:.1f} vs {cpu['service']:.1f} -> {cpu_ratios[-1]:.3f}x"
            )
    say(
        f"service / bare images per second, per pair: {', '.join(f'{r:.3f}' for r in ratios)}; "
        f"images per CPU-second, median {median(cpu_ratios):.3f}x; "
        f"engine time outside the objective: median {median(outside):.2f} s per trial"
    )
    return at_least(
        2,
        "service overhead, images/s of a trial through the engine / bare model.fit, median of pairs "
        f"(per CPU-second: {median(cpu_ratios):.2f}x)",
        median(ratios),
        0.95,
        note="the service adds more than 5% to a trial of this size; see the engine time outside the "
        "objective above (study creation, storage writes) vs the time inside it",
    )


def _rate(seconds: float, images: int) -> str:
    return f"{seconds:6.2f} s = {images / seconds:6.1f} images/s"
