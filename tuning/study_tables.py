"""Read-only queries on Optuna's RDB tables, for the commands that only look (`tune status`, `export-best`).

Opening an `optuna.storages.RDBStorage` imports Optuna and Alembic and checks the schema: about 1.2 s
before the first query, longer than the queries themselves on a 10,000-trial study. These commands
need a handful of SELECTs, so they talk to the tables through SQLAlchemy Core and never write. The
table and column names are Optuna's (stable since Optuna 3.0; checked against optuna==5.0.0), and
tests/tuning/test_study_tables.py compares every answer with Optuna's own API on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from marstune.tuning.errors import StorageError, redact
from marstune.tuning.storage import display_url, engine_kwargs, preflight

if TYPE_CHECKING:
    import sqlalchemy

STATES = ("RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING")  # Optuna's TrialState names
_INFINITIES = {"INF_POS": math.inf, "INF_NEG": -math.inf}


@contextmanager
def reading(url: str) -> Iterator[sqlalchemy.Connection]:
    """A connection to an existing storage; errors become one line without the password."""
    import sqlalchemy
    import sqlalchemy.exc

    preflight(url, create=False)
    engine = sqlalchemy.create_engine(url, **engine_kwargs(url))
    try:
        with engine.connect() as conn:
            yield conn
    except sqlalchemy.exc.SQLAlchemyError as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "no such table" in text or ("relation" in text and "does not exist" in text):
            text = "it holds no Optuna tables; check --storage"
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
