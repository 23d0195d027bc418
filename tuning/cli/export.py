"""`tune export-best`: the best trial's configuration -> studies/<study>.best.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from marstune.tuning.config.spec import Spec

from marstune.tuning.cli.options import (
    INTERRUPTED_READ,
    JsonOpt,
    StorageOpt,
    StoredStudyOpt,
    ThreadsOpt,
    handle_errors,
    stderr,
)

# --recheck-epochs defaults to this many times the study's epochs per trial (bench/ranking.py: a short
# budget's ranking is reliable only from about three quarters of the long budget on).
RECHECK_FACTOR = 3

HELP = (
    "Write the best trial's configuration as YAML for `tune pix2pix --config`, and the trial's own kept "
    "model beside it (<name>.keras).\n\n"
    "The file holds the params, the value, the trial, its per-class IoU, the data fingerprint, the spec "
    "and the package versions. An existing output is replaced atomically and keeps its permissions; the "
    "study database and other inputs are never written over.\n\n"
    "Examples:\n\n"
    "  tune export-best                     # -> studies/unet-mars.best.yaml\n\n"
    "  tune export-best --study tpe-1 --out best.yaml\n\n"
    "  # re-train the 3 best configurations at 3x the epochs, export the winner\n"
    "  tune export-best --recheck 3\n"
)


@handle_errors(interrupted=INTERRUPTED_READ)
def export_best(
    study: StoredStudyOpt = None,
    storage: StorageOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Output file (default: <study>.best.yaml in studies/).")
    ] = None,
    json_: JsonOpt = False,
    recheck: Annotated[
        int,
        typer.Option(
            min=0,
            help="Re-train the study's K best configurations at --recheck-epochs and export the winner "
            "(0: export the best trial as it is).",
        ),
    ] = 0,
    recheck_epochs: Annotated[
        int | None,
        typer.Option(min=1, help=f"Epochs of each re-check (default: {RECHECK_FACTOR}x the study's epochs)."),
    ] = None,
    threads: ThreadsOpt = 0,
) -> None:
    import hashlib
    import json
    import tempfile

    import yaml

    from marstune.tuning.config.spec import DEFAULTS, check_study_name
    from marstune.tuning.errors import OutputError, UsageError
    from marstune.tuning.outputs import check_output, replace_atomically, write_atomically
    from marstune.tuning.study.export import best_export
    from marstune.tuning.study.urls import preflight, resolve_url, sqlite_files

    # `--study ""` is a wrong name, as in `tune status`: only a missing --study means the default.
    name = check_study_name(DEFAULTS["study"] if study is None else study)
    if recheck_epochs is not None and not recheck:
        raise UsageError("--recheck-epochs sets the epochs of --recheck K; pass --recheck K as well")
    url = resolve_url(storage)
    preflight(url, create=False)
    path = out or Path("studies") / f"{name}.best.yaml"
    flag = "--out" if out is not None else "the default --out"
    inputs: list[Path | None] = [*sqlite_files(url), *_study_inputs(url, name)]
    if out is not None and not path.name:  # `.` or "": with_suffix below would fail on the empty name
        check_output(path, flag=flag)
    model_path = path.with_suffix(".keras")
    if out is not None and model_path == path:  # the model would be written there, then the YAML over it
        raise OutputError(
            f"--out {path}: the export is YAML and its model goes beside it as <name>.keras; "
            f"give a .yaml name, e.g. {path.with_suffix('.yaml')}"
        )
    if out is not None or path.parent.exists():  # before reading: a wrong output is told first
        # (the default studies/ folder is made when there is a result)
        check_output(path, inputs=inputs, flag=flag)
        check_output(model_path, inputs=inputs, flag=flag)
        _refuse_kept_models_folder(url, (path, model_path))
        _refuse_non_export(path, flag)  # last: the checks above say more about where the file lies
    earlier_model = _model_named_by(path, model_path)  # an earlier export's, replaced or removed below
    with tempfile.TemporaryDirectory(prefix="tune-recheck-") as scratch:
        winner, checked, done = None, None, []
        if recheck:
            from marstune.tuning.search.recheck import recheck as run_recheck
            from marstune.tuning.search.recheck import summary, top_configurations

            epochs = _recheck_epochs(url, name, recheck_epochs)
            found = len(top_configurations(url, name, recheck))  # none completed: told before any work
            stderr(f"re-checking the {found} best configuration(s) of {name} at {epochs} epochs each")
            done = run_recheck(url, name, recheck, epochs, Path(scratch), threads=threads, remember=False)
            for c in done:
                stderr(f"  trial {c.trial}: search {c.search_value:.4f} -> re-check {c.recheck_value:.4f}")
            winner, checked = done[0], summary(epochs, done)
        exported = best_export(url, name, trial=winner.trial if winner else None)
        if checked is not None:
            exported["recheck"] = checked
        model = winner.model if winner is not None and winner.model else None
        unusable = ""  # why no kept model is shipped although the study kept some
        if model is None:
            exported, model, unusable = _kept_to_ship(url, name, exported, pinned=winner is not None)
        if out is None:
            path.parent.mkdir(exist_ok=True)  # the default studies/ folder, made only when there is a result
        _refuse_non_export(path, flag)  # again: a re-check takes long, and another hand may have written it
        if model is not None:  # the trial's own best-epoch weights (at the re-check budget if re-checked)
            weights = model.read_bytes()
            exported["model"] = model_path.name
            exported["model_sha256"] = hashlib.sha256(weights).hexdigest()  # pix2pix checks it is this file
            replace_atomically(model_path, lambda tmp: tmp.write_bytes(weights), inputs=inputs)
        write_atomically(path, yaml.safe_dump(exported, sort_keys=False), inputs=inputs)
        if model is None and earlier_model is not None:  # it belonged to the export just replaced
            earlier_model.unlink(missing_ok=True)
        if checked is not None:  # the study's record follows the file: a failed export records nothing
            from marstune.tuning.search.recheck import remember_recheck

            remember_recheck(url, name, checked["epochs"], done)
    if json_:
        shown = {
            k: exported.get(k) for k in ("study", "trial", "value", "config", "per_class_iou", "recheck")
        }
        typer.echo(json.dumps({"path": str(path), "model": str(model_path) if model else None, **shown}))
    else:
        stderr(f"best of {name}: trial {exported['trial']}, validation mIoU {exported['value']:.4f}")
        if unusable:
            stderr(unusable)
        elif model is None:
            stderr(
                "no kept model for that trial (search.keep_models=0, an analytic or replay objective, "
                "or a study made before models were kept)"
            )
        typer.echo(str(path))


def _kept_to_ship(
    url: str, name: str, exported: dict[str, Any], *, pinned: bool
) -> tuple[dict[str, Any], Path | None, str]:
    """The export, the kept model to ship beside it and, when the study's kept models are all damaged,
    the one line saying so. Every candidate is loaded first (final/shipped.py); a damaged best model
    gives way to the next kept one, whose trial the export then names (`pinned`: a re-check's winner
    keeps its trial)."""
    from marstune.tuning.final.shipped import usable_model
    from marstune.tuning.study.export import best_export

    choice = usable_model(url, name, exported["trial"], only_best=pinned)
    if choice is None:
        return exported, None, ""
    if choice.model is None:
        return (
            exported,
            None,
            (
                f"no kept model of {name} is usable ({choice.damaged_line()}); the configuration is exported "
                f"without a model: retrain it with `tune pix2pix --config` or run the study again"
            ),
        )
    if choice.damaged:
        stderr(
            f"skipped damaged kept model(s) ({choice.damaged_line()}); shipping trial "
            f"{choice.model.trial}'s, the best kept model that loads"
        )
    if choice.model.trial != exported["trial"]:
        exported = best_export(url, name, trial=choice.model.trial)
    return exported, choice.model.path, ""


def _refuse_non_export(path: Path, flag: str) -> None:
    """An existing --out is replaced only when it is an earlier export: a study spec or any other file
    given by mistake must not be lost. Read with the safe reader only (never yaml.load)."""
    import yaml

    from marstune.tuning.config.spec import safe_load_unique
    from marstune.tuning.errors import OutputError
    from marstune.tuning.study.export import EXPORT_KIND

    if not path.is_file():  # new (check_output already refused a folder or a database)
        return
    try:
        raw = safe_load_unique(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raw = None
    if not (isinstance(raw, dict) and raw.get("kind") == EXPORT_KIND):
        raise OutputError(
            f"{flag} {path} exists and is not a best-config export; nothing was written: "
            "choose another --out (or delete it first)"
        )


def _model_named_by(path: Path, model_path: Path) -> Path | None:
    """`model_path` when the earlier export at `path` (already checked to be one) names it as its model:
    an export written without a model must not leave that one beside it, where it would pass as its."""
    from marstune.tuning.config.spec import safe_load_unique

    if not (path.is_file() and model_path.is_file()):
        return None
    raw = safe_load_unique(path.read_text())
    return model_path if isinstance(raw, dict) and raw.get("model") == model_path.name else None


def _refuse_kept_models_folder(url: str, paths: tuple[Path, ...]) -> None:
    """The kept models are inputs too: an export written among them would replace a trial's weights."""
    from marstune.tuning.errors import OutputError
    from marstune.tuning.study import tables
    from marstune.tuning.study.artifacts import all_folders

    with tables.reading(url) as conn:
        folders = [f.resolve() for f in all_folders(conn)]
    for path in paths:
        if path.absolute().parent.resolve() in folders:
            raise OutputError(
                f"export {path} lies in a study's kept models folder ({path.parent}); "
                "write the export elsewhere"
            )


def _study_spec(url: str, study: str) -> Spec:
    from marstune.tuning.config.spec import spec_from_stored
    from marstune.tuning.study import tables

    with tables.reading(url) as conn:
        raw = tables.study_spec_raw(conn, tables.study_id(conn, study))
    return spec_from_stored(raw or {})


def _recheck_epochs(url: str, study: str, asked: int | None) -> int:
    """--recheck-epochs, or RECHECK_FACTOR x the study's epochs; a replay study has only the recorded."""
    from marstune.tuning.errors import UsageError

    spec = _study_spec(url, study)
    if spec.objective.kind != "replay":
        return asked or RECHECK_FACTOR * spec.train.epochs
    from marstune.tuning.search.objective import check_replay

    recorded = check_replay(spec).epochs
    if asked is not None and asked > recorded:
        raise UsageError(
            f"--recheck-epochs {asked}: the replayed curves hold {recorded} epochs; pass at most that"
        )
    return asked or min(RECHECK_FACTOR * spec.train.epochs, recorded)


def _study_inputs(url: str, study: str) -> list[Path | None]:
    """The files the study reads: its data, and the curves a replay study plays."""
    spec = _study_spec(url, study)
    surrogate = spec.objective.surrogate if spec.objective.kind == "replay" else None
    return [Path(p) if p else None for p in (spec.data.path, surrogate)]
