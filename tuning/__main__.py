"""`python -m marstune.tuning` is `tune`."""

from marstune.tuning.cli.app import main

main()
