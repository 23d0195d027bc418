"""Engines run a study: they turn the spec's space into their framework's form, ask it for
configurations, call `tuning.objective.evaluate`, and write every trial into the one Optuna storage.

Contract of an engine module: `run(spec, storage_url, options) -> RunSummary`. It may only be imported
when it is used (each engine is the only file importing its framework).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

from marstune.tuning.errors import MissingExtraError, SpecError


@dataclass(frozen=True)
class RunOptions:
    threads: int = 0  # TF threads for this process (0: the spec's setting)
    quiet: bool = False  # no per-epoch progress lines
    create: bool = True  # create/initialise the study (tune run) or only join it (tune worker)
    extra: tuple[tuple[str, Any], ...] = ()  # engine-specific flags (address, cpus/gpus per trial ...)

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.extra).get(key, default)


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


class Engine(Protocol):
    def run(self, spec: Any, storage_url: str, options: RunOptions) -> RunSummary: ...


# name -> (module, the samplers it offers, the pip line for its extra)
ENGINES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "optuna": ("marstune.tuning.engines._optuna", ("cmaes", "gp", "grid", "qmc", "random", "tpe"), ""),
    "keras-tuner": (
        "marstune.tuning.engines._keras_tuner",
        ("bayes", "grid", "hyperband", "random"),
        "pip install 'keras-tuner>=1.4.7' tensorboard scikit-learn",
    ),
    # Ray Tune's OptunaSearch over the same storage; grid stays with optuna (a queue there, not a sampler).
    "ray": (
        "marstune.tuning.engines._ray",
        ("cmaes", "gp", "qmc", "random", "tpe"),
        "pip install 'tune[ray]'",
    ),
}


def check_pair(engine: str, sampler: str) -> None:
    """Refuse an engine/sampler pair that does not exist, before any training, listing the valid pairs."""
    if engine not in ENGINES:
        raise SpecError(f"unknown engine {engine!r}; choose one of {', '.join(sorted(ENGINES))}")
    samplers = ENGINES[engine][1]
    if sampler not in samplers:
        pairs = "; ".join(f"{e}: {', '.join(s)}" for e, (_, s, _) in sorted(ENGINES.items()))
        raise SpecError(f"the {engine} engine has no sampler {sampler!r}; valid pairs are {pairs}")


def load_engine(name: str) -> Engine:
    module, _, pip_line = ENGINES[name]
    try:
        return importlib.import_module(module)  # type: ignore[return-value]
    except ImportError as exc:
        raise MissingExtraError(
            f"the {name} engine needs {exc.name}, which is not installed: {pip_line}"
        ) from None
