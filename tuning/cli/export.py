"""`tune export-best`: the best trial's configuration -> studies/<study>.best.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from marstune.tuning.cli.options import JsonOpt, StorageOpt, StoredStudyOpt, handle_errors, stderr

HELP = (
    "Write the best trial's configuration as YAML for `tune pix2pix --config`, and the trial's own kept "
    "model beside it (<name>.keras).\n\n"
    "The file holds the params, the value, the trial, its per-class IoU, the data fingerprint, the spec "
    "and the package versions. An existing output is replaced atomically and keeps its permissions; the "
    "study database and other inputs are never written over.\n\n"
    "Examples:\n\n"
    "  tune export-best                     # -> studies/unet-mars.best.yaml\n\n"
    "  tune export-best --study tpe-1 --out best.yaml\n"
)


@handle_errors
def export_best(
    study: StoredStudyOpt = None,
    storage: StorageOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Output file (default: <study>.best.yaml in studies/).")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    import json

    import yaml

    from marstune.tuning.config.spec import DEFAULTS, check_study_name
    from marstune.tuning.outputs import check_output, replace_atomically, write_atomically
    from marstune.tuning.study.artifacts import best_kept
    from marstune.tuning.study.export import best_export
    from marstune.tuning.study.urls import preflight, resolve_url, sqlite_path

    name = check_study_name(study or DEFAULTS["study"])
    url = resolve_url(storage)
    preflight(url, create=False)
    path = out or Path("studies") / f"{name}.best.yaml"
    inputs = [sqlite_path(url)]
    if out is not None:
        check_output(path, inputs=inputs)  # before reading: a wrong --out is told first
    model_path = path.with_suffix(".keras")
    if out is not None:
        check_output(model_path, inputs=inputs)
    exported = best_export(url, name)
    kept = best_kept(url, name)
    if out is None:
        path.parent.mkdir(exist_ok=True)  # the default studies/ folder, made only when there is a result
    if kept is not None:  # the trial's own best-epoch weights, beside the YAML
        exported["model"] = model_path.name
        replace_atomically(model_path, lambda tmp: tmp.write_bytes(kept.path.read_bytes()), inputs=inputs)
    write_atomically(path, yaml.safe_dump(exported, sort_keys=False), inputs=inputs)
    if json_:
        shown = {k: exported[k] for k in ("study", "trial", "value", "config", "per_class_iou")}
        model = str(model_path) if kept else None
        typer.echo(json.dumps({"path": str(path), "model": model, **shown}))
    else:
        stderr(f"best of {name}: trial {exported['trial']}, validation mIoU {exported['value']:.4f}")
        if kept is None:
            stderr(
                "no kept model for that trial (search.keep_models=0, or a study made before models were kept)"
            )
        typer.echo(str(path))
