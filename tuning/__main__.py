"""`python -m tuning` is `tune`."""

from marstune.tuning.cli import app

app(prog_name="tune")
