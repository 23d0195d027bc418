"""The `tune` command: thin (parse, call, print). Each command group is a module in tuning/commands/."""

from __future__ import annotations

import importlib

import typer

COMMAND_MODULES = (
    "marstune.tuning.commands.run",
    "marstune.tuning.commands.status",
    "marstune.tuning.commands.export",
    "marstune.tuning.commands.data_cmd",
    "marstune.tuning.commands.dashboard",
    "marstune.tuning.commands.report",
    "marstune.tuning.commands.pix2pix",
    "marstune.tuning.commands.predict",
)



def _version(value: bool) -> None:
    """`tune --version`: names this project, so a `tune` installed by another package is told apart."""
    if value:
        import importlib.metadata

        typer.echo(f"tune (marstune {importlib.metadata.version('marstune')}): Mars terrain U-Net search")
        raise typer.Exit()


app = typer.Typer(
    name="tune",
    help="Hyperparameter search for Mars terrain segmentation: U-Net studies in a SQL storage.\n\n"
    "Start with `tune run`, watch with `tune status`, finish with `tune export-best`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)



@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Hyperparameter search for Mars terrain segmentation."""


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)
