"""`python -m tuning` is `tune`."""

from tuning.cli import app

app(prog_name="tune")
