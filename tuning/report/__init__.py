"""The study report: one self-contained HTML file and a PNG per plot (build.py composes it)."""

# The example predictions' quick retraining when a trial kept no model: ~30 s on a 2-core CPU. One owner
# for the library and the CLI (`tune report --example-epochs/--example-items`).
EXAMPLE_EPOCHS = 2
EXAMPLE_ITEMS = 96
