"""`tune run --warm-start-from OLD`: a new study that starts from an old study's best configurations.

A study's spec is fixed once it exists (lifecycle.MUTABLE_KEYS): a narrower space or a lower learning
rate makes a new study. So that the new one does not start from nothing, the old study's best complete
configurations that lie in the new space are queued first, after the baseline, as Optuna's own
warm-start recipe does (`enqueue_trial`). They are trained again under the new spec rather than copied
with their old scores: a score earned at another learning rate or on another space says little here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from marstune.tuning.config.space import trained_as
from marstune.tuning.config.spec import Spec
from marstune.tuning.errors import StorageError, UsageError
from marstune.tuning.study import tables
from marstune.tuning.study.claim import StudyClaim
from marstune.tuning.study.lifecycle import ENQUEUED_AS, DataInfo, create_or_join, initial_trials
from marstune.tuning.study.urls import sqlite_path

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

WARM_START_TRIALS = 5  # the old study's best configurations queued first: enough to seed, few to re-train
WARM_FROM_ATTR = "warm_started_from"  # study user attribute: the study a warm start came from
WARM_OF_ATTR = "warm_start_of"  # trial user attribute: "<old study>#<trial number>"


def best_configurations(
    url: str, old: str, spec: Spec, limit: int = WARM_START_TRIALS
) -> tuple[list[dict[str, Any]], str]:
    """The old study's best complete configurations (best first) that lie in `spec`'s space, with the
    trial each came from, as params for the new study; duplicates (as trained) once. With them, why
    none was chosen when none was (else "")."""
    with tables.reading(url) as conn:
        sid = tables.study_id(conn, old)
        values = tables.completed_values(conn, sid)
        ids = tables.trial_ids_by_number(conn, sid)
        maximize = tables.maximizing(conn, sid)
        ranked = sorted(values, key=lambda nv: (-nv[1] if maximize else nv[1], nv[0]))
        chosen: list[dict[str, Any]] = []
        seen = [trained_as(p) for p in initial_trials(spec)]  # the baseline runs first anyway
        inside = 0
        for number, _ in ranked:
            params = tables.trial_params(conn, ids[number])
            point = {k: v for k, v in params.items() if k in spec.space.params}
            if set(point) != set(spec.space.params) or not spec.space.contains(point):
                continue  # outside the narrowed space, or a parameter the new space added
            inside += 1
            if trained_as(point) in seen:
                continue
            seen.append(trained_as(point))
            chosen.append({"params": point, "of": f"{old}#{number}"})
            if len(chosen) >= limit:
                break
    if chosen:
        return chosen, ""
    if not ranked:
        return chosen, f"{old} has no completed trial"
    if inside:
        return chosen, f"those of {old} that lie in the new space are the baseline, which runs first anyway"
    return chosen, f"none of {old}'s {len(ranked)} completed trials lies in the new space"


def continues(spec: Spec, url: str, old: str) -> bool:
    """Check `--warm-start-from old` before anything is written (no database file is made for a refused
    one): True when this command made study `spec.study` already (run again after an interrupt: it
    continues), False when the study is new; any other existing study is refused."""
    if old == spec.study:
        raise UsageError(f"--warm-start-from {old}: that is the study itself; name the old study")
    if spec.search.sampler == "grid":
        raise UsageError(
            "--warm-start-from seeds a sampler; a grid runs every point anyway: drop one of them"
        )
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise StorageError(f"--warm-start-from {old}: no such study ({path} does not exist yet)")
    with tables.reading(url) as conn:
        names = tables.study_ids(conn)
        if old not in names:
            known = ", ".join(names) or "none yet"
            raise StorageError(f"--warm-start-from {old}: no such study in this storage (studies: {known})")
        if spec.study in names:
            made_from = tables.study_user_attrs(conn, names[spec.study]).get(WARM_FROM_ATTR)
            if made_from == old:
                return True  # this command made it: continue it
            raise UsageError(
                f"--warm-start-from seeds a new study, and study {spec.study!r} exists already; pass a new "
                f"--study name"
            )
    return False


def warm_start(spec: Spec, storage: RDBStorage, url: str, old: str, data: DataInfo | None) -> list[str]:
    """Create study `spec.study` seeded from study `old` (checked by `continues` first); returns the
    lines to tell."""
    seeds, none_because = best_configurations(url, old, spec)
    study, notes = create_or_join(spec, storage, url, data)
    with StudyClaim(storage, url, spec.study):
        study.set_user_attr(WARM_FROM_ATTR, old)  # first: the same command again continues this study
        for seed in seeds:
            attrs = {ENQUEUED_AS: "warm-start", WARM_OF_ATTR: seed["of"]}
            study.enqueue_trial(seed["params"], user_attrs=attrs)
    shown = ", ".join(s["of"].split("#")[1] for s in seeds) or f"none: {none_because}"
    return [
        *notes,
        f"study {spec.study}: warm-started from {old}: {len(seeds)} of its best configurations queued after "
        f"the baseline (trials {shown})",
    ]
