"""`tune export-best`: the best trial's configuration -> studies/<study>.best.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from marstune.tuning.cli.options import INTERRUPTED_READ, JsonOpt, StorageOpt, StudyOpt, handle_errors, stderr

HELP = """Write the best trial's configuration (params, value, trial, per-class IoU, data fingerprint,
spec, package versions) as YAML for `tune pix2pix --config`.

An existing output is replaced atomically and keeps its permissions; the study database and other
inputs are never written over.

Examples:

  tune export-best                                   # -> studies/unet-mars.best.yaml

  tune export-best --study tpe-1 --out best.yaml
"""


@handle_errors(interrupted=INTERRUPTED_READ)
def export_best(
    study: StudyOpt = None,
    storage: StorageOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Output file (default: studies/<study>.best.yaml).")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    import json

    import yaml

    from marstune.tuning.config.spec import DEFAULTS, check_study_name
    from marstune.tuning.outputs import check_output, write_atomically
    from marstune.tuning.study.export import best_export
    from marstune.tuning.study.urls import preflight, resolve_url, sqlite_path

    name = check_study_name(study or DEFAULTS["study"])
    url = resolve_url(storage)
    preflight(url, create=False)
    path = out or Path("studies") / f"{name}.best.yaml"
    inputs = [sqlite_path(url)]
    if out is not None:
        check_output(path, inputs=inputs)  # before reading: a wrong --out is told first
    exported = best_export(url, name)
    if out is None:
        path.parent.mkdir(exist_ok=True)  # the default studies/ folder, made only when there is a result
    write_atomically(path, yaml.safe_dump(exported, sort_keys=False), inputs=inputs)
    if json_:
        shown = {k: exported[k] for k in ("study", "trial", "value", "config", "per_class_iou")}
        typer.echo(json.dumps({"path": str(path), **shown}))
    else:
        stderr(f"best of {name}: trial {exported['trial']}, validation mIoU {exported['value']:.4f}")
        typer.echo(str(path))
