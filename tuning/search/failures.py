"""The rule every engine honours: a study whose last trials all failed stops, everywhere.

Counted in the study, not in a process: a recycled worker, the other local workers and other nodes see
the same streak, so a space whose every configuration fails (a NaN loss, out of memory, a missing
import) stops within MAX_FAILS_IN_A_ROW trials instead of burning the night. Trials that were
interrupted, that duplicated another or that a database restart made surplus are neither failures of a
configuration nor successes: they neither count nor break the streak.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from marstune.tuning.errors import TooManyFailures
from marstune.tuning.study import tables
from marstune.tuning.study.lifecycle import FailKind
from marstune.tuning.study.outage import retrier_of

if TYPE_CHECKING:
    import optuna
    import sqlalchemy

MAX_FAILS_IN_A_ROW = 10
NOT_COUNTED = (FailKind.INTERRUPTED, FailKind.DUPLICATE, FailKind.SURPLUS)


def trial_counts(conn: sqlalchemy.Connection, sid: int) -> dict[str, int]:
    """Trials by state, lower-case, with FAIL split in two: `fail` the configurations that failed and
    `skipped` the FAIL trials that were not theirs (interrupted, duplicate, surplus: NOT_COUNTED)."""
    counts = tables.state_counts(conn, sid)
    skipped = tables.fails_of_kinds(conn, sid, [str(kind) for kind in NOT_COUNTED])
    return {**counts, "fail": counts["fail"] - skipped, "skipped": skipped}


def streak(recent: list[tuple[str, str | None, str | None]]) -> tuple[int, str]:
    """(failures in a row, the newest reason) from (state, fail kind, reason) rows, newest first."""
    count, reason = 0, ""
    for state, kind, why in recent:
        if state != "FAIL":
            break
        if kind in NOT_COUNTED:
            continue
        count += 1
        reason = reason or (why or "no reason recorded")
    return count, reason


def stop_reason(study: optuna.Study) -> str | None:
    """Why the study must stop (its newest MAX_FAILS_IN_A_ROW counted trials all failed), or None."""
    storage = study._storage  # noqa: SLF001
    engine = getattr(getattr(storage, "_backend", storage), "engine", None)
    if engine is None:
        return None

    def read() -> list[tuple[str, str | None, str | None]]:
        with engine.connect() as conn:
            return tables.recent_states(conn, study._study_id, 4 * MAX_FAILS_IN_A_ROW)  # noqa: SLF001

    count, reason = streak(retrier_of(storage)(read))
    if count < MAX_FAILS_IN_A_ROW:
        return None
    return (
        f"study {study.study_name!r}: the last {count} trials failed, so every worker stops; last: "
        f"{reason}. Fix the cause (narrow the space, lower the learning rate, install what is missing) "
        "and run the same command again"
    )


def check(study: optuna.Study) -> None:
    """Raise TooManyFailures when the study's last trials all failed."""
    reason = stop_reason(study)
    if reason is not None:
        raise TooManyFailures(reason)
