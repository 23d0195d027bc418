"""Which kept model `tune export-best` ships: one that loads, never a damaged file.

A kept model can be damaged after it was written (truncated by hand, a disk fault, a copy cut short).
Each candidate is compared with the sha256 recorded when it was kept (a file swapped in from another
trial loads fine but is not this trial's model), then loaded the way every reader loads it
(train/saved.py: a .keras archive, safe_mode=True, the right shapes) before it is shipped; a damaged one
is passed over for the next kept model, best first, and the export then names that model's trial, so
the configuration and the weights always agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from marstune.tuning.errors import ModelError
from marstune.tuning.study.artifacts import KeptModel, kept_of_study


@dataclass
class Choice:
    """The kept model to ship (None: none is usable) and the damaged ones passed over (trial, why)."""

    model: KeptModel | None
    damaged: list[tuple[int, str]] = field(default_factory=list)

    def damaged_line(self) -> str:
        return "; ".join(f"trial {trial}: {why}" for trial, why in self.damaged)


# load_saved_model's message: "kept model <its temporary copy> <what is wrong>; <the fix>"
_MODEL_FAULT = re.compile(r"^kept model \S+ (?P<why>.*?); [^;]*$")


def why_unusable(candidate: KeptModel) -> str | None:
    """None when the kept model is the file that was kept for its trial and loads as a segmentation
    model, else the reason in a few words."""
    from marstune.tuning.train.devices import native_noise_filtered
    from marstune.tuning.train.saved import kept_model

    if fault := candidate.fault():
        return fault
    try:
        # TensorFlow's start-up lines are not ours to show
        with native_noise_filtered(), kept_model(candidate.path):
            return None
    except ModelError as exc:
        found = _MODEL_FAULT.match(str(exc))
        return found.group("why") if found else "it does not load as a Keras model"


def usable_model(url: str, study: str, best_trial: int, *, only_best: bool = False) -> Choice | None:
    """The first kept model that loads: the best trial's, then (unless `only_best`) the other kept
    models, best first. None when the study kept no model at all."""
    kept = kept_of_study(url, study)
    ordered = [k for k in kept if k.trial == best_trial]
    if not only_best:
        ordered += [k for k in kept if k.trial != best_trial]
    if not ordered:
        return None
    choice = Choice(None)
    for candidate in ordered:
        why = why_unusable(candidate)
        if why is None:
            choice.model = candidate
            return choice
        choice.damaged.append((candidate.trial, why))
    return choice
