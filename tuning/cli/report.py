"""`tune report`: a study as one self-contained HTML file plus a PNG per plot."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from marstune.tuning.cli.options import JsonOpt, StorageOpt, complete_study, handle_errors, stderr
from marstune.tuning.report import EXAMPLE_EPOCHS, EXAMPLE_ITEMS

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

HELP = (
    "Write a study report: one self-contained HTML file, and each plot as a PNG.\n\n"
    "The HTML opens without network (plotly.js is inlined). It shows the optimization history, "
    "parallel coordinates, parameter importances, learning curves (pruned trials too), a comparison "
    "with the other studies on the same data, the best trial's per-class IoU and example predictions "
    "of the best configuration. The PNGs are written next to it.\n\n"
    "Example predictions come from the best trial's kept model (search.keep_models); when it kept "
    "none, the best configuration is retrained briefly. --no-examples skips that step. "
    "--json prints the files written as one JSON object on stdout.\n\n"
    "Examples:\n\n"
    "  tune report                # studies/unet-mars/report.html\n\n"
    "  tune report --study unet-tpe --out reports/tpe.html\n\n"
    "  tune report --no-examples  # seconds: no training\n\n"
    "  tune report --example-epochs 8 --example-items 300\n\n"
    "  tune report --no-examples --json\n"
)


def pick_study(storage: BaseStorage, study: str | None) -> str:
    """--study, else the only study in the storage, else the default study name."""
    from marstune.tuning.config.spec import DEFAULTS
    from marstune.tuning.errors import StorageError
    from marstune.tuning.study.storage import study_names

    if study is not None:
        return study
    names = study_names(storage)
    if len(names) == 1:
        return names[0]
    if DEFAULTS["study"] in names:
        return DEFAULTS["study"]
    known = ", ".join(names) if names else "none yet; run `tune run` first"
    raise StorageError(f"which study? pass --study NAME (studies: {known})")


@handle_errors
def report(
    study: Annotated[
        str | None,
        typer.Option(
            "--study",
            help="Study name (default: the only study in the storage, else unet-mars).",
            autocompletion=complete_study,
        ),
    ] = None,
    storage: StorageOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="HTML file (default: report.html in studies/<study>/).")
    ] = None,
    examples: Annotated[
        bool, typer.Option("--examples/--no-examples", help="Retrain the best config for example masks.")
    ] = True,
    example_epochs: Annotated[
        int, typer.Option(min=1, help="Epochs of the examples' quick retraining.")
    ] = EXAMPLE_EPOCHS,
    example_items: Annotated[
        int, typer.Option(min=8, help="Image pairs the examples' retraining uses.")
    ] = EXAMPLE_ITEMS,
    threads: Annotated[
        int, typer.Option(min=0, help="TensorFlow threads of the examples' retraining (0: the study's).")
    ] = 0,
    json_: JsonOpt = False,
) -> None:
    from marstune.tuning.study.storage import open_storage
    from marstune.tuning.study.urls import resolve_url

    url = resolve_url(storage)
    opened = open_storage(url, read_only=True)  # a report writes nothing there: a full disk is fine
    try:
        _report(opened, url, storage, study, out, examples, example_epochs, example_items, threads, json_)
    finally:
        opened.engine.dispose()  # closed on a refusal too: SQLite's -wal and -shm go with the last connection


def _report(
    opened: BaseStorage,
    url: str,
    storage: str | None,
    study: str | None,
    out: Path | None,
    examples: bool,
    example_epochs: int,
    example_items: int,
    threads: int,
    json_: bool,
) -> None:
    import json

    from marstune.tuning.config.spec import check_study_name
    from marstune.tuning.errors import StorageError
    from marstune.tuning.report.build import build, check_outputs, default_out
    from marstune.tuning.study.artifacts import best_kept
    from marstune.tuning.study.storage import load_study
    from marstune.tuning.study.urls import display_url, sqlite_files

    name = check_study_name(pick_study(opened, study))
    load_study(opened, name)  # an unknown study is told before any work
    target = out or default_out(name)
    database = sqlite_files(url)
    check_outputs(target, database)  # all of them, before any training
    try:
        kept = best_kept(url, name) if examples else None
    except StorageError as exc:  # missing, changed or replaced: the examples retrain instead
        kept = None
        stderr(f"example predictions: {str(exc).split('; ')[0]}; the best configuration is retrained instead")
    if kept is not None:
        stderr("example predictions: the best trial's own kept model")
    elif examples:
        stderr(
            f"training the best configuration for {example_epochs} epoch(s) on {example_items} images "
            "for the example predictions (--no-examples skips this)"
        )
    files = build(
        opened,
        name,
        target,
        display_url(url),
        storage_flag=storage,
        examples=examples,
        example_epochs=example_epochs,
        example_items=example_items,
        threads=threads,
        database=database,
    )
    for note in files.notes:
        stderr(f"note: {note}")
    stderr(f"{len(files.pngs)} PNGs: " + ", ".join(p.name for p in files.pngs))
    if json_:
        shown = {"html": str(files.html), "pngs": [str(p) for p in files.pngs], "notes": files.notes}
        typer.echo(json.dumps({"study": name, **shown}))
    else:
        typer.echo(f"report: {files.html}")
