"""The command line: app.py composes one module per command (thin: parse, call, print)."""
