"""Dead workers' trials: failed by heartbeat and re-queued once, noticed by any live worker.

Optuna only looks for stale trials when a worker starts a trial; with trials of many minutes a dead
peer's trial would sit RUNNING until a live worker finished its own. Live workers therefore also look
while they train (once per heartbeat interval, from the epoch report).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from marstune.tuning.study.claim import StudyClaim
from marstune.tuning.study.storage import heartbeat_interval

if TYPE_CHECKING:
    import optuna


def reap_stale(study: optuna.Study, url: str) -> None:
    """Fail dead workers' trials; the retry callback re-queues each once with the same params.

    Under the claim, so two live workers never both fail (and both re-queue) the same trial.
    """
    import optuna

    with StudyClaim(study._storage, url, study.study_name):  # noqa: SLF001
        optuna.storages.fail_stale_trials(study)


class Reaper:
    """Runs `reap_stale` at most once per heartbeat interval."""

    def __init__(self, study: optuna.Study, url: str) -> None:
        self.study, self.url = study, url
        self.every, self.last = heartbeat_interval(), time.monotonic()

    def maybe(self) -> None:
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            reap_stale(self.study, self.url)
