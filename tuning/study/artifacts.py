"""Kept models: the best-epoch weights of a study's top K completed trials, in Optuna's artifact store.

Each kept model is a `.keras` file uploaded with `optuna.artifacts` while its trial runs, so the trial
links it (system attribute `artifacts:<id>`) and optuna-dashboard lists and serves it. The store is a
FileSystemArtifactStore in the folder the study recorded when it was made (study system attribute
`tune:artifacts`, an absolute path): studies/<study>/artifacts by default, a shared path on a cluster
(`search.artifacts`). A model that falls out of the top K is deleted with its link, so nothing dangles.
A model is written whole first (a temporary file beside it, flushed, then renamed) and linked only then:
a full disk or a killed worker leaves no linked half of a model (Optuna's upload_artifact links first).
The link records the file's sha256, so a file swapped or changed after it was kept is never taken for
the trial's model. Export, predict, the report and the final run read the models back; every load keeps
safe_mode=True.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from marstune.tuning.errors import StorageError
from marstune.tuning.study import tables

if TYPE_CHECKING:
    import optuna
    import sqlalchemy
    from optuna.artifacts import FileSystemArtifactStore

ARTIFACTS_ATTR = "tune:artifacts"  # study system attribute: the kept models' folder (absolute)
MODEL_FILE = "model.keras"  # what a kept model's artifact is called (the dashboard shows the name)
PREFIX = "artifacts:"  # Optuna's trial system attribute prefix for artifact metadata


def default_folder(study: str) -> Path:
    return Path("studies") / study / "artifacts"


def store_at(folder: str | Path) -> FileSystemArtifactStore:
    from optuna.artifacts import FileSystemArtifactStore

    Path(folder).mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(Path(folder))


def check_folder(folder: str | Path, keep_models: int) -> None:
    """Before any trial trains: the kept models' folder can be made and written (a file in its path, a
    read-only mount or a missing shared path is one line now, not a traceback after the first trial)."""
    from marstune.tuning.outputs import check_folder_output

    if keep_models > 0:
        check_folder_output(Path(folder), flag="search.artifacts (the kept models' folder)")


def folder_of(study: optuna.Study) -> Path:
    """The study's artifacts folder, recorded at creation (older studies: the default, recorded now)."""
    storage, sid = study._storage, study._study_id  # noqa: SLF001 - Study hides its storage and id
    found = storage.get_study_system_attrs(sid).get(ARTIFACTS_ATTR)
    if found is None:
        found = str(default_folder(study.study_name).absolute())
        storage.set_study_system_attr(sid, ARTIFACTS_ATTR, found)
    return Path(found)


@dataclass(frozen=True)
class KeptModel:
    trial: int  # the trial's number
    value: float
    artifact_id: str
    folder: Path
    sha256: str | None = None  # recorded when the model was kept (None: kept before digests were)

    @property
    def path(self) -> Path:
        return self.folder / self.artifact_id

    def fault(self) -> str | None:
        """Why the file is not the model kept for the trial (missing, or changed or replaced since it was
        kept: another trial's model swapped in loads fine), or None."""
        if not self.path.is_file():
            return f"its file {self.path} is missing"
        if self.sha256 is not None and sha256_of(self.path) != self.sha256:
            return f"its file {self.path} is not the one kept for trial {self.trial} (changed since)"
        return None


def kept_path(
    storage: optuna.storages.BaseStorage, study_id: int, trial: optuna.trial.FrozenTrial
) -> Path | None:
    """The file of a trial's kept model (from Optuna's objects), or None when it has none that is intact
    (missing, or not the file that was kept)."""
    folder = storage.get_study_system_attrs(study_id).get(ARTIFACTS_ATTR)
    for key, meta in trial.system_attrs.items():
        decoded = json.loads(meta) if isinstance(meta, str) else meta
        if folder and key.startswith(PREFIX) and decoded and decoded.get("filename") == MODEL_FILE:
            kept = KeptModel(trial.number, trial.value or 0.0, key.removeprefix(PREFIX), Path(folder))
            kept = dataclasses.replace(kept, sha256=decoded.get("sha256"))
            return kept.path if kept.fault() is None else None
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_whole(folder: Path, file: Path) -> tuple[str, str]:
    """Copy `file` into the store folder under a new artifact id, complete or not at all: a temporary
    name beside it, flushed to the disk, then renamed (atomic on one filesystem). Returns the id and
    the sha256 of what was written."""
    artifact_id = str(uuid.uuid4())
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{artifact_id}.partial"  # no artifact id: never served, listed or linked
    digest = hashlib.sha256()
    try:
        with file.open("rb") as source, partial.open("wb") as target:
            while chunk := source.read(1 << 20):
                target.write(chunk)
                digest.update(chunk)
            target.flush()
            os.fsync(target.fileno())
        os.replace(partial, folder / artifact_id)
    except OSError as exc:  # the error names the store's folder, not the temporary name
        raise OSError(exc.errno, exc.strerror, str(folder)) from exc
    finally:
        partial.unlink(missing_ok=True)
    return artifact_id, digest.hexdigest()


def link(artifact_id: str, sha256: str) -> dict[str, str]:
    """The trial system attribute that links a kept model: the metadata Optuna's upload_artifact writes
    (readers such as optuna-dashboard take their keys from it) plus the file's sha256."""
    meta = {"artifact_id": artifact_id, "filename": MODEL_FILE, "mimetype": "application/octet-stream"}
    return {PREFIX + artifact_id: json.dumps({**meta, "encoding": None, "sha256": sha256})}


def keep(trial: optuna.Trial, file: Path) -> str:
    """Store a finished trial's model while the trial still runs (Optuna links only running trials):
    written whole, then linked."""
    artifact_id, sha256 = write_whole(folder_of(trial.study), file)
    for key, meta in link(artifact_id, sha256).items():
        trial.storage.set_trial_system_attr(trial._trial_id, key, meta)  # noqa: SLF001
    return artifact_id


def stored_link(study: optuna.Study, file: Path) -> dict[str, str]:
    """Write a model into the study's store now and return the trial system attribute that links it, for
    trials added whole (`study.add_trial`, the Keras Tuner engine) rather than run through Optuna."""
    return link(*write_whole(folder_of(study), file))


def inherited_links(system_attrs: dict[str, object]) -> list[str]:
    """The kept-model links a retried trial copied from the attempt that died (Optuna's retry callback
    copies every system attribute): that model is not this attempt's, so the retry drops them."""
    if "failed_trial" not in system_attrs:
        return []
    return [key for key in system_attrs if key.startswith(PREFIX)]


class AllStudiesStore:
    """One artifact store over every study's folder, for optuna-dashboard (it serves all studies).

    `refresh` reads the folders again when an artifact is in none of the known ones: a study made after
    the dashboard started (the compose stack starts it before any study) has a folder of its own."""

    def __init__(self, folders: Sequence[Path], refresh: Callable[[], Sequence[Path]] | None = None) -> None:
        self.folders = [Path(f) for f in folders] or [Path("studies") / "artifacts"]
        self.refresh = refresh

    def _where(self, artifact_id: str) -> Path:
        for folder in self.folders:
            if (folder / artifact_id).is_file():
                return folder
        if self.refresh is not None:
            known = set(self.folders)
            new = [Path(f) for f in self.refresh() if Path(f) not in known]
            self.folders = [*self.folders, *new]
            for folder in new:
                if (folder / artifact_id).is_file():
                    return folder
        from optuna.artifacts.exceptions import ArtifactNotFound

        raise ArtifactNotFound(f"no artifact {artifact_id} in {', '.join(map(str, self.folders))}")

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return store_at(self._where(artifact_id)).open_reader(artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        store_at(self.folders[0]).write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        store_at(self._where(artifact_id)).remove(artifact_id)


def all_folders(conn: sqlalchemy.Connection) -> list[Path]:
    """The artifacts folder of every study in the storage."""
    found = (
        tables.study_system_attrs(conn, sid).get(ARTIFACTS_ATTR) for sid in tables.study_ids(conn).values()
    )
    return sorted({Path(f) for f in found if f})


def kept_models(conn: sqlalchemy.Connection, sid: int) -> list[KeptModel]:
    """Every kept model of study `sid`, best first (plain SQL: no Optuna import)."""
    folder = tables.study_system_attrs(conn, sid).get(ARTIFACTS_ATTR)
    if folder is None:
        return []
    out = []
    for number, value, key, meta in tables.trial_artifacts(conn, sid, PREFIX):
        if meta and meta.get("filename") == MODEL_FILE:
            digest = meta.get("sha256")
            out.append(KeptModel(number, value, key.removeprefix(PREFIX), Path(folder), digest))
    return sorted(out, key=lambda k: (-k.value, k.trial))


def makes_the_cut(value: float, kept: Sequence[KeptModel], keep_models: int) -> bool:
    """Would a trial scoring `value` be among the top `keep_models` kept models?"""
    if keep_models <= 0:
        return False
    return len(kept) < keep_models or value > min(k.value for k in kept)


def prune(url: str, study: str, keep_models: int) -> list[KeptModel]:
    """Delete kept models beyond the top `keep_models` (file and link); returns what was deleted.

    Run under the study claim by the engine, so two workers never delete the same model twice.
    """
    with tables.writing(url) as conn:
        sid = tables.study_id(conn, study)
        gone = kept_models(conn, sid)[max(0, keep_models) :]
        for model in gone:
            model.path.unlink(missing_ok=True)
            tables.forget_trial_attr(conn, sid, model.trial, PREFIX + model.artifact_id)
    return gone


def kept_of_study(url: str, study: str) -> list[KeptModel]:
    """Every kept model of the study, best first."""
    with tables.reading(url) as conn:
        return kept_models(conn, tables.study_id(conn, study))


def best_kept(url: str, study: str, trial: int | None = None) -> KeptModel | None:
    """The best trial's kept model (or trial `trial`'s), if it has one."""
    with tables.reading(url) as conn:
        sid = tables.study_id(conn, study)
        best = tables.best_trial_id(conn, sid)
        wanted = trial if trial is not None else (best[1] if best is not None else None)
        models = [k for k in kept_models(conn, sid) if k.trial == wanted]
    if models and not models[0].path.is_file():
        raise StorageError(
            f"the kept model of trial {models[0].trial} is not at {models[0].path}; run this where the "
            "study's artifacts folder is reachable (search.artifacts)"
        )
    if models and (fault := models[0].fault()):
        raise StorageError(
            f"the kept model of trial {models[0].trial}: {fault}; use another model: `tune export-best` "
            "ships the best kept model that is intact, if any (for predict: pass its .keras with --model)"
        )
    return models[0] if models else None
