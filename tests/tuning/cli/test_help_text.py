"""Every command's help reads cleanly at 80 and at 120 columns, and says only what applies to it.

The help texts are written as paragraphs on single logical lines that rich reflows to the terminal, and
examples short enough to stay on one line each; hard-wrapping them at ~100 columns made them ragged at 80.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from marstune.tuning.cli.app import app
from tests.conftest import REPO

WIDTHS = (80, 120)
PAD = 1  # rich prints the help text with one column of padding on each side
EXAMPLE_WIDTH = 76  # an example line (with its 2-space indent) that fits 80 columns with the padding


def _commands() -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, command) for `tune` itself and every command and subcommand under it."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), typer.main.get_command(app))]
    while stack:
        path, command = stack.pop(0)
        yield path, command
        stack.extend((path + (name,), sub) for name, sub in getattr(command, "commands", {}).items())


COMMANDS = dict(_commands())
IDS = [" ".join(path) or "tune" for path in COMMANDS]


def _render(path: tuple[str, ...], width: int) -> str:
    result = CliRunner().invoke(app, [*path, "-h"], env={"COLUMNS": str(width), "TERMINAL_WIDTH": None})
    assert result.exit_code == 0, result.output
    return result.output


def _paragraphs(help_text: str) -> list[str]:
    return [p for p in help_text.strip("\n").split("\n\n") if p.strip()]


def _is_example(paragraph: str) -> bool:
    """An example block: every line indented (a command line, or a comment line above one)."""
    return all(line.startswith("  ") for line in paragraph.splitlines())


def test_the_tree_holds_every_command() -> None:
    assert {" ".join(p) for p in COMMANDS} >= {
        "",
        "run",
        "worker",
        "status",
        "export-best",
        "dashboard",
        "report",
        "pix2pix",
        "predict",
        "data",
        "data clean",
        "data synth",
    }


@pytest.mark.parametrize("path", list(COMMANDS), ids=IDS)
def test_help_paragraphs_are_single_logical_lines(path: tuple[str, ...]) -> None:
    """Prose has no hard line break for rich to keep; examples are one command per line, short enough."""
    command = COMMANDS[path]
    for paragraph in _paragraphs(command.help or ""):
        if _is_example(paragraph):
            for line in paragraph.splitlines():
                assert len(line) <= EXAMPLE_WIDTH, f"example longer than {EXAMPLE_WIDTH} columns: {line!r}"
        else:
            assert "\n" not in paragraph, f"hard line break inside a paragraph: {paragraph!r}"
    for param in command.params:
        text = getattr(param, "help", None) or ""
        assert "\n" not in text, f"{param.name}: hard line break in the option's help: {text!r}"


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("path", list(COMMANDS), ids=IDS)
def test_help_renders_without_ragged_or_cut_lines(path: tuple[str, ...], width: int) -> None:
    command = COMMANDS[path]
    rendered = _render(path, width)
    lines = [line.rstrip() for line in rendered.splitlines()]
    assert max(len(line) for line in lines) <= width
    assert "…" not in rendered, f"text cut off at {width} columns:\n{rendered}"
    # Every example line comes out as one line of its own: never wrapped into the next.
    shown = {line.strip() for line in lines}
    examples = [p for p in _paragraphs(command.help or "") if _is_example(p)]
    for line in (line for p in examples for line in p.splitlines()):
        assert line.strip() in shown, f"example wrapped at {width} columns: {line.strip()!r}\n{rendered}"
    # The description (above the first panel) is wrapped greedily: a prose line ends only where the
    # next word would not have fitted. A hard break mid-paragraph leaves a short line before its
    # continuation, as the hard-wrapped texts did at 80 columns.
    description = lines[: next(i for i, line in enumerate(lines) if line.startswith("╭"))]
    prose = [line for line in description if line.strip() and not line.startswith(" " * (PAD + 2))]
    for line, after in zip(description, description[1:], strict=False):
        if line in prose and after in prose and not line.strip().startswith("Usage:"):
            room = width - 2 * PAD - len(line.strip())
            assert len(after.split()[0]) + 1 > room, (
                f"ragged at {width} columns: {line.strip()!r} is followed by {after.strip()!r}"
            )


def _option_help(*path: str) -> dict[str, str]:
    return {param.name: param.help or "" for param in COMMANDS[path].params}


def test_options_say_only_what_applies_to_their_command() -> None:
    """Shared options were copied from `tune run` into commands where their words did not hold."""
    final = _option_help("pix2pix")
    assert "trial" not in final["epochs"] and "sampler" not in final["seed"]  # no trials, no sampler
    assert "spec" not in _option_help("worker")["quiet"]  # a worker prints no spec
    for command in ("worker", "export-best", "report"):  # no --spec: the default study is not "the spec's"
        assert "spec" not in _option_help(command)["study"], command
    assert "only study" in _option_help("report")["study"]  # report picks the storage's only study
    assert "array" in _option_help("status")["json_"]  # status prints a list of rows, not one object
    for command in ("report", "pix2pix", "predict", "run", "worker", "export-best"):
        assert "json_" in _option_help(command), f"tune {command} has no --json"


def test_help_is_instant_and_imports_no_framework() -> None:
    code = (
        "import sys; from marstune.tuning.cli.app import app; "
        "print(sorted(m for m in ('tensorflow', 'ray', 'keras', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
