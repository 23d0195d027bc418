"""Engines run a study: they turn the spec's space into their framework's form, ask it for
configurations, call `search.objective.evaluate`, and write every trial into the one Optuna storage.

The contract of an engine module (tests/tuning/search/engines/test_contract.py holds every engine to it):

    run(spec, storage_url, options) -> RunSummary

- `options` is the engine's own frozen dataclass (below), a subclass of `RunOptions`.
- It creates the study or joins it through `study.lifecycle.create_or_join` (same spec, or refused),
  stops at the study's target without overshooting it, and records the baseline first.
- Every finished trial is in the storage with its params, its per-epoch validation mIoU (intermediate
  values), user attributes `config`, `engine`, `worker`, and `fail_reason` when it failed.
- A `FatalError` stops the run; any other exception fails one trial; `search.failures` stops the run
  when the study's last trials all failed (any engine, any process).
- Ctrl-C / SIGTERM stop cleanly (nothing left RUNNING by this process) and the same command resumes.
- Each engine module is the only one importing its framework, and is imported only when used.
Adding an engine: one module, one options class, one entry in ENGINES.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from marstune.tuning.errors import MissingExtraError, SpecError, UsageError
from marstune.tuning.search.samplers import OPTUNA_SAMPLERS

if TYPE_CHECKING:
    from marstune.tuning.config.space import Space
    from marstune.tuning.config.spec import Spec
    from marstune.tuning.study.lifecycle import DataInfo

KERAS_TUNER_SAMPLERS = ("bayes", "grid", "hyperband", "random")  # Keras Tuner's oracles


@dataclass(frozen=True)
class RunOptions:
    """What every engine takes."""

    threads: int = 0  # TF threads for this process (0: the spec's setting)
    quiet: bool = False  # no per-epoch progress lines
    tensorboard_dir: str | None = None  # per-trial TensorBoard logs under <dir>/trial-<n>/
    data: DataInfo | None = None  # the data the study searches on, stored when the study is created
    explicit_target: bool = False  # --trials was given: it may change an existing study's target
    mlflow: str | None = None  # --mlflow URI: each trial also an MLflow run (search/tracking.py)


@dataclass(frozen=True)
class OptunaOptions(RunOptions):
    create: bool = True  # create or join with this spec (`tune run`); False: join with the stored spec
    data_path: str | None = None  # a joining worker's own copy of the study's data (fingerprint checked)
    max_trials: int = 0  # stop after this many trials so a fresh process continues (0: no limit)
    deadline: float | None = None  # the run's end in epoch seconds, the same for recycled processes
    run_started: float | None = None  # the run's start (epoch seconds): progress times the run, not a process
    done_at_start: int | None = None  # the study's finished trials when the run started (its pace)


@dataclass(frozen=True)
class RayOptions(RunOptions):
    address: str | None = None  # a running Ray cluster (host:port or auto); None: a local one
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # fractional: 0.5 puts two trials on one GPU


def check_trial_resources(cpus: float, gpus: float) -> None:
    """What a Ray trial may reserve: CPUs > 0 and GPUs >= 0, finite (nan passes a plain `<= 0`)."""
    if not (math.isfinite(cpus) and cpus > 0 and math.isfinite(gpus) and gpus >= 0):
        raise UsageError(f"--cpus-per-trial must be > 0 and --gpus-per-trial >= 0, got {cpus:g} and {gpus:g}")


@dataclass(frozen=True)
class KerasTunerOptions(RunOptions):
    pass


@dataclass(frozen=True)
class RunSummary:
    study: str
    target: int
    finished: int  # complete + pruned in the study
    ran_here: int  # trials this process ran
    failed_here: int
    best_value: float | None
    best_number: int | None
    best_params: dict[str, Any] | None
    seconds: float
    recycle: bool = False  # stopped at its max_trials with the study unfinished: a fresh process goes on
    states: dict[str, int] = field(default_factory=dict)  # trials of the study by state, lower-case


class Engine(Protocol):
    def run(self, spec: Spec, storage_url: str, options: Any) -> RunSummary: ...


@dataclass(frozen=True)
class EngineInfo:
    module: str
    samplers: tuple[str, ...]
    options: type[RunOptions]
    pip_line: str  # how to install what it needs


ENGINES: dict[str, EngineInfo] = {
    "optuna": EngineInfo(
        "marstune.tuning.search.engines.optuna_engine", OPTUNA_SAMPLERS, OptunaOptions, "pip install optuna"
    ),
    # Ray Tune's OptunaSearch over the same storage; grid stays with optuna (a queue there, not a sampler).
    "ray": EngineInfo(
        "marstune.tuning.search.engines.ray_engine",
        tuple(s for s in OPTUNA_SAMPLERS if s != "grid"),
        RayOptions,
        "pip install 'marstune[ray]'",
    ),
    "keras-tuner": EngineInfo(
        "marstune.tuning.search.engines.keras_tuner_engine",
        KERAS_TUNER_SAMPLERS,
        KerasTunerOptions,
        "pip install 'keras-tuner>=1.4.7' tensorboard scikit-learn",
    ),
}
ALL_SAMPLERS = tuple(sorted({s for info in ENGINES.values() for s in info.samplers}))


def valid_pairs() -> str:
    return "; ".join(f"{e}: {', '.join(info.samplers)}" for e, info in sorted(ENGINES.items()))


def check_pair(engine: str, sampler: str) -> None:
    """Refuse an engine/sampler pair that does not exist, before any training, listing the valid pairs."""
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; choose one of {', '.join(sorted(ENGINES))}")
    if sampler not in ENGINES[engine].samplers:
        raise UsageError(f"the {engine} engine has no sampler {sampler!r}; valid pairs are {valid_pairs()}")


def check_space_for(engine: str, sampler: str, space: Space) -> None:
    """Refuse, before any framework loads, a space the engine would walk wrongly: Keras Tuner's grid
    walks the whole product, so it would train one configuration once per value of a loss key that only
    some losses read (the optuna grid trains it once: Space.grid)."""
    from marstune.tuning.config.space import LOSS_KEYS

    if engine == "keras-tuner" and sampler == "grid" and space.grid_size() < space.product_size():
        varied = [k for k, p in space.params.items() if k != "loss" and k in LOSS_KEYS and len(p.grid()) > 1]
        keys = ", ".join(varied)
        raise SpecError(
            f"keras-tuner's grid walks every combination, so it would train a loss once per value of "
            f"{keys}, which only some losses read; run the grid with --engine optuna (each "
            "configuration once), or use keras-tuner's random or bayes sampler"
        )


def load_engine(name: str) -> Engine:
    info = ENGINES[name]
    from marstune.tuning.train.devices import tensorflow_starting

    try:
        with tensorflow_starting():  # Keras Tuner imports TensorFlow with the module
            return importlib.import_module(info.module)  # type: ignore[return-value]
    except ImportError as exc:
        if exc.name and exc.name.startswith("marstune"):
            raise
        raise MissingExtraError(
            f"the {name} engine needs {exc.name}, which is not installed: {info.pip_line}"
        ) from None
