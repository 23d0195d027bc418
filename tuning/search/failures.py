"""The rule every engine honours: a study whose last trials all failed stops, everywhere.

Counted in the study, not in a process: a recycled worker, the other local workers and other nodes see
the same streak, so a space whose every configuration fails (a NaN loss, out of memory, a missing
import) stops within MAX_FAILS_IN_A_ROW trials instead of burning the night. Trials that were
interrupted, that duplicated another, that a database restart made surplus or that a full disk stopped
(FailKind.STORAGE) are neither failures of a configuration nor successes: they neither count nor break
the streak.

A stopped study goes on only when a person says so: `--resume-failed N` (N, a failed trial of the stop,
is named in the stop message) starts a new streak. Restarting the same worker command does not, so a
supervisor's restart loop cannot burn compute on a cause nobody fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from marstune.tuning.errors import TooManyFailures, UsageError
from marstune.tuning.study import tables
from marstune.tuning.study.outage import retrier_of
from marstune.tuning.study.tables import FailKind

if TYPE_CHECKING:
    import optuna
    import sqlalchemy

MAX_FAILS_IN_A_ROW = 10
# Study system attribute: the highest trial id when a person last resumed the study (`--resume-failed`);
# only trials after it make up the streak.
STREAK_START_ATTR = "tune:streak_after_trial_id"
NOT_COUNTED = (FailKind.INTERRUPTED, FailKind.DUPLICATE, FailKind.SURPLUS, FailKind.STORAGE)


def trial_counts(conn: sqlalchemy.Connection, sid: int) -> dict[str, int]:
    """Trials by state, lower-case, with FAIL split in two: `fail` the configurations that failed and
    `skipped` the FAIL trials that were not theirs (interrupted, duplicate, surplus: NOT_COUNTED)."""
    counts = tables.state_counts(conn, sid)
    skipped = tables.fails_of_kinds(conn, sid, [str(kind) for kind in NOT_COUNTED])
    return {**counts, "fail": counts["fail"] - skipped, "skipped": skipped}


@dataclass(frozen=True)
class Streak:
    """The failures in a row at the newest end of the study: how many, the newest reason, the number of
    the newest failed trial (what the stop message names) and every failed trial's number in it: each
    worker that stops names the newest it saw, and any of them ties `--resume-failed` to this stop."""

    count: int
    reason: str
    last_failed: int | None
    numbers: tuple[int, ...] = ()


def streak(recent: list[tuple[int, str, str | None, str | None]]) -> Streak:
    """The streak from (number, state, fail kind, reason) rows, newest first."""
    count, reason, last, numbers = 0, "", None, []
    for number, state, kind, why in recent:
        if state != "FAIL":
            break
        if kind in NOT_COUNTED:
            continue
        count += 1
        reason = reason or (why or "no reason recorded")
        last = number if last is None else last
        numbers.append(number)
    return Streak(count, reason, last, tuple(numbers))


def read_streak(conn: sqlalchemy.Connection, sid: int) -> Streak:
    """The study's current streak: trials from before its last `--resume-failed` do not count."""
    after = int(tables.study_system_attrs(conn, sid).get(STREAK_START_ATTR) or 0)
    return streak(tables.recent_states(conn, sid, 4 * MAX_FAILS_IN_A_ROW, after_id=after))


def _engine(study: optuna.Study) -> sqlalchemy.Engine | None:
    storage = study._storage  # noqa: SLF001
    return getattr(getattr(storage, "_backend", storage), "engine", None)


def stop_reason(study: optuna.Study) -> str | None:
    """Why the study must stop (its newest MAX_FAILS_IN_A_ROW counted trials all failed), or None."""
    engine = _engine(study)
    if engine is None:
        return None

    def read() -> Streak:
        with engine.connect() as conn:
            return read_streak(conn, study._study_id)  # noqa: SLF001

    found = retrier_of(study._storage)(read)  # noqa: SLF001
    if found.count < MAX_FAILS_IN_A_ROW:
        return None
    return (
        f"study {study.study_name!r}: the last {found.count} trials failed, so every worker stops; last: "
        f"{found.reason}. Fix the cause (install what is missing, free the memory), then run the same "
        f"command again with --resume-failed {found.last_failed} (a restarted worker does not resume by "
        "itself); to narrow the space or lower the learning rate, start a new study with "
        f"--warm-start-from {study.study_name} (README: a study that stopped on failures)"
    )


def check(study: optuna.Study) -> None:
    """Raise TooManyFailures when the study's last trials all failed."""
    reason = stop_reason(study)
    if reason is not None:
        raise TooManyFailures(reason)


def resume(study: optuna.Study, last_failed: int) -> str:
    """`--resume-failed N`: a person fixed the cause of the stop whose newest failure is trial N, so a new
    streak starts (the trials so far no longer count). Tied to that stop: a supervisor restarting a
    worker with the same flag cannot resume the next stop, so a restart loop cannot burn compute.
    Returns the line to tell; an N that names no current stop is an error, unless nothing is stopped."""
    engine = _engine(study)
    if engine is None:
        return "--resume-failed: this storage keeps no failure streak; nothing to resume"
    sid = study._study_id  # noqa: SLF001

    def read() -> tuple[Streak, int]:
        with engine.connect() as conn:
            return read_streak(conn, sid), tables.last_trial_id(conn, sid)

    found, last_id = retrier_of(study._storage)(read)  # noqa: SLF001
    if found.count < MAX_FAILS_IN_A_ROW:
        name = study.study_name
        return f"--resume-failed {last_failed}: study {name!r} is not stopped on failures; nothing to resume"
    if last_failed not in found.numbers:  # another worker's stop line may name an earlier one of them
        raise UsageError(
            f"--resume-failed {last_failed}: trial {last_failed} is not among the failures that stopped "
            f"study {study.study_name!r} (trials {min(found.numbers)}..{found.last_failed}); fix their cause "
            f"({found.reason}), then pass --resume-failed {found.last_failed}"
        )
    study._storage.set_study_system_attr(sid, STREAK_START_ATTR, last_id)  # noqa: SLF001
    return (
        f"study {study.study_name!r}: resumed after {found.count} failed trials (the newest "
        f"{found.last_failed}); a new streak starts, and {MAX_FAILS_IN_A_ROW} more failures in a row stop "
        "it again"
    )
