"""docker-compose.yml: valid for Debian's docker-compose (v1, no daemon needed for `config`), and every
service runs a command that the real `tune`, `ray` or `optuna-dashboard` parser accepts."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import typer
import yaml

from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"


def _compose_bin() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "docker-compose is missing on CI: .ci/run installs it (apt-get install docker-compose)"
            )
        pytest.skip("docker-compose (Debian's v1) is not installed here: apt-get install -y docker-compose")
    return exe


def _config(env_file: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "TUNE_", "RAY_"))}
    return subprocess.run(
        [_compose_bin(), "--env-file", str(env_file), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The file as compose resolves it with .env.example: every ${VAR} substituted."""
    result = _config(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


class InvalidCommand(Exception):
    """A service command that its program would refuse."""


def _click_parse(group: Any, name: str, args: list[str]) -> None:
    """Parse `args` as `name <sub> <options>` with the program's own click group (Typer vendors its
    own click, so the context class and the errors come from the group itself)."""
    parent = group.context_class(group, info_name=name)
    if not args:
        raise InvalidCommand(f"{name}: no subcommand")
    sub = group.get_command(parent, args[0])
    if sub is None:
        raise InvalidCommand(f"{name}: no such command {args[0]!r}")
    try:
        sub.make_context(args[0], list(args[1:]), parent=parent)
    except (click.ClickException, typer.TyperException) as exc:
        raise InvalidCommand(f"{name} {args[0]}: {exc.format_message()}") from None


@functools.cache
def _dashboard_help() -> str:
    exe = Path(sys.executable).with_name("optuna-dashboard")
    return subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout


def _dashboard_parse(args: list[str]) -> None:
    """optuna-dashboard builds its argparse parser inside main(): check its --help lists every flag used."""
    flags = [a.split("=", 1)[0] for a in args if a.startswith("-")]
    unknown = [f for f in flags if f not in _dashboard_help().split()]
    if unknown or len([a for a in args if not a.startswith("-")]) > len(flags) + 1:
        raise InvalidCommand(f"optuna-dashboard does not take {unknown or args}")


def validate(argv: list[str]) -> str:
    """Raise InvalidCommand if argv is not a valid invocation; return the program."""
    program, args = argv[0], [str(a) for a in argv[1:]]
    if program == "tune" or argv[:3] == ["python", "-m", "marstune.tuning"]:
        from marstune.tuning.cli.app import app

        _click_parse(typer.main.get_command(app), "tune", args if program == "tune" else args[2:])
        return "tune"
    if program == "ray":
        from ray.scripts.scripts import cli

        _click_parse(cli, "ray", args)
        return "ray"
    if program == "optuna-dashboard":
        _dashboard_parse(args)
        return "optuna-dashboard"
    if program == "postgres":  # the official image: only `-c name=value` settings
        pairs = list(zip(args[::2], args[1::2], strict=False))
        if len(args) % 2 or not all(flag == "-c" and "=" in value for flag, value in pairs):
            raise InvalidCommand(f"postgres takes -c name=value pairs, got {args}")
        return "postgres"
    raise InvalidCommand(f"{program!r} is not a tune, ray, optuna-dashboard or postgres command")


def test_compose_file_is_valid_and_needs_a_password(tmp_path: Path) -> None:
    result = _config(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    empty = tmp_path / "empty.env"
    empty.write_text("")
    refused = _config(empty)  # no .env: compose must refuse, naming the missing password
    assert refused.returncode != 0 and "set POSTGRES_PASSWORD in .env" in refused.stderr, refused.stderr


def test_services_and_settings(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert {"postgres", "dashboard", "tune-worker", "ray-head", "ray-worker", "tune"} <= set(services)
    assert any(v.startswith("pgdata:") for v in services["postgres"]["volumes"])
    assert "pgdata" in resolved["volumes"]
    for name in ("tune-worker", "ray-worker"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}], name
    storage = services["tune-worker"]["environment"]["TUNE_STORAGE"]
    assert storage == "postgresql+psycopg://tune:change-me-please@postgres:5432/tune"
    assert services["dashboard"]["environment"]["TUNE_STORAGE"] == storage  # one place, same value
    for name, service in services.items():  # the password travels in the environment only
        argv = [*service.get("entrypoint", []), *service.get("command", [])]
        assert not any("change-me" in str(a) for a in argv), name
    assert services["ray-worker"]["environment"]["RAY_AUTH_MODE"] == "token"
    assert str(services["dashboard"]["ports"][0]).startswith("127.0.0.1:8080:")  # no auth: loopback


def test_every_service_command_parses(resolved: dict[str, Any]) -> None:
    seen = set()
    for name, service in resolved["services"].items():
        argv = [*service.get("entrypoint", []), *service.get("command", [])]
        try:
            seen.add(validate(argv))
        except InvalidCommand as exc:
            pytest.fail(f"service {name}: {argv} is not a valid command: {exc}")
    assert seen == {"tune", "ray", "postgres"}


@pytest.mark.parametrize(
    "argv",
    [
        ["tune", "worker", "--stdy", "x"],
        ["tune", "work"],
        ["tune", "worker", "--threads", "many"],
        ["ray", "start", "--hed"],
        ["optuna-dashboard", "--hots", "0.0.0.0", "sqlite:///x.db"],
        ["postgres", "-x"],
        ["bash", "-c", "tune worker"],
    ],
)
def test_the_validator_rejects_bad_commands(argv: list[str]) -> None:
    with pytest.raises(InvalidCommand):
        validate(argv)


def test_the_validator_accepts_good_ones() -> None:
    assert (
        validate(["python", "-m", "marstune.tuning", "run", "--workers", "2", "--sampler", "grid"]) == "tune"
    )
    assert validate(["optuna-dashboard", "--host", "0.0.0.0", "--port", "8080", "sqlite:///x.db"])
