"""Files of the final run: the exported best config it reads, the run folder and checkpoints it writes.

No TensorFlow here (the config is checked before anything heavy loads); Keras objects are passed in.
Checkpoints are folders swapped in whole (write `<name>.new/`, rename), so an interruption at any moment
leaves either the previous epoch's checkpoint or this one, never a mix of the two.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from marstune.tuning.config.spec import Spec, safe_load_unique, spec_from_stored, yaml_problem
from marstune.tuning.errors import SpecError, TuneError, translate
from marstune.tuning.final.checks import check_agreement, check_keys, check_values
from marstune.tuning.outputs import write_atomically
from marstune.tuning.study.export import EXPORT_FORMAT, EXPORT_KIND


@dataclass(frozen=True)
class Export:
    """A validated `tune export-best` file."""

    path: Path
    study: str
    trial: int
    value: float
    config: dict[str, Any]  # the best trial's full configuration (model keys, maybe learning_rate, ...)
    spec: Spec  # the study's resolved spec (data, split, training settings)
    data_path: str | None  # the data the study searched on; None = the built-in synthetic set
    fingerprint: str | None
    model: Path | None = None  # the best trial's kept model, written beside the export (warm start)
    model_sha256: str | None = None  # what export-best wrote there (None: an export from before digests)


def read_export(path: Path) -> Export:
    """Read and validate an export; any other file (a spec, a foreign YAML) is refused with one line."""
    fix = "pass the file `tune export-best` wrote, e.g. studies/unet-mars.best.yaml"
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise SpecError(f"--config {path} {what}; {fix}")
    try:
        raw = safe_load_unique(path.read_text())  # safe: a !!python tag is an error, never code
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"--config {path} cannot be read ({exc}); {fix}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"--config {path} is not plain YAML{yaml_problem(exc)}; {fix}") from None
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if kind != EXPORT_KIND:
        looks = " (it looks like a study spec: that goes to `tune run --spec`)" if _is_spec(raw) else ""
        raise SpecError(
            f"--config {path} is not a best-config export: kind is {kind!r}, expected {EXPORT_KIND!r}"
            f"{looks}; make one with `tune export-best --study NAME`"
        )
    if raw.get("format") != EXPORT_FORMAT:
        raise SpecError(
            f"--config {path} has export format {raw.get('format')!r}, this tune reads {EXPORT_FORMAT}; "
            "export it again with this version's `tune export-best`"
        )
    config = raw.get("config")
    if not isinstance(config, dict):
        raise SpecError(f"--config {path}: `config` must be a mapping of hyperparameters, got {config!r}")
    from marstune.models.unet import validate_config

    check_keys(raw, path)  # these two name the file themselves
    check_values(raw, path)
    try:
        validate_config(config)
        spec = spec_from_stored(raw.get("spec") or {})
    except Exception as exc:
        ours = translate(exc)
        if ours is None:
            raise
        raise type(ours)(f"--config {path}: {ours}") from None
    check_agreement(raw, path)
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    return Export(
        path=path,
        study=str(raw.get("study", spec.study)),
        trial=int(raw.get("trial", -1)),
        value=float(raw.get("value", float("nan"))),
        config=dict(config),
        spec=spec,
        data_path=data.get("path") or spec.data.path,
        fingerprint=data.get("fingerprint"),
        model=path.parent / str(raw["model"]) if isinstance(raw.get("model"), str) else None,
        model_sha256=raw.get("model_sha256"),
    )


def _is_spec(raw: Any) -> bool:
    return isinstance(raw, dict) and bool({"space", "baseline", "search", "train"} & set(raw))


def run_spec(export: Export, *, data: str | None, max_items: int | None, seed: int | None) -> Spec:
    """The study's spec with this run's data, subset and seed: the same cleaning and split as the search."""
    raw = copy.deepcopy(export.spec.raw)
    raw["data"]["path"] = data if data is not None else export.data_path
    if max_items is not None:
        raw["train"]["max_items"] = max_items
    if seed is not None:
        raw["train"]["seed"] = seed
    return spec_from_stored(raw)


# ---- the run folder -------------------------------------------------------------------------------------


def write_json(path: Path, data: Any) -> None:
    write_atomically(path, json.dumps(data, indent=2, allow_nan=False, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    """numpy scalars and arrays -> JSON; nan is not JSON, so it becomes null."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TuneError(f"cannot read {path} ({exc}); the run folder is damaged: start a new --out") from None


def latest_run(runs: Path, study: str) -> Path | None:
    """The newest runs/<study>-<time>/ folder that holds a checkpoint (what --resume picks without --out)."""
    stamp = re.compile(rf"{re.escape(study)}-\d{{8}}-\d{{6}}")  # not another study's "<study>-b-<time>"
    found = sorted(
        p for p in runs.glob(f"{study}-*") if stamp.fullmatch(p.name) and (p / "run.json").is_file()
    )
    return found[-1] if found else None


def check_same_run(out: Path, expected: dict[str, Any]) -> dict[str, Any]:
    """A resumed run must be the same run: config, data, split, batch size and models as the checkpoint."""
    stored = read_json(out / "run.json")
    for key, value in expected.items():
        if key != "epochs" and stored.get(key) != value:
            raise TuneError(
                f"--resume: {out} was started with {key} = {stored.get(key)!r}, this run has {value!r}; "
                "resume with the original settings or start a new --out"
            )
    return stored


class Checkpoint:
    """One model's checkpoint folder `<out>/checkpoint/<name>/`: state.json plus the files save() writes."""

    def __init__(self, out: Path, name: str) -> None:
        self.dir = out / "checkpoint" / name
        self._new = self.dir.with_name(name + ".new")
        self._old = self.dir.with_name(name + ".old")

    def folder(self) -> Path | None:
        """The complete checkpoint folder, if any (the .old one when a swap was interrupted halfway)."""
        for candidate in (self.dir, self._old):
            if (candidate / "state.json").is_file():
                return candidate
        return None

    def state(self) -> dict[str, Any]:
        """{"epoch": epochs done, "history": [per-epoch logs]} (epoch 0 when there is no checkpoint)."""
        folder = self.folder()
        return read_json(folder / "state.json") if folder else {"epoch": 0, "history": []}

    def begin(self) -> Path:
        """A fresh folder to write the next checkpoint's files into; commit() swaps it in."""
        shutil.rmtree(self._new, ignore_errors=True)
        self._new.mkdir(parents=True)
        return self._new

    def commit(self, state: dict[str, Any]) -> None:
        write_json(self._new / "state.json", state)  # written last: its presence marks a complete folder
        if self.dir.exists():
            shutil.rmtree(self._old, ignore_errors=True)
            os.replace(self.dir, self._old)
        os.replace(self._new, self.dir)
        shutil.rmtree(self._old, ignore_errors=True)


def save_optimizers(path: Path, optimizers: dict[str, Any]) -> None:
    """Every optimizer variable (step count, moments, loss scale) as plain arrays in one .npz."""
    import numpy as np

    arrays: dict[str, Any] = {}
    for prefix, optimizer in optimizers.items():
        store: dict[str, Any] = {}
        optimizer.save_own_variables(store)
        arrays.update({f"{prefix}/{key}": value for key, value in store.items()})
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


def load_optimizers(path: Path, optimizers: dict[str, Any]) -> None:
    """Restore save_optimizers' arrays into optimizers already built on the same variables."""
    import numpy as np

    with np.load(path, allow_pickle=False) as saved:
        arrays = {key: saved[key] for key in saved.files}
    for prefix, optimizer in optimizers.items():
        store = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(prefix + "/")}
        if len(store) != len(optimizer.variables):
            raise TuneError(
                f"--resume: {path} holds {len(store)} {prefix} optimizer variables, the model needs "
                f"{len(optimizer.variables)} (another precision or device?); start a new --out"
            )
        optimizer.load_own_variables(store)


def check_new_out(out: Path) -> None:
    """A new run goes into an empty or new folder only: checked before the data loads, and again
    when the folder is made."""
    from marstune.tuning.outputs import check_folder_output

    if (out / "run.json").exists():
        raise TuneError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    check_folder_output(out, flag="--out")  # `-`, a file above it, or a place nothing can be made in
    if out.exists() and any(out.iterdir()):
        raise TuneError(f"--out {out} exists and is not an empty folder; choose another --out")


def make_out(out: Path, resume: bool) -> None:
    """Create a new run's folder (checked again: another process may have taken it meanwhile) and hold it."""
    if not resume:
        check_new_out(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TuneError(f"cannot create run folder {out}: {exc.strerror}; choose another --out") from None
    _hold(out)


_HELD: list[int] = []  # the run folders this process holds, as open descriptors (released at exit)


def _hold(out: Path) -> None:
    """One run at a time in a folder: a second `tune pix2pix` with the same --out (or --resume) while
    this one runs is refused instead of both writing into it."""
    import fcntl

    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise TuneError(
            f"{out} is in use by another `tune pix2pix`; wait for it, or choose another --out"
        ) from None
    _HELD.append(fd)
