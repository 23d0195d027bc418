"""Riding out an outage, piece by piece: which errors are passing, the retry policy and its lines, the
settings, the timeouts on every connection, the reaping guard and the claim that a restart takes away.

Real errors from real drivers: a closed port on 127.0.0.1 refuses, the shared server answers.
"""

from __future__ import annotations

import time
from datetime import timedelta

import optuna
import psycopg
import pytest
import sqlalchemy
from optuna.trial import TrialState

from marstune.tuning.errors import StorageError
from marstune.tuning.study import outage, settings
from marstune.tuning.study.claim import StudyClaim
from marstune.tuning.study.outage import HEALTH, Retrier, passing_cause
from marstune.tuning.study.storage import engine_kwargs, open_storage
from tests.tuning.servers import free_port


def _refused() -> Exception:
    try:
        psycopg.connect(f"host=127.0.0.1 port={free_port()} user=u dbname=d connect_timeout=2")
    except psycopg.OperationalError as exc:
        return exc
    raise AssertionError("a closed port answered")


def test_passing_errors_are_told_apart_from_real_ones_through_optunas_wrapping() -> None:
    refused = _refused()
    assert passing_cause(refused) == "connection refused: the server is down or restarting"
    try:  # Optuna's StorageInternalError ("invalid data in the commit") around the driver's error
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from refused
    except optuna.exceptions.StorageInternalError as wrapped:
        assert passing_cause(wrapped) == "connection refused: the server is down or restarting"
    assert passing_cause(RuntimeError("FATAL:  sorry, too many clients already")) == outage.TOO_MANY_CLIENTS
    assert passing_cause(RuntimeError("terminating connection due to administrator command"))
    assert passing_cause(ValueError("duplicate key value violates unique constraint")) is None
    gave_up = Retrier("postgresql+psycopg://u@db/x", limit=0).gave_up(
        "connection refused: the server is down"
    )
    assert passing_cause(gave_up) is None  # a retry that gave up is final: no retry around it waits again
    assert passing_cause(RuntimeError('relation "trials" does not exist')) is None


def test_retrier_waits_says_so_once_and_says_when_the_storage_is_back(capsys: pytest.CaptureFixture) -> None:
    url = "postgresql+psycopg://tune:S3cretPw@db:5432/tune"
    calls = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 4:
            raise RuntimeError("connection failed: Connection refused")
        return "done"

    assert Retrier(url, limit=30)(flaky) == "done"
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(calls) == 4 and len(lines) == 2, lines
    assert lines[0] == (
        "[tune] storage postgresql+psycopg://tune:***@db:5432/tune unreachable: connection refused: the "
        "server is down or restarting; waiting up to 30 s, then going on"
    )
    assert lines[1].startswith("[tune] storage postgresql+psycopg://tune:***@db:5432/tune is back after ")
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert gaps[0] >= outage.FIRST_DELAY and gaps[1] > gaps[0], gaps  # backoff


def test_retrier_gives_up_after_its_limit_in_one_line_without_the_password() -> None:
    url = "postgresql+psycopg://tune:S3cretPw@db:5432/tune"

    def down() -> None:
        raise RuntimeError("server closed the connection unexpectedly")

    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        Retrier(url, limit=1)(down)
    assert 1 <= time.monotonic() - started < 3
    message = str(caught.value)
    assert "S3cretPw" not in message and "\n" not in message
    assert message.startswith(
        "storage postgresql+psycopg://tune:***@db:5432/tune unreachable for 1 s ($TUNE_DB_RETRY_SECONDS): "
        "the connection was lost;"
    )
    with pytest.raises(ValueError, match="not passing"):  # anything else is not waited for
        Retrier(url, limit=30)(lambda: (_ for _ in ()).throw(ValueError("not passing")))


def test_first_contact_tells_a_wrong_address_at_once_but_waits_for_a_full_server() -> None:
    retry = Retrier("postgresql+psycopg://u@127.0.0.1:1/x", limit=30, on_first_contact=True)
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        retry(lambda: (_ for _ in ()).throw(_refused()))
    assert time.monotonic() - started < 3
    tries = []

    def full() -> int:
        tries.append(1)
        if len(tries) < 3:
            raise RuntimeError("FATAL:  sorry, too many clients already")
        return 7

    assert retry(full) == 7 and len(tries) == 3


def test_storage_settings_come_from_the_environment_and_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TUNE_DB_RETRY_SECONDS", "TUNE_DB_CONNECT_TIMEOUT", "TUNE_DB_STATEMENT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    assert (settings.retry_seconds(), settings.connect_timeout(), settings.statement_timeout()) == (
        300,
        5,
        30,
    )
    monkeypatch.setenv("TUNE_DB_RETRY_SECONDS", "0")  # give up at the first failure
    assert settings.retry_seconds() == 0
    monkeypatch.setenv("TUNE_DB_RETRY_SECONDS", "5m")
    with pytest.raises(StorageError, match=r"TUNE_DB_RETRY_SECONDS must be whole seconds >= 0, got '5m'"):
        settings.check_all()
    monkeypatch.setenv("TUNE_DB_RETRY_SECONDS", "60")
    monkeypatch.setenv("TUNE_DB_CONNECT_TIMEOUT", "0")
    with pytest.raises(StorageError, match=r"TUNE_DB_CONNECT_TIMEOUT must be whole seconds >= 1, got '0'"):
        settings.check_all()


def test_every_server_connection_has_a_connect_and_a_statement_timeout(
    monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    monkeypatch.setenv("TUNE_DB_CONNECT_TIMEOUT", "3")
    monkeypatch.setenv("TUNE_DB_STATEMENT_TIMEOUT", "7")
    args = engine_kwargs(pg_url)["connect_args"]
    assert args == {"connect_timeout": 3, "options": "-c statement_timeout=7000"}
    given = engine_kwargs(pg_url + "?connect_timeout=9&options=-c%20work_mem%3D8MB")["connect_args"]
    assert given == {"options": "-c work_mem=8MB -c statement_timeout=7000"}  # the URL's own kept
    engine = sqlalchemy.create_engine(pg_url, **engine_kwargs(pg_url))
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SHOW statement_timeout")).scalar() == "7s"
    finally:
        engine.dispose()


def _stale_trial(storage: optuna.storages.RDBStorage, url: str) -> tuple[optuna.Study, int]:
    study = optuna.create_study(storage=storage, study_name="guard")
    trial = study.ask()
    trial.set_user_attr("worker", "elsewhere:42")
    storage.record_heartbeat(trial._trial_id)
    with storage.engine.begin() as conn:  # its last beat an hour ago, by the database's own clock
        now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar()
        old = (now - timedelta(hours=1)).replace(tzinfo=None)
        conn.execute(sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = :t"), {"t": old})
    return study, trial._trial_id


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_stale_heartbeats_are_judged_only_after_a_grace_period_of_steady_calls(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNE_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("TUNE_GRACE_PERIOD", "3")
    storage = open_storage(storage_url, create=True, heartbeat=True, retry=True)
    try:
        study, tid = _stale_trial(storage, storage_url)
        HEALTH.trouble()  # a call of this process just failed or hung: its view proves nothing
        assert storage._get_stale_trial_ids(study._study_id) == []
        monkeypatch.setattr(HEALTH, "trouble_at", time.monotonic() - 60)  # a minute of steady calls
        assert storage._get_stale_trial_ids(study._study_id) == [tid]
        assert storage.fail_stale(tid, "elsewhere:42") is None  # never one's own trial
        reason = storage.fail_stale(tid, "here:1")
        assert reason is not None and reason.startswith("worker elsewhere:42 stopped sending heartbeats at ")
        failed = storage.get_trial(tid)
        assert failed.state == TrialState.FAIL and failed.user_attrs["fail_reason"] == reason
        assert failed.system_attrs["tune:fail_kind"] == "stale"
        assert storage.fail_stale(tid, "here:1") is None  # already failed: nothing twice
        beatless = study.ask()._trial_id  # no heartbeat at all: judged by this process's clock
        assert storage._get_stale_trial_ids(study._study_id) == []
        storage._unbeaten[beatless] -= 10
        assert storage._get_stale_trial_ids(study._study_id) == [beatless]
        assert "no worker ever sent a heartbeat" in (storage.fail_stale(beatless, "here:1") or "")
    finally:
        storage.engine.dispose()


def test_a_claim_whose_session_ended_says_so_when_released(pg_url: str) -> None:
    storage = open_storage(pg_url, create=True)
    try:
        claim = StudyClaim(storage, pg_url, "s")
        with claim:
            pass
        assert claim.release() is True
        claim = StudyClaim(storage, pg_url, "s").__enter__()
        backend = claim._conn.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar()
        with storage.engine.connect() as other:  # what a database restart does to the claim's session
            other.execute(sqlalchemy.text("SELECT pg_terminate_backend(:p)"), {"p": backend})
        assert claim.release() is False
        with StudyClaim(storage, pg_url, "s") as again:  # the lock went with the session: free again
            assert again.release() is True
    finally:
        storage.engine.dispose()
