"""The `tune` command: thin (parse, call, print). Each command group is a module in tuning/commands/."""

from __future__ import annotations

import importlib

import typer

COMMAND_MODULES = (
    "tuning.commands.run",
    "tuning.commands.status",
    "tuning.commands.export",
    "tuning.commands.data_cmd",
    "tuning.commands.dashboard",
    "tuning.commands.report",
    "tuning.commands.pix2pix",
    "tuning.commands.predict",
)

app = typer.Typer(
    name="tune",
    help="Hyperparameter search for Mars terrain segmentation: U-Net studies in a SQL storage.\n\n"
    "Start with `tune run`, watch with `tune status`, finish with `tune export-best`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)
