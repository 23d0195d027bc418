"""Re-check before export: the top K configurations of a short-budget search, trained again at a longer
budget, and the winner exported.

A search trains each trial for a few epochs, the final run for many: a short-budget ranking favours
configurations that learn fast (bench/ranking.py measures how well epoch k predicts the last epoch). So
`tune export-best --recheck K --recheck-epochs N` trains the study's K best distinct configurations for N
epochs through the same objective as the trials (the same data, split, recipe and seeds; `unet`,
`analytic` and `replay` alike) and exports the best of them. The scores are kept on the study (user
attribute `recheck`) for the report, and in the export.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marstune.tuning.config.spec import Spec, spec_from_stored
from marstune.tuning.errors import SpecError, StorageError
from marstune.tuning.search.objective import TrialContext, evaluate
from marstune.tuning.study import tables
from marstune.tuning.study.lifecycle import stored_spec_raw
from marstune.tuning.study.trial_attrs import trial_config

RECHECK_ATTR = "recheck"  # study user attribute: the last re-check's candidates and winner


@dataclass(frozen=True)
class Candidate:
    trial: int
    config: dict[str, Any]
    search_value: float  # the trial's value at the search's budget
    recheck_value: float | None = None  # the best validation mIoU at the re-check budget
    model: Path | None = None  # its best-epoch model at the re-check budget (U-Net objective only)


def top_configurations(url: str, study: str, k: int) -> list[Candidate]:
    """The study's K best completed trials with distinct configurations, best first."""
    found: list[Candidate] = []
    with tables.reading(url) as conn:
        sid = tables.study_id(conn, study)
        values = sorted(tables.completed_values(conn, sid), key=lambda nv: (-nv[1], nv[0]))
        ids = tables.trial_ids_by_number(conn, sid)
        for number, value in values:
            tid = ids[number]
            config = trial_config(tables.trial_system_attrs(conn, tid), tables.trial_user_attrs(conn, tid))
            if config is None or any(c.config == config for c in found):
                continue
            found.append(Candidate(number, config, value))
            if len(found) == k:
                break
    if not found:
        raise StorageError(
            f"study {study!r} has no completed trial to re-check; run `tune run --study {study}`"
        )
    return found


def recheck(
    url: str, study: str, k: int, epochs: int, folder: Path, *, threads: int = 0, remember: bool = True
) -> list[Candidate]:
    """Train the top K configurations for `epochs` epochs (their models saved in `folder`); returns them
    with both scores, best first. `remember=False` leaves the study's record to the caller, which writes
    it once its export is written (`remember_recheck`)."""
    if k < 1 or epochs < 1:
        raise SpecError(f"--recheck needs K >= 1 and --recheck-epochs >= 1, got {k} and {epochs}")
    spec = _study_spec(url, study, epochs)
    done = []
    for candidate in top_configurations(url, study, k):
        model = folder / f"recheck-{candidate.trial}.keras"
        ctx = TrialContext(
            candidate.trial, lambda epoch, value: False, threads=threads, keep=lambda value, m=model: m
        )
        value = evaluate(candidate.config, spec, ctx)
        saved = model if model.is_file() else None
        done.append(dataclasses.replace(candidate, recheck_value=float(value), model=saved))
    done.sort(key=lambda c: (-(c.recheck_value or 0.0), -c.search_value))
    if remember:
        remember_recheck(url, study, epochs, done)
    return done


def _study_spec(url: str, study: str, epochs: int) -> Spec:
    from marstune.tuning.study.storage import load_study, open_storage

    storage = open_storage(url)
    found = load_study(storage, study)
    raw = stored_spec_raw(storage, found._study_id)  # noqa: SLF001
    if raw is None:
        raise StorageError(
            f"study {study!r} was not made by `tune run` (no stored spec): nothing to re-check"
        )
    spec = spec_from_stored(raw)
    # No pruning and no early stopping in a re-check: every candidate gets the whole longer budget.
    train = spec.train.model_copy(update={"epochs": epochs, "patience": 0})
    return dataclasses.replace(spec, train=train)


def remember_recheck(url: str, study: str, epochs: int, done: list[Candidate]) -> None:
    """Keep the re-check's scores on the study (user attribute RECHECK_ATTR), for the report."""
    import optuna

    from marstune.tuning.study.storage import open_storage

    found = optuna.load_study(study_name=study, storage=open_storage(url))
    found.set_user_attr(RECHECK_ATTR, summary(epochs, done))


def summary(epochs: int, done: list[Candidate]) -> dict[str, Any]:
    """What the export and the report show: every candidate's two scores and the winner."""
    return json.loads(
        json.dumps(
            {
                "epochs": epochs,
                "winner": done[0].trial,
                "candidates": [
                    {"trial": c.trial, "search_value": c.search_value, "recheck_value": c.recheck_value}
                    for c in done
                ],
            }
        )
    )
