"""The storage a worker uses: Optuna's RDBStorage, every call of which rides out a database outage.

Each RDBStorage method is one transaction, so a method is retried whole (study/outage.Retrier): a
restart costs the worker a pause, not its life, and a trial that finished during the outage is told
when the database is back. Two writes are not idempotent across a lost acknowledgement, and are made so:
finishing a trial whose first try did commit (the retry sees it finished, as asked) and popping a queued
trial (a trial left RUNNING with no heartbeat and no worker is failed as stale, see below).

Heartbeats are judged here too, and only while this process's own calls go through promptly
(outage.HEALTH): after a stall every heartbeat in the database is old, and a worker that reaped on that
evidence would fail its live peers' trials. A stale trial is failed in one transaction with its reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Container, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import optuna
import sqlalchemy
from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from marstune.tuning.study import tables
from marstune.tuning.study.outage import HEALTH, Retrier
from marstune.tuning.study.tables import FailKind

T = TypeVar("T")


class ResilientStorage(RDBStorage):
    """RDBStorage whose calls wait out an outage (up to $TUNE_DB_RETRY_SECONDS), then fail in one line."""

    def __init__(self, url: str, retrier: Retrier, **kwargs: Any) -> None:
        self.retrier = retrier
        self._unbeaten: dict[int, float] = {}  # RUNNING trial id -> when first seen without a heartbeat
        super().__init__(url, **kwargs)

    def _retry(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self.retrier(fn, self, *args, **kwargs)

    # --- studies
    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self._retry(RDBStorage.create_new_study, directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._retry(RDBStorage.delete_study, study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._retry(RDBStorage.set_study_user_attr, study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._retry(RDBStorage.set_study_system_attr, study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._retry(RDBStorage.get_study_id_from_name, study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._retry(RDBStorage.get_study_name_from_id, study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._retry(RDBStorage.get_study_directions, study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._retry(RDBStorage.get_study_user_attrs, study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._retry(RDBStorage.get_study_system_attrs, study_id)

    def get_all_studies(self) -> list[optuna.study.FrozenStudy]:
        return self._retry(RDBStorage.get_all_studies)

    # --- trials (the private ones are what Optuna's cache in front of this storage calls)
    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        return self._retry(RDBStorage._create_new_trial, study_id, template_trial)

    def _set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
        previous_distribution: BaseDistribution | None,
    ) -> None:
        args = (trial_id, param_name, param_value_internal, distribution, previous_distribution)
        self._retry(RDBStorage._set_trial_param, *args)

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        return self._retry(RDBStorage.get_trial_param, trial_id, param_name)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        tries = 0

        def once(storage: RDBStorage) -> bool:
            nonlocal tries
            tries += 1
            try:
                return RDBStorage.set_trial_state_values(storage, trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                # The try before this one committed and only its answer was lost: done as asked.
                if tries > 1 and state.is_finished() and _finished_as(storage, trial_id, state, values):
                    return True
                raise

        return self._retry(once)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._retry(RDBStorage.set_trial_intermediate_value, trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._retry(RDBStorage.set_trial_user_attr, trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._retry(RDBStorage.set_trial_system_attr, trial_id, key, value)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._retry(RDBStorage.get_trial_id_from_study_id_trial_number, study_id, trial_number)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._retry(RDBStorage.get_trial, trial_id)

    def _get_trials(
        self,
        study_id: int,
        states: Container[TrialState] | None,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
    ) -> list[FrozenTrial]:
        args = (study_id, states, included_trial_ids, trial_id_greater_than)
        return self._retry(RDBStorage._get_trials, *args)

    def _get_best_trial_id(self, study_id: int, direction: StudyDirection) -> int:
        return self._retry(RDBStorage._get_best_trial_id, study_id, direction)

    # --- heartbeats
    def record_heartbeat(self, trial_id: int) -> None:
        """One try, never an exception: the next beat is the retry, and a missed one is HEALTH's news
        (this runs in the heartbeat thread, which must neither die nor hold up the end of a trial)."""
        try:
            with HEALTH.watch(self.retrier.slow):
                RDBStorage.record_heartbeat(self, trial_id)
        except Exception:  # noqa: BLE001 - recorded as trouble by the watch; nothing else to do here
            pass

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """RUNNING trials silent for a grace period: none while this process's own calls fail or hang.

        A trial with no heartbeat at all (popped from the queue or created during an outage whose
        answer was lost, or whose worker died before its first beat) counts once this process has seen
        it so for a grace period: it has no database time to judge by, so this process's clock does."""
        grace = self.grace_period or 2 * (self.heartbeat_interval or 1)
        silent = self._retry(lambda storage: _silent_trials(storage, study_id, grace))
        now = time.monotonic()
        beatless = set(silent[1])
        self._unbeaten = {t: self._unbeaten.get(t, now) for t in beatless}
        stale = silent[0] + [t for t, seen in self._unbeaten.items() if now - seen > grace]
        return stale if HEALTH.steady(grace, self.retrier.slow) else []

    def fail_stale(self, trial_id: int, worker: str | None) -> str | None:
        """Fail one stale trial with its reason, in one transaction; its reason, or None when it is no
        longer RUNNING (its worker finished it after all) or belongs to `worker` (this process)."""
        return self._retry(lambda storage: _fail_stale(storage, trial_id, worker))


def _silent_trials(storage: RDBStorage, study_id: int, grace: float) -> tuple[list[int], list[int]]:
    """(ids of RUNNING trials whose last heartbeat is older than `grace` by the database's clock,
    ids of RUNNING trials with no heartbeat at all)."""
    with _create_scoped_session(storage.scoped_session, True) as session:
        now = session.execute(sqlalchemy.func.now()).scalar()
        assert now is not None
        now = now.replace(tzinfo=None)  # Optuna stores naive times; PostgreSQL answers aware ones
        rows = (
            session.query(models.TrialModel.trial_id, models.TrialHeartbeatModel.heartbeat)
            .outerjoin(models.TrialHeartbeatModel)
            .filter(models.TrialModel.state == TrialState.RUNNING, models.TrialModel.study_id == study_id)
            .all()
        )
    old = [tid for tid, beat in rows if beat is not None and now - beat > timedelta(seconds=grace)]
    return old, [tid for tid, beat in rows if beat is None]


def _fail_stale(storage: RDBStorage, trial_id: int, me: str | None) -> str | None:
    with _create_scoped_session(storage.scoped_session) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
        owner = models.TrialUserAttributeModel.find_by_trial_and_key(trial, "worker", session)
        worker = None if owner is None else str(json.loads(owner.value_json))
        if trial.state != TrialState.RUNNING or (me is not None and worker == me):
            return None
        beat = models.TrialHeartbeatModel.where_trial_id(trial_id, session)
        if beat is None:
            reason = (
                f"worker {worker} never sent a heartbeat for it"
                if worker
                else "no worker ever sent a heartbeat for it (it was started while the storage was failing)"
            )
        else:
            reason = f"worker {worker or '(unknown)'} stopped sending heartbeats at {_clock(beat.heartbeat)}"
        attrs = ((models.TrialUserAttributeModel, "fail_reason", reason),)
        attrs += ((models.TrialSystemAttributeModel, tables.FAIL_KIND_ATTR, str(FailKind.STALE)),)
        for model, key, value in attrs:
            storage._set_trial_attr_without_commit(session, model, trial_id, key, value)  # noqa: SLF001
        trial.state = TrialState.FAIL
        trial.datetime_complete = datetime.now()
    return reason


def _clock(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} (database clock)"


def _finished_as(
    storage: RDBStorage, trial_id: int, state: TrialState, values: Sequence[float] | None
) -> bool:
    trial = RDBStorage.get_trial(storage, trial_id)
    return trial.state == state and (values is None or list(trial.values or []) == list(values))
