"""Which trials keep their model: the engines' side of study/artifacts.py.

A trial that completes asks `decide(value)`: if its score would be among the study's top K kept models
it gets a path to save its best-epoch model to; the engine then `store`s the file as the trial's artifact
(while the trial still runs) and `prune`s the study back to K under the study claim.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from marstune.tuning.errors import is_disk_full
from marstune.tuning.study import artifacts, tables
from marstune.tuning.study.claim import StudyClaim

if TYPE_CHECKING:
    import optuna


class ModelKeeper:
    def __init__(self, url: str, study: str, keep_models: int) -> None:
        self.url, self.study, self.keep_models = url, study, keep_models
        self._folder = Path(tempfile.mkdtemp(prefix="tune-kept-"))  # this process's models in flight
        # The last store found the kept models' disk full: the error and the size of the model it wrote.
        self.no_room: tuple[OSError, int] | None = None

    def decide(self, value: float) -> Path | None:
        """Where to save a completed trial's model, or None when it would not make the top K."""
        if self.keep_models <= 0:
            return None
        with tables.reading(self.url) as conn:
            kept = artifacts.kept_models(conn, tables.study_id(conn, self.study))
        if not artifacts.makes_the_cut(value, kept, self.keep_models):
            return None
        return self.file

    @property
    def file(self) -> Path:
        """Where `decide` asks the objective to save the model."""
        return self._folder / artifacts.MODEL_FILE

    def store(self, trial: optuna.Trial) -> str | None:
        """Upload the model `decide` asked for (if the objective saved it); returns its artifact id."""
        file = self.file
        if not file.is_file():
            return None
        try:
            return artifacts.keep(trial, file)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            # the trial completes without its model; then the run stops, naming the disk
            self.no_room = (exc, file.stat().st_size)
            return None
        finally:
            file.unlink(missing_ok=True)

    def forget_inherited(self, trial: optuna.Trial, system_attrs: dict[str, object]) -> None:
        """A retried trial starts without the dead attempt's model links (study/artifacts.py)."""
        keys = artifacts.inherited_links(system_attrs)
        if not keys:
            return
        with tables.writing(self.url) as conn:
            sid = tables.study_id(conn, self.study)
            for key in keys:
                tables.forget_trial_attr(conn, sid, trial.number, key)

    def prune(self, storage: optuna.storages.BaseStorage) -> None:
        """Back to the top K kept models, under the study claim (one worker deletes at a time)."""
        if self.keep_models <= 0:
            return
        with StudyClaim(storage, self.url, self.study):
            artifacts.prune(self.url, self.study, self.keep_models)

    def close(self) -> None:
        for leftover in self._folder.glob("*"):
            leftover.unlink(missing_ok=True)
        self._folder.rmdir()
