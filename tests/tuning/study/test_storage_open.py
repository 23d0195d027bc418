"""Opening a fresh database from several processes at once (workers, the dashboard, `tune status`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from marstune.tuning.study.storage import _lost_schema_race, open_storage

# Each child waits for the same instant, then opens the storage: they all race to create the tables.
_OPEN_AT = """
import sys, time
from marstune.tuning.study.storage import open_storage
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
open_storage(sys.argv[1], create=True)
print("opened")
"""


def test_processes_opening_a_fresh_database_at_once_all_succeed(storage_url: str, tmp_path: Path) -> None:
    import time

    for round_ in range(3):
        url = storage_url
        if url.startswith("sqlite"):
            url = f"sqlite:///{tmp_path / f'fresh-{round_}.db'}"
        elif round_:
            _drop_optuna_tables(url)
        start = f"{time.time() + 4.0:.3f}"  # time for every interpreter to import optuna first
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN_AT, url, start],
                cwd=Path(__file__).parents[2],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        try:
            results = [child.communicate(timeout=120) for child in children]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
        for child, (out, err) in zip(children, results, strict=True):
            assert child.returncode == 0, err[-2000:]
            assert out.strip() == "opened"
        # The schema is whole: a study can be created and a trial told in it.
        study = optuna.create_study(storage=open_storage(url), study_name=f"after-race-{round_}")
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
        assert len(study.trials) == 1


def _drop_optuna_tables(url: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


def test_only_schema_races_are_retried() -> None:
    assert _lost_schema_race(Exception("(sqlite3.OperationalError) table trials already exists"))
    assert _lost_schema_race(Exception('duplicate key value violates "pg_type_typname_nsp_index"'))
    assert not _lost_schema_race(Exception("(sqlite3.OperationalError) unable to open database file"))
    assert not _lost_schema_race(Exception("password authentication failed for user tune"))
    assert _lost_schema_race(
        Exception("(sqlite3.IntegrityError) UNIQUE constraint failed: alembic_version.version_num")
    )


@pytest.mark.parametrize("password", ["Sekrit/B", "Sekrit#C", "Sek?ritD", "Se/k@ritE"])
def test_a_password_with_a_slash_hash_or_question_mark_is_masked(password: str) -> None:
    from marstune.tuning.study.urls import display_url, resolve_url

    url = f"postgresql+psycopg://postgres:{password}@127.0.0.1:5432/h6"
    secret = password.split("@")[0]  # SQLAlchemy's password ends at the first @
    assert secret not in display_url(url)
    assert secret not in display_url(resolve_url(url))
    assert display_url(url).endswith("@127.0.0.1:5432/h6")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres:Sekrit7@127.0.0.1:notaport/h6",
        "postgresql+psycopg://postgres:SekritL@[::1:5432/h6",
    ],
)
def test_a_malformed_url_is_one_storage_error_without_its_password(url: str) -> None:
    from marstune.tuning.errors import StorageError
    from marstune.tuning.study.urls import preflight, resolve_url

    with pytest.raises(StorageError) as caught:
        preflight(resolve_url(url), create=False)
    assert "Sekrit" not in str(caught.value) and "malformed" in str(caught.value)


# --- the SQLite file behind a URL: SQLAlchemy's reading of it, used by the lock, WAL and output checks.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal", ".lock")  # SQLite's files beside it, and the claim's


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///od d/p%20q.db", "od d/p q.db"),  # percent-decoded, as SQLAlchemy opens it
        ("sqlite:///a%2Fb.db", "a/b.db"),
        ("sqlite:////abs/x.db", "/abs/x.db"),
        ("sqlite:///x.db?timeout=5", "x.db"),
    ],
)
def test_sqlite_path_is_the_file_sqlalchemy_opens(url: str, path: str) -> None:
    from sqlalchemy.engine import make_url

    from marstune.tuning.study.urls import sqlite_files, sqlite_path

    assert sqlite_path(url) == Path(path) == Path(make_url(url).database or "")
    assert sqlite_files(url)[0] == Path(path)
    assert {p.name for p in sqlite_files(url)[1:]} == {f"{Path(path).name}{s}" for s in SQLITE_COMPANIONS}


def test_a_percent_encoded_sqlite_path_is_one_database_in_wal_mode(tmp_path: Path) -> None:
    """`p%20q.db` is the file `p q.db`: its WAL pragma and claim lock must land on it, not on a stray
    `p%20q.db`, and `tune status` must read the same file."""
    import json
    import sqlite3

    from tests.conftest import run_tune

    folder = tmp_path / "od d"
    folder.mkdir()
    url = f"sqlite:///{folder}/p%20q.db"
    sets = ("--set", "objective.kind=analytic", "--set", "search.sampler=random", "--trials", "3", "-q")
    ran = run_tune("run", "--storage", url, "--study", "adv-sq", *sets, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert sorted(p.name for p in folder.iterdir()) == ["p q.db", "p q.db.lock"]
    with sqlite3.connect(folder / "p q.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    status = run_tune("status", "--storage", url, "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    (row,) = json.loads(status.stdout)
    assert row["study"] == "adv-sq" and row["complete"] == 3


@pytest.mark.parametrize(
    ("url", "needles"),
    [
        (
            "sqlite://user:SekretL@/od d/u.db",
            ("has a user, password or host part", "write sqlite:///od d/u.db"),
        ),
        ("sqlite://somehost/u.db", ("has a user, password or host part", "write sqlite:///u.db")),
        ("sqlite:///u.db?password=SekretQ", ("has query parameter(s) password", "only ?timeout=SECONDS")),
        ("sqlite:///u.db?uri=true&mode=ro", ("has query parameter(s) mode, uri",)),
        ("sqlite:///u.db?timeout=5&timeout=6", ("has timeout more than once",)),
        ("sqlite:///u.db?timeout=abc", ("timeout must be a number of seconds",)),
        ("sqlite:///my?u.db", ("has query parameter(s) u.db", "written %3F")),
        ("sqlite:///u.db-wal", ("names u.db-wal", "name the database itself")),
        ("sqlite:///u.db.lock", ("names u.db.lock", "name the database itself")),
        ("sqlite://", ("in-memory",)),
        ("sqlite:///:memory:", ("in-memory",)),
    ],
)
def test_a_sqlite_url_sqlite_would_misread_is_refused_without_its_password(
    url: str, needles: tuple[str, ...]
) -> None:
    from marstune.tuning.errors import StorageError
    from marstune.tuning.study.urls import check_url, resolve_url

    with pytest.raises(StorageError) as caught:
        check_url(resolve_url(url))
    message = str(caught.value)
    assert "Sekret" not in message and "\n" not in message
    for needle in needles:
        assert needle in message, message
    if "Sekret" in url:
        assert "in-memory" not in message


def test_a_sqlite_url_with_a_password_query_is_one_line_and_no_warning(tmp_path: Path) -> None:
    from tests.conftest import run_tune

    result = run_tune("status", "--storage", "sqlite:///x.db?password=SekretW", cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and "query parameter" in lines[0]
    assert "SAWarning" not in result.stderr and "SekretW" not in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []
