"""Creating and joining studies, and reading their state: shared by every engine.

`create_or_join` makes a study once (under the study claim) with its spec, target and initial trials;
`join` loads a running one for a `tune worker`, with the spec from its stored attributes; `counts` and
`best` read its state fresh from the database.
"""

from __future__ import annotations

import os
from typing import Any

import optuna
from marstune.tuning import study_tables
from marstune.tuning.claim import StudyClaim
from marstune.tuning.errors import DataError, SpecError
from marstune.tuning.local_workers import SEED_OFFSET_ENV
from marstune.tuning.samplers import make_pruner, make_sampler
from marstune.tuning.spec import Spec, study_spec
from marstune.tuning.storage import load_study, open_storage
from optuna.trial import TrialState


def initial_trials(spec: Spec) -> list[dict[str, Any]]:
    """What every new study starts with: the baseline, then (grid) every other grid point once."""
    baseline = {k: spec.baseline[k] for k in spec.space.params if k in spec.baseline}
    if spec.search.sampler != "grid":
        return [baseline]
    points = spec.space.grid()
    return [baseline] + [p for p in points if p != baseline] if baseline in points else points


def _comparable(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k not in ("search", "study")}


def create_or_join(
    spec: Spec,
    storage: Any,
    url: str,
    data_info: dict[str, Any],
    *,
    enqueue: bool = True,
    sampler: optuna.samplers.BaseSampler | None = None,
) -> optuna.Study:
    """Create the study (once, under the claim) with its spec, target and initial trials.

    Engines whose own algorithm picks every configuration (Keras Tuner) pass enqueue=False (no baseline
    or grid points waiting in the storage) and a `sampler`, since their sampler names are not Optuna's.
    """
    if spec.search.sampler == "grid":
        spec.space.grid()  # a float without `grid:` points is refused before the study exists
    with StudyClaim(storage, url, spec.study):
        study = optuna.create_study(
            study_name=spec.study,
            storage=storage,
            direction="maximize",
            load_if_exists=True,
            sampler=sampler or make_sampler(spec.search.sampler, spec.train.seed),
            pruner=make_pruner(spec.search.pruner),
        )
        stored = study.user_attrs.get("spec")
        if stored is not None and _comparable(stored) != _comparable(spec.raw):
            diff = sorted(k for k in _comparable(spec.raw) if stored.get(k) != spec.raw.get(k))
            raise SpecError(
                f"study {spec.study!r} exists with a different spec (sections {diff} differ); "
                "use another --study or the spec it was made with"
            )
        if stored is None:
            for params in initial_trials(spec) if enqueue else []:
                study.enqueue_trial(
                    params,
                    user_attrs={
                        "enqueued_as": "baseline"
                        if params == initial_trials(spec)[0]
                        else spec.search.sampler
                    },
                )
            for key, value in data_info.items():
                study.set_user_attr(key, value)
        target = spec.space.grid_size() if spec.search.sampler == "grid" else spec.search.trials
        study.set_user_attr("spec", spec.raw)
        study.set_user_attr("target_trials", target)
    return study


def create(spec: Spec, storage_url: str, data_info: dict[str, Any]) -> None:
    """Create and initialise the study without running a trial (the parent of `tune run --workers K`)."""
    storage = open_storage(storage_url, create=True)
    try:
        create_or_join(spec, storage, storage_url, data_info)
    finally:
        storage.engine.dispose()  # the parent only waits from here on: it keeps no idle connection


def join(storage: Any, name: str, data_path: str | None = None) -> tuple[optuna.Study, Spec]:
    """Load a running study and its spec from the stored attributes (workers need no spec file).

    `data_path` points this worker at its own copy of the data; its fingerprint must match the study's.
    """
    study = load_study(storage, name)
    spec = study_spec(name, study.user_attrs, data_path)
    _check_same_data(spec, study.user_attrs.get("data_fingerprint"))
    sampler = make_sampler(spec.search.sampler, _worker_seed(spec.train.seed, study))
    return optuna.load_study(
        study_name=name, storage=storage, sampler=sampler, pruner=make_pruner(spec.search.pruner)
    ), spec


def _worker_seed(seed: int, study: optuna.Study) -> int:
    """Workers must not repeat each other's draws, and a recycled `tune run` must stay reproducible.

    A child of `run_local_workers` gets an offset from its parent (`tune run`: the worker's index, so the
    same command draws the same configurations; `tune worker`: the parent's pid too); anyone else uses
    its pid. The trials already in the study move the seed on, so a recycled worker draws new points.
    """
    offset = os.environ.get(SEED_OFFSET_ENV, "")
    base = int(offset) if offset.isdigit() else os.getpid()
    return seed + base + sum(counts(study).values())


def _check_same_data(spec: Spec, fingerprint: str | None) -> None:
    """A worker training on other data than the study's would mix incomparable scores into it."""
    if spec.objective.kind != "unet" or not fingerprint:
        return
    from marstune.tuning.objective import prepare_data

    found = prepare_data(spec).fingerprint
    if found != fingerprint:
        where = spec.data.path or "the built-in synthetic set"
        raise DataError(
            f"this worker's data ({where}, fingerprint {found}) is not the study's (fingerprint "
            f"{fingerprint}); pass --data with the file the study was started on"
        )


_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL)


def counts(study: optuna.Study) -> dict[TrialState, int]:
    """Trials per state, read fresh from the database in one GROUP BY.

    `get_n_trials` loads every trial of the study (five times per loop here): 0.15 s per loop at 40
    trials on PostgreSQL and growing with the study, all of it spent while holding the claim.
    """
    storage, sid = study._storage, study._study_id  # noqa: SLF001
    rdb = getattr(storage, "_backend", storage)  # optuna wraps an RDBStorage in a cache
    engine = getattr(rdb, "engine", None)
    if engine is None:
        return {s: storage.get_n_trials(sid, s) for s in _COUNTED}
    with engine.connect() as conn:
        found = study_tables.state_counts(conn, sid)
    return {s: found[s.name.lower()] for s in _COUNTED}


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None
