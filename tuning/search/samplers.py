"""Name -> Optuna sampler / pruner factories. Adding a sampler is one line in SAMPLERS.

Optuna does not declare what some samplers need (QMC: scipy, CMA-ES: cmaes, GP: torch); each factory
checks its dependency first so a missing one is refused with the line that installs it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING

from marstune.tuning.errors import MissingExtraError, UsageError

if TYPE_CHECKING:
    import optuna

SamplerFactory = Callable[[int], "optuna.samplers.BaseSampler"]

# Samplers that need a package Optuna does not install: name -> (module, pip line).
_NEEDS = {
    "qmc": ("scipy", "pip install scipy"),
    "cmaes": ("cmaes", "pip install cmaes"),
    "gp": ("torch", "pip install 'marstune[gp]'  (torch==2.13.0, CPU build)"),
}


def _tpe(seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    # multivariate TPE models interactions (levels x base_filters decide the model size together).
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5)


def _random(seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _gp(seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=5)


def _cmaes(seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    # CMA-ES handles only numbers; categoricals fall back to random sampling (warn_independent_sampling off).
    return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=5, warn_independent_sampling=False)


def _qmc(seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.QMCSampler(
        seed=seed, qmc_type="sobol", scramble=True, warn_independent_sampling=False
    )


# Grid studies are driven by enqueuing every grid point (GridSampler may repeat points under
# concurrency); the sampler only has to exist, and never samples because the queue feeds every trial.
SAMPLERS: dict[str, SamplerFactory] = {
    "random": _random,
    "grid": _random,
    "tpe": _tpe,
    "gp": _gp,
    "cmaes": _cmaes,
    "qmc": _qmc,
}


def _median() -> optuna.pruners.BasePruner:
    import optuna

    # Give every trial 2 epochs and wait for 3 finished trials: the first epochs are noisy.
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)


def _hyperband() -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)


def _none() -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.NopPruner()


PRUNERS: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
    "median": _median,
    "hyperband": _hyperband,
    "none": _none,
}


OPTUNA_SAMPLERS = tuple(sorted(SAMPLERS))
PRUNER_NAMES = tuple(PRUNERS)
# QMC walks one low-discrepancy sequence by trial index: every process must share its scramble seed.
SHARED_SEED = ("qmc",)


def check_sampler(name: str) -> None:
    if name not in SAMPLERS:
        raise UsageError(f"unknown sampler {name!r}; choose one of {', '.join(OPTUNA_SAMPLERS)}")
    module, pip_line = _NEEDS.get(name, (None, ""))
    if module and importlib.util.find_spec(module) is None:
        raise MissingExtraError(f"the {name} sampler needs `{module}`, which is not installed: {pip_line}")


def check_pruner(name: str) -> None:
    if name not in PRUNERS:
        raise UsageError(f"unknown pruner {name!r}; choose one of {', '.join(sorted(PRUNERS))}")


def make_sampler(name: str, seed: int, stream: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler `name` for this process: `stream` (study.lifecycle.claim_seed_stream) keeps processes
    working on one study from drawing the same configurations; stream 0 keeps the spec's seed."""
    from marstune.tuning.study.lifecycle import stream_seed

    check_sampler(name)
    return SAMPLERS[name](seed if name in SHARED_SEED else stream_seed(seed, stream))


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    check_pruner(name)
    return PRUNERS[name]()
