"""`tune export-best`: the best trial's configuration -> studies/<study>.best.yaml."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from marstune.tuning.commands._options import JsonOpt, StorageOpt, StudyOpt, handle_errors, stderr

HELP = """Write the best trial's configuration (params, value, trial, data fingerprint, spec, package
versions) as YAML for `tune pix2pix --config`.

Examples:

  tune export-best                                   # -> studies/unet-mars.best.yaml

  tune export-best --study tpe-1 --out best.yaml
"""


def register(app: typer.Typer) -> None:
    @app.command("export-best", help=HELP)
    @handle_errors
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
        from marstune.tuning.spec import DEFAULTS, check_study_name
        from marstune.tuning.storage import best_export, resolve_url

        name = check_study_name(study or DEFAULTS["study"])
        url = resolve_url(storage)
        exported = best_export(url, name)
        path = out or Path("studies") / f"{name}.best.yaml"
        _write_atomically(path, yaml.safe_dump(exported, sort_keys=False))
        if json_:
            typer.echo(
                json.dumps(
                    {"path": str(path), **{k: exported[k] for k in ("study", "trial", "value", "config")}}
                )
            )
        else:
            stderr(f"best of {name}: trial {exported['trial']}, validation mIoU {exported['value']:.4f}")
            typer.echo(str(path))


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file and rename: an interrupted export never leaves half a file."""
    from marstune.tuning.errors import TuneError

    if not path.parent.exists():
        if path.parent == Path("studies"):
            path.parent.mkdir()
        else:
            raise TuneError(
                f"cannot write {path}: folder {path.parent} does not exist; create it or change --out"
            )
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise TuneError(f"cannot write {path}: {exc.strerror}; change --out") from None
