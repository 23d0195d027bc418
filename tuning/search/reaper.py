"""Dead workers' trials: failed by heartbeat, with their reason, and re-queued once by any live worker.

Optuna only looks for stale trials when a worker starts a trial; with trials of many minutes a dead
peer's trial would sit RUNNING until a live worker finished its own. Live workers therefore also look
while they train (once per heartbeat interval, from the epoch report) and while they wait.

Only a worker whose own storage calls went through promptly for a whole grace period judges others
(study/resilient.py): after a database stall every heartbeat is old, and its owners are alive.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from marstune.tuning.study.claim import StudyClaim
from marstune.tuning.study.settings import heartbeat_interval

if TYPE_CHECKING:
    import optuna


def reap_stale(study: optuna.Study, url: str, me: str) -> list[str]:
    """Fail dead workers' trials (never `me`'s, this process); the retry callback re-queues each once
    with the same params. Returns one line per trial failed.

    Under the claim, so two live workers never both fail (and both re-queue) the same trial.
    """
    import optuna

    storage = study._storage  # noqa: SLF001 - the storage API takes ids
    rdb = getattr(storage, "_backend", storage)  # Optuna wraps an RDBStorage in a cache
    lines = []
    with StudyClaim(storage, url, study.study_name):
        if not hasattr(rdb, "fail_stale"):  # a storage not opened for a worker: Optuna's own way
            optuna.storages.fail_stale_trials(study)
            return lines
        callback = rdb.get_heartbeat_stale_trial_callback()
        for trial_id in rdb._get_stale_trial_ids(study._study_id):  # noqa: SLF001
            reason = rdb.fail_stale(trial_id, me)
            if reason is None:
                continue
            failed = copy.deepcopy(storage.get_trial(trial_id))
            if callback is not None:
                callback(study, failed)
            lines.append(f"trial {failed.number} failed: {reason}; queued again with the same params")
    return lines


class Reaper:
    """Runs `reap_stale` at most once per heartbeat interval; `note` tells each trial it failed."""

    def __init__(self, study: optuna.Study, url: str, me: str, note: Callable[[str], None]) -> None:
        self.study, self.url, self.me, self.note = study, url, me, note
        self.every, self.last = heartbeat_interval(), time.monotonic()

    def now(self) -> None:
        self.last = time.monotonic()
        for line in reap_stale(self.study, self.url, self.me):
            self.note(line)

    def maybe(self) -> None:
        if time.monotonic() - self.last >= self.every:
            self.now()
