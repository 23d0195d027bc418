"""The trial after a duplicate draws at random.

The engines refuse a sampled configuration the study already has (it would only cost a trial's compute)
and let the sampler draw again. A model-based sampler (GP: the acquisition's argmax over a mostly
discrete space) then proposes the same configuration again on the same data, 20 times in a row, and the
study stops early as if the space were exhausted. Found on the replay benchmark: GP stopped after 13 of
100 trials. One random draw after a duplicate breaks the tie; the sampler's model resumes after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


class RedrawSampler(BaseSampler):
    """`inner` for every trial, except the one after a duplicate (`redraw = True`), drawn at random."""

    def __init__(self, inner: BaseSampler, seed: int) -> None:
        self.inner = inner
        self.fallback = RandomSampler(seed=seed)
        self.redraw = False

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {} if self.redraw else self.inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {} if self.redraw else self.inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        chosen = self.fallback if self.redraw else self.inner
        return chosen.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(
        self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
        self.fallback.reseed_rng()
