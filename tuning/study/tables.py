"""Read-only queries on Optuna's RDB tables, for the commands that only look (`tune status`, `export-best`).

Opening an `optuna.storages.RDBStorage` imports Optuna and Alembic and checks the schema: about 1.2 s
before the first query, longer than the queries themselves on a 10,000-trial study. These commands
need a handful of SELECTs, so they talk to the tables through SQLAlchemy Core and never write. The
table and column names are Optuna's (stable since Optuna 3.0; checked against optuna==5.0.0), and
tests/tuning/study/test_study_tables.py compares every answer with Optuna's own API on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from marstune.tuning.errors import StorageError
from marstune.tuning.study.outage import Retrier, passing_cause
from marstune.tuning.study.settings import engine_kwargs
from marstune.tuning.study.urls import display_url, preflight, redact

if TYPE_CHECKING:
    import sqlalchemy

STATES = ("RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING")  # Optuna's TrialState names
SPEC_ATTR = "spec"  # study system attribute: the resolved spec (kept out of `optuna studies`' user_attrs)
# trial system attribute: why a FAIL trial failed (FailKind below); interrupted and
# dead-worker trials are re-run and are not the config's fault, so the failure streak skips them.
FAIL_KIND_ATTR = "tune:fail_kind"


class FailKind(StrEnum):
    """Why a trial is FAIL (trial system attribute FAIL_KIND_ATTR)."""

    ERROR = "error"  # the configuration or the code failed: counts towards the failure streak
    INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM: re-queued, not the config's fault
    STALE = "stale"  # its worker stopped sending heartbeats: re-run once by the retry callback
    SURPLUS = "surplus"  # started under a claim a database restart took away, past the target: dropped
    DUPLICATE = "duplicate"  # the sampler proposed a configuration the study already has
    STORAGE = "storage"  # a disk the run writes to was full (study/disk.py): the storage is at fault


_INFINITIES = {"INF_POS": math.inf, "INF_NEG": -math.inf}


@contextmanager
def reading(url: str, *, wait: bool = False) -> Iterator[sqlalchemy.Connection]:
    """A connection to an existing storage; errors become one line without the password. `status` and
    `export-best` do not wait (a person is waiting; the connect and statement timeouts bound it); the end
    of a run does (wait=True): its workers rode out the outage, its summary should too."""
    with _connected(url, write=False, wait=wait) as conn:
        yield conn


@contextmanager
def writing(url: str) -> Iterator[sqlalchemy.Connection]:
    """A connection that commits on success: used only to drop a deleted artifact's link
    (Optuna's API refuses to change a finished trial's attributes)."""
    with _connected(url, write=True, wait=True) as conn:
        yield conn


@contextmanager
def _connected(url: str, *, write: bool, wait: bool) -> Iterator[sqlalchemy.Connection]:
    import sqlalchemy
    import sqlalchemy.exc

    preflight(url, create=False)
    engine = sqlalchemy.create_engine(url, **engine_kwargs(url))
    try:
        connect = engine.begin if write else engine.connect
        with Retrier(url)(connect) if wait else connect() as conn:
            yield conn
    except sqlalchemy.exc.SQLAlchemyError as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "no such table" in text or ("relation" in text and "does not exist" in text):
            text = "it holds no Optuna tables; check --storage"
        elif (cause := passing_cause(exc)) is not None:  # down, restarting, frozen, full: say so plainly
            text = f"{cause}; check that the database server runs and answers, then run this again"
        raise StorageError(f"cannot read storage {display_url(url)}: {redact(text)}") from None
    finally:
        engine.dispose()


def _rows(conn: sqlalchemy.Connection, sql: str, **params: Any) -> list[Any]:
    import sqlalchemy

    return list(conn.execute(sqlalchemy.text(sql), params).all())


def study_ids(conn: sqlalchemy.Connection) -> dict[str, int]:
    """Study name -> id, in creation order."""
    sql = "SELECT study_id, study_name FROM studies ORDER BY study_id"
    return {name: sid for sid, name in _rows(conn, sql)}


def study_id(conn: sqlalchemy.Connection, name: str) -> int:
    """The id of a study; a missing one is an error listing the studies that do exist."""
    ids = study_ids(conn)
    if name not in ids:
        known = ", ".join(ids) if ids else "none yet"
        raise StorageError(f"no study named {name!r} in this storage (studies: {known}); check --study")
    return ids[name]


def study_user_attrs(conn: sqlalchemy.Connection, sid: int) -> dict[str, Any]:
    sql = "SELECT key, value_json FROM study_user_attributes WHERE study_id = :sid"
    return {key: json.loads(value) for key, value in _rows(conn, sql, sid=sid)}


def study_system_attrs(conn: sqlalchemy.Connection, sid: int) -> dict[str, Any]:
    sql = "SELECT key, value_json FROM study_system_attributes WHERE study_id = :sid"
    return {key: json.loads(value) for key, value in _rows(conn, sql, sid=sid)}


def study_spec_raw(conn: sqlalchemy.Connection, sid: int) -> dict[str, Any] | None:
    """The resolved spec a study was made with (a system attribute; a user attribute before 0.2)."""
    found = study_system_attrs(conn, sid).get(SPEC_ATTR)
    return found if found is not None else study_user_attrs(conn, sid).get(SPEC_ATTR)


def recent_states(
    conn: sqlalchemy.Connection, sid: int, limit: int, *, after_id: int = 0
) -> list[tuple[int, str, str | None, str | None]]:
    """(number, state, fail kind, fail reason) of the study's last `limit` finished trials whose id is
    above `after_id`, newest first, from every worker on every host."""
    sql = (
        "SELECT t.number, t.state, k.value_json, r.value_json FROM trials t"
        " LEFT JOIN trial_system_attributes k ON k.trial_id = t.trial_id AND k.key = :kind"
        " LEFT JOIN trial_user_attributes r ON r.trial_id = t.trial_id AND r.key = 'fail_reason'"
        " WHERE t.study_id = :sid AND t.state IN ('COMPLETE', 'PRUNED', 'FAIL') AND t.trial_id > :after"
        " ORDER BY t.datetime_complete DESC, t.trial_id DESC LIMIT :limit"
    )
    rows = _rows(conn, sql, sid=sid, kind=FAIL_KIND_ATTR, limit=limit, after=after_id)
    return [
        (int(number), str(state), json.loads(kind) if kind else None, json.loads(why) if why else None)
        for number, state, kind, why in rows
    ]


def last_trial_id(conn: sqlalchemy.Connection, sid: int) -> int:
    """The highest trial id of the study (0 when it has none)."""
    found = _rows(conn, "SELECT MAX(trial_id) FROM trials WHERE study_id = :sid", sid=sid)
    return int(found[0][0] or 0) if found else 0


def maximizing(conn: sqlalchemy.Connection, sid: int) -> bool:
    sql = "SELECT direction FROM study_directions WHERE study_id = :sid AND objective = 0"
    found = _rows(conn, sql, sid=sid)
    return not found or found[0][0] == "MAXIMIZE"


def state_counts(conn: sqlalchemy.Connection, sid: int) -> dict[str, int]:
    """Trials by state, lower-case names, every state present (0 when none)."""
    counts = dict.fromkeys((s.lower() for s in STATES), 0)
    sql = "SELECT state, COUNT(*) FROM trials WHERE study_id = :sid GROUP BY state"
    for state, n in _rows(conn, sql, sid=sid):
        counts[str(state).lower()] = int(n)
    return counts


def fails_of_kinds(conn: sqlalchemy.Connection, sid: int, kinds: Sequence[str]) -> int:
    """How many of the study's FAIL trials carry one of these fail kinds (FAIL_KIND_ATTR)."""
    sql = (
        "SELECT k.value_json FROM trials t JOIN trial_system_attributes k"
        " ON k.trial_id = t.trial_id AND k.key = :kind WHERE t.study_id = :sid AND t.state = 'FAIL'"
    )
    return sum(json.loads(found) in kinds for (found,) in _rows(conn, sql, sid=sid, kind=FAIL_KIND_ATTR))


def completed_values(conn: sqlalchemy.Connection, sid: int) -> list[tuple[int, float]]:
    """(trial number, objective value) of the completed trials, in trial order."""
    sql = (
        "SELECT t.number, v.value, v.value_type FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id"
        " WHERE t.study_id = :sid AND t.state = 'COMPLETE' AND v.objective = 0 ORDER BY t.number"
    )
    return [(int(n), _value(v, kind)) for n, v, kind in _rows(conn, sql, sid=sid)]


def _value(stored: float | None, kind: str) -> float:
    return _INFINITIES[kind] if kind in _INFINITIES else float(stored)  # type: ignore[arg-type]


def best_trial_id(conn: sqlalchemy.Connection, sid: int) -> tuple[int, int, float] | None:
    """(trial_id, number, value) of the best completed trial (earliest on ties), or None."""
    order = "DESC" if maximizing(conn, sid) else "ASC"
    # Infinities are stored as NULL plus a value_type: the good one first, the finite values, the bad one.
    kind_first = "INF_POS" if order == "DESC" else "INF_NEG"
    sql = (
        "SELECT t.trial_id, t.number, v.value, v.value_type FROM trials t"
        " JOIN trial_values v ON v.trial_id = t.trial_id"
        " WHERE t.study_id = :sid AND t.state = 'COMPLETE' AND v.objective = 0"
        " ORDER BY CASE WHEN v.value_type = :kind_first THEN 0"
        " WHEN v.value_type = 'FINITE' THEN 1 ELSE 2 END,"
        f" v.value {order}, t.number LIMIT 1"
    )
    found = _rows(conn, sql, sid=sid, kind_first=kind_first)
    if not found:
        return None
    trial_id, number, value, kind = found[0]
    return int(trial_id), int(number), _value(value, kind)


def trial_params(conn: sqlalchemy.Connection, trial_id: int) -> dict[str, Any]:
    """A trial's params in their external form (choices, ints, floats), as Optuna reports them."""
    sql = "SELECT param_name, param_value, distribution_json FROM trial_params WHERE trial_id = :tid"
    return {
        name: _external(value, json.loads(dist))
        for name, value, dist in _rows(conn, sql + " ORDER BY param_id", tid=trial_id)
    }


def _external(internal: float, distribution: dict[str, Any]) -> Any:
    name = distribution.get("name", distribution.get("type", ""))
    attributes = distribution.get("attributes", distribution)
    if "Categorical" in name or name == "categorical":
        return attributes["choices"][int(internal)]
    if name.startswith("Int") or name == "int":
        return int(internal)
    return float(internal)


def trial_user_attrs(conn: sqlalchemy.Connection, trial_id: int) -> dict[str, Any]:
    sql = "SELECT key, value_json FROM trial_user_attributes WHERE trial_id = :tid"
    return {key: json.loads(value) for key, value in _rows(conn, sql, tid=trial_id)}


def trial_system_attrs(conn: sqlalchemy.Connection, trial_id: int) -> dict[str, Any]:
    sql = "SELECT key, value_json FROM trial_system_attributes WHERE trial_id = :tid"
    return {key: json.loads(value) for key, value in _rows(conn, sql, tid=trial_id)}


def trials_by_worker(conn: sqlalchemy.Connection, sid: int) -> dict[str, dict[str, int]]:
    """Worker name (user attribute `worker`, host:pid) -> its trials by state, lower-case."""
    sql = (
        "SELECT a.value_json, t.state, COUNT(*) FROM trials t JOIN trial_user_attributes a"
        " ON a.trial_id = t.trial_id AND a.key = 'worker'"
        " WHERE t.study_id = :sid GROUP BY a.value_json, t.state"
    )
    out: dict[str, dict[str, int]] = {}
    for worker, state, n in _rows(conn, sql, sid=sid):
        out.setdefault(json.loads(worker), {})[str(state).lower()] = int(n)
    return out


def trial_artifacts(
    conn: sqlalchemy.Connection, sid: int, prefix: str
) -> list[tuple[int, float, str, dict[str, str | None]]]:
    """(number, value, attribute key, metadata) of the completed trials' artifacts."""
    sql = (
        "SELECT t.trial_id, t.number, v.value, v.value_type, a.key, a.value_json FROM trials t"
        " JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0"
        " JOIN trial_system_attributes a ON a.trial_id = t.trial_id"
        " WHERE t.study_id = :sid AND t.state = 'COMPLETE' AND a.key LIKE :prefix"
    )
    out = []
    for _, n, v, kind, key, stored in _rows(conn, sql, sid=sid, prefix=f"{prefix}%"):
        meta = json.loads(stored)
        meta = json.loads(meta) if isinstance(meta, str) else meta
        out.append((int(n), _value(v, kind), key, meta))
    return out


def forget_trial_attr(conn: sqlalchemy.Connection, sid: int, number: int, key: str) -> None:
    """Delete one system attribute of a (finished) trial: the link of an artifact that was deleted."""
    import sqlalchemy

    sql = (
        "DELETE FROM trial_system_attributes WHERE key = :key AND trial_id ="
        " (SELECT trial_id FROM trials WHERE study_id = :sid AND number = :number)"
    )
    conn.execute(sqlalchemy.text(sql), {"key": key, "sid": sid, "number": number})


def trial_ids_by_number(conn: sqlalchemy.Connection, sid: int) -> dict[int, int]:
    """Trial number -> trial id in study `sid`."""
    sql = "SELECT number, trial_id FROM trials WHERE study_id = :sid"
    return {int(n): int(tid) for n, tid in _rows(conn, sql, sid=sid)}
