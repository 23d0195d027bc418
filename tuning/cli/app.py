"""The `tune` command: one Typer app; each command is a module-level function in its own module.

Commands stay thin (parse, call, print); heavy imports happen inside them, so `tune --help` loads
neither TensorFlow nor Optuna.
"""

from __future__ import annotations

import importlib

import typer

# name -> (module, function): every command, in the order `tune --help` lists them.
COMMANDS = {
    "run": ("marstune.tuning.cli.run", "run"),
    "worker": ("marstune.tuning.cli.worker", "worker"),
    "status": ("marstune.tuning.cli.status", "status"),
    "export-best": ("marstune.tuning.cli.export", "export_best"),
    "dashboard": ("marstune.tuning.cli.dashboard", "dashboard"),
    "report": ("marstune.tuning.cli.report", "report"),
    "pix2pix": ("marstune.tuning.cli.pix2pix", "pix2pix"),
    "predict": ("marstune.tuning.cli.predict", "predict"),
}
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


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
    pretty_exceptions_enable=False,
    context_settings=CONTEXT,
)


@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """Hyperparameter search for Mars terrain segmentation."""
    if ctx.invoked_subcommand is None:  # plain `tune`: the help, as `tune -h`
        typer.echo(ctx.get_help())


for _name, (_module, _function) in COMMANDS.items():
    _loaded = importlib.import_module(_module)
    app.command(_name, help=_loaded.HELP, context_settings=CONTEXT)(getattr(_loaded, _function))

app.add_typer(importlib.import_module("marstune.tuning.cli.data").group, name="data")


def main(argv: list[str] | None = None) -> None:
    """The `tune` command. A usage error is one line (not a boxed panel) and exits 2, as all bad input."""
    import signal
    import sys

    from marstune.tuning.errors import redact, remember_secrets

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started as a background job (nohup, cmd &):
        signal.signal(signal.SIGINT, signal.default_int_handler)  # kill -INT still stops it, exit 130

    for arg in sys.argv[1:] if argv is None else argv:  # a URL anywhere on the line: its password
        if "://" in arg or "password" in arg.lower():  # is masked even in a usage error quoting it
            remember_secrets(arg.partition("=")[2] if arg.startswith("--") else arg)
    try:
        code = app(args=argv, prog_name="tune", standalone_mode=False)
    except typer.Abort:
        print("Interrupted.", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # Typer's usage errors (its click exceptions) carry these two attributes
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        ctx = getattr(exc, "ctx", None)
        where = f"; see `{ctx.command_path} -h`" if ctx is not None else ""
        message = " ".join(exc.format_message().split()).rstrip(".")  # one line, however it was wrapped
        print(f"Error: {redact(message)}{where}", file=sys.stderr)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
