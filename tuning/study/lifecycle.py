"""Creating and joining studies, and the bookkeeping every engine shares.

`create_or_join` makes a study once (under the study claim) with its spec, target and initial trials, or
joins an existing one: only the same spec may join (the differing keys are named), and only an explicit
`--trials` changes the target. Interrupted and dead workers' trials that were enqueued (the baseline,
grid points, retries) are queued again, once, so "every grid point exactly once" and "the baseline
first" hold across interrupts. Each process that works on a study registers a seed stream, so
concurrent processes never draw the same configurations while a single `tune run` stays reproducible.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marstune.tuning.config.space import trained_as
from marstune.tuning.config.spec import Spec, spec_from_stored
from marstune.tuning.constants import METRIC_NAME
from marstune.tuning.errors import SpecError
from marstune.tuning.study import artifacts, tables
from marstune.tuning.study.claim import StudyClaim
from marstune.tuning.study.hints import SPEC_FILE_ATTR
from marstune.tuning.study.outage import retrier_of
from marstune.tuning.study.tables import FailKind

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage
    from optuna.trial import FrozenTrial, TrialState

# What may differ between the spec a study was made with and a command joining it: the run's own
# settings. Everything else (space, baseline, training, data, sampler, pruner, engine) makes trials
# incomparable, so a different value is refused.
MUTABLE_KEYS = (
    "study",
    "search.trials",
    "search.timeout",
    "search.trials_per_process",
    "search.keep_models",
    "train.threads",
    "data.path",  # another node's copy of the data: its fingerprint is checked instead
)
TARGET_ATTR = "target_trials"  # study user attribute: finished trials the study aims at
STREAMS_ATTR = "tune:seed_streams"  # study system attribute: seed streams handed out so far
ENQUEUED_AS = "enqueued_as"  # trial user attribute: baseline, grid, retry, ... (queued, not sampled)


@dataclass(frozen=True)
class DataInfo:
    """The data a study searches on, stored on the study (user attributes data_*)."""

    source: str
    fingerprint: str
    path: str | None = None
    synthetic: bool = False

    def attrs(self) -> dict[str, Any]:
        return {f"data_{k}": v for k, v in asdict(self).items()}


def initial_trials(spec: Spec) -> list[dict[str, Any]]:
    """What every new study starts with: the baseline, then (grid) every other grid point once."""
    baseline = {k: spec.baseline[k] for k in spec.space.params if k in spec.baseline}
    if spec.search.sampler != "grid":
        return [baseline]
    points = spec.space.grid()
    others = [p for p in points if trained_as(p) != trained_as(baseline)]
    return [baseline, *others] if len(others) < len(points) else points


def _flat(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):  # space.loss.choices, not the whole space, names a difference
            out.update(_flat(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def spec_differences(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """`key: stored -> wanted` for every setting that may not change once a study exists."""
    before, after = _flat(stored), _flat(wanted)
    keys = sorted((set(before) | set(after)) - set(MUTABLE_KEYS))
    return [
        f"{k}: {before.get(k)!r} there, {after.get(k)!r} here" for k in keys if before.get(k) != after.get(k)
    ]


def stored_spec_raw(storage: RDBStorage, study_id: int) -> dict[str, Any] | None:
    found = storage.get_study_system_attrs(study_id).get(tables.SPEC_ATTR)
    return found if found is not None else storage.get_study_user_attrs(study_id).get(tables.SPEC_ATTR)


def refuse_another_spec(spec: Spec, stored: Mapping[str, Any]) -> None:
    """A SpecError naming every setting that differs from the spec the study was made with.

    Both sides over today's defaults: a section added since the study was made is not a difference.
    The baselines as trials see them (with the loss section's keys): a study made when the default
    baseline named `loss: crossentropy` itself is the same study."""
    made = spec_from_stored(stored)
    differences = spec_differences(
        {**made.raw, "baseline": made.baseline}, {**spec.raw, "baseline": spec.baseline}
    )
    if differences:
        raise SpecError(
            f"study {spec.study!r} exists with another spec ({'; '.join(differences)}); "
            "run it with the settings it was made with, pass another --study, or start a new study "
            f"from this one's trials with --warm-start-from {spec.study}"
        )


def check_joinable(spec: Spec, url: str) -> None:
    """Read-only and before anything is loaded or printed: the refusal that create_or_join would give
    when the study exists with another spec. A storage or study that does not exist yet passes (it is
    made later, under the claim, where every other storage problem is told)."""
    from marstune.tuning.errors import StorageError
    from marstune.tuning.study.urls import sqlite_path

    path = sqlite_path(url)
    if path is not None and not path.exists():
        return
    try:
        with tables.reading(url) as conn:
            sid = tables.study_ids(conn).get(spec.study)
            stored = None if sid is None else tables.study_spec_raw(conn, sid)
    except StorageError:
        return
    if stored is not None:
        refuse_another_spec(spec, stored)


def create_or_join(
    spec: Spec,
    storage: RDBStorage,
    url: str,
    data: DataInfo | None,
    *,
    explicit_target: bool = False,
    enqueue: bool = True,
) -> tuple[optuna.Study, list[str]]:
    """Create the study with its spec, target and initial trials, or join it; returns the study and the
    lines to tell the user (a changed target). Engines whose own algorithm picks every configuration
    (Keras Tuner) pass enqueue=False: nothing waits in the storage for them."""
    import optuna

    notes: list[str] = []
    if spec.search.sampler == "grid":
        points = spec.space.grid_size()  # a float without `grid:` points is refused before the study exists
        if explicit_target and spec.search.trials != points:
            notes.append(
                f"--trials {spec.search.trials} is not used by the grid: it runs its {points} points once"
            )
    with StudyClaim(storage, url, spec.study):
        study = optuna.create_study(
            study_name=spec.study, storage=storage, direction="maximize", load_if_exists=True
        )
        study.set_metric_names([METRIC_NAME])  # older studies too: the dashboard shows the name
        stored = stored_spec_raw(storage, study._study_id)  # noqa: SLF001 - Study hides its id
        target = spec.space.grid_size() if spec.search.sampler == "grid" else spec.search.trials
        if stored is None:
            storage.set_study_system_attr(study._study_id, tables.SPEC_ATTR, spec.raw)  # noqa: SLF001
            folder = Path(spec.search.artifacts or artifacts.default_folder(spec.study)).absolute()
            storage.set_study_system_attr(study._study_id, artifacts.ARTIFACTS_ATTR, str(folder))  # noqa: SLF001
            for key, value in (data.attrs() if data else {}).items():
                study.set_user_attr(key, value)
            study.set_user_attr("sampler", spec.search.sampler)  # a short summary for `optuna studies`
            if spec.file:
                study.set_user_attr(SPEC_FILE_ATTR, spec.file)  # hints repeat it (study/hints.py)
            study.set_user_attr(TARGET_ATTR, target)
            for k, params in enumerate(initial_trials(spec) if enqueue else []):
                kind = "baseline" if k == 0 else spec.search.sampler
                study.enqueue_trial(params, user_attrs={ENQUEUED_AS: kind})
            return study, notes
        refuse_another_spec(spec, stored)
        old = int(study.user_attrs.get(TARGET_ATTR, target))
        if explicit_target and spec.search.sampler != "grid" and target != old:
            study.set_user_attr(TARGET_ATTR, target)
            notes.append(f"study {spec.study}: target changed from {old} to {target} finished trials")
            done = finished(counts(study))
            if done >= target:
                notes.append(
                    f"study {spec.study} already has {done} finished trials, the new target or more: "
                    f"nothing more runs; pass --trials above {done} to go on"
                )
        if enqueue:
            requeue_lost(study)
    return study, notes


def prepare_study(spec: Spec, url: str, data: DataInfo | None, *, explicit_target: bool = False) -> list[str]:
    """Create or join the study without running a trial (the parent of local workers); returns notes."""
    from marstune.tuning.study.storage import open_storage

    storage = open_storage(url, create=True)
    try:
        return create_or_join(spec, storage, url, data, explicit_target=explicit_target)[1]
    finally:
        storage.engine.dispose()  # the parent only waits from here on: it keeps no idle connection


def target_of(study: optuna.Study) -> int:
    return int(study.user_attrs[TARGET_ATTR])


def requeue_lost(study: optuna.Study) -> int:
    """Queue again every enqueued trial (baseline, grid point, retry) that was interrupted or whose
    worker died, unless a live or finished copy exists; returns how many. Called under the claim."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    alive = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    present = [_params_of(t) for t in trials if t.state in alive]
    queued = 0
    for t in trials:
        if t.state != TrialState.FAIL or ENQUEUED_AS not in t.user_attrs:
            continue
        if t.system_attrs.get(tables.FAIL_KIND_ATTR) not in (
            FailKind.INTERRUPTED,
            FailKind.STALE,
            FailKind.STORAGE,
        ):
            continue
        params = _params_of(t)
        if params in present:
            continue
        study.enqueue_trial(params, user_attrs={ENQUEUED_AS: t.user_attrs[ENQUEUED_AS], "retry_of": t.number})
        present.append(params)
        queued += 1
    return queued


def _params_of(t: FrozenTrial) -> dict[str, Any]:
    return dict(t.params) or dict(t.system_attrs.get("fixed_params", {}))


def mark_failed(study: optuna.Study, trial_id: int, kind: FailKind, reason: str) -> None:
    """Record why a trial failed (its state is set by the engine)."""
    storage = study._storage  # noqa: SLF001 - the public storage API takes trial ids
    storage.set_trial_system_attr(trial_id, tables.FAIL_KIND_ATTR, str(kind))
    storage.set_trial_user_attr(trial_id, "fail_reason", reason)


def requeue_interrupted(study: optuna.Study, trial: FrozenTrial) -> None:
    """After Ctrl-C / SIGTERM: an interrupted enqueued trial is queued again, once, right away."""
    if ENQUEUED_AS in trial.user_attrs:
        study.enqueue_trial(
            _params_of(trial),
            user_attrs={ENQUEUED_AS: trial.user_attrs[ENQUEUED_AS], "retry_of": trial.number},
        )


def claim_seed_stream(study: optuna.Study, url: str) -> int:
    """A number no other process working on this study has: 0 for the first, then 1, 2, ...

    The first process of a fresh study always gets 0, so the same command on a fresh database draws the
    same configurations; processes started together (other terminals, nodes, recycled workers) differ.
    """
    storage = study._storage  # noqa: SLF001
    with StudyClaim(storage, url, study.study_name):
        streams = int(storage.get_study_system_attrs(study._study_id).get(STREAMS_ATTR, 0))  # noqa: SLF001
        storage.set_study_system_attr(study._study_id, STREAMS_ATTR, streams + 1)  # noqa: SLF001
    return streams


def stream_seed(seed: int, stream: int) -> int:
    """A sampler seed for `stream`: stream 0 keeps the spec's seed; others are well apart from it."""
    if stream == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


_COUNTED = ("COMPLETE", "PRUNED", "RUNNING", "WAITING", "FAIL")


def counts(study: optuna.Study) -> dict[TrialState, int]:
    """Trials per state, read fresh from the database in one GROUP BY.

    `get_n_trials` loads every trial of the study (five times per loop here): 0.15 s per loop at 40
    trials on PostgreSQL and growing with the study, all of it spent while holding the claim.
    """
    from optuna.trial import TrialState

    storage, sid = study._storage, study._study_id  # noqa: SLF001
    rdb = getattr(storage, "_backend", storage)  # optuna wraps an RDBStorage in a cache
    engine = getattr(rdb, "engine", None)
    if engine is None:
        return {TrialState[s]: storage.get_n_trials(sid, TrialState[s]) for s in _COUNTED}

    def read() -> dict[str, int]:
        with engine.connect() as conn:
            return tables.state_counts(conn, sid)

    found = retrier_of(storage)(read)  # a worker's storage waits out an outage; others answer at once
    return {TrialState[s]: found[s.lower()] for s in _COUNTED}


def finished(c: Mapping[TrialState, int]) -> int:
    from optuna.trial import TrialState

    return c[TrialState.COMPLETE] + c[TrialState.PRUNED]


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def worker_name() -> str:
    """How a trial names the process that ran it (host:pid), in `worker` and in failure reasons."""
    return f"{socket.gethostname()}:{os.getpid()}"


def duplicates_of(study: optuna.Study, params: Mapping[str, Any], number: int) -> int | None:
    """The number of a finished or running trial that trains these params (other than `number`): the
    same values, or the same but for a loss key their loss does not read (space.trained_as)."""
    from optuna.trial import TrialState

    alive = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    wanted = trained_as(params)
    for t in study.get_trials(deepcopy=False, states=alive):
        if t.number != number and trained_as(t.params) == wanted:
            return t.number
    return None
