"""docker-compose.yml, .env.example, the Dockerfile and the image's entrypoint.

The compose file is resolved by Debian's docker-compose (v1, no daemon needed for `config`; `make test`
installs it): every service runs a command that the real `tune`, `ray` or `optuna-dashboard` parser
accepts; secrets are required and never on a command line; PostgreSQL is published on loopback; only the
Ray services need RAY_AUTH_TOKEN; every long-running service has a healthcheck; Ray runs in the host's
network. The entrypoint (tools/docker-entrypoint) runs here for real, as the image runs it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import typer
import yaml

from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
ENTRYPOINT = REPO / "tools" / "docker-entrypoint"
PASSWORD = "pg-test-secret-4f1c9a"  # what a filled-in .env holds in these tests
TOKEN = "ray-test-token-8e27b0"
RAY_SERVICES = {"ray-head", "ray-worker", "tune-ray"}  # the "ray" profile
ONE_OFF = {"tune", "tune-ray"}  # `docker compose run --rm ...`: no restart policy, no healthcheck


def _compose_bin() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is missing: `make test` installs it (apt-get install -y docker-compose)")
    return exe


def _env_file(path: Path, **settings: str | None) -> Path:
    """.env.example filled in as a user would (both secrets set), then `settings`: a value replaces the
    variable's line, None removes it (the variable unset)."""
    values: dict[str, str | None] = {"POSTGRES_PASSWORD": PASSWORD, "RAY_AUTH_TOKEN": TOKEN, **settings}
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        key = line.split("=", 1)[0]
        if "=" in line and not line.startswith("#") and key in values:
            if values[key] is None:
                continue
            line = f"{key}={values[key]}"
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(env_file: Path, *options: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "TUNE_", "RAY_"))}
    return subprocess.run(
        [_compose_bin(), "--env-file", str(env_file), "-f", str(COMPOSE), *options, "config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def _resolve(env_file: Path, *options: str) -> dict[str, Any]:
    result = _config(env_file, *options)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The file as compose resolves it with .env.example filled in: every ${VAR} substituted."""
    return _resolve(_env_file(tmp_path_factory.mktemp("env") / ".env"))


def _published(port: Any) -> tuple[str, str, str]:
    """(host address, host port, container port) of a `ports:` entry, in v1's string or v2's long form."""
    if isinstance(port, dict):
        return str(port.get("host_ip", "")), str(port.get("published", "")), str(port["target"])
    host_ip, published, target = ([""] * 3 + str(port).split("/")[0].split(":"))[-3:]
    return host_ip, published, target


def _entrypoint(
    args: list[str], env: dict[str, Any], cwd: Path, *, user: list[str] | None = None
) -> subprocess.CompletedProcess:
    """Run the image's entrypoint as the image would: the service's environment, a PATH, `args`."""
    full = {"PATH": os.environ["PATH"], **{k: str(v) for k, v in env.items()}}
    return subprocess.run(
        [*(user or []), str(ENTRYPOINT), *args], capture_output=True, text=True, env=full, cwd=cwd, timeout=60
    )


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


# In a child: importing ray here would fix its settings (auth token, cluster switch) for this whole
# test process before the Ray engine tests set them.
_RAY_PARSE = """
import json, sys
from ray.scripts.scripts import cli
from tests.test_compose import InvalidCommand, _click_parse
try:
    _click_parse(cli, "ray", json.loads(sys.argv[1]))
except InvalidCommand as exc:
    sys.exit(str(exc))
"""


@functools.cache
def _ray_parse(args: tuple[str, ...]) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _RAY_PARSE, json.dumps(args)], cwd=REPO, capture_output=True, text=True
    )
    if child.returncode:
        raise InvalidCommand(child.stderr.strip().splitlines()[-1])


def _dashboard_parse(args: list[str]) -> None:
    """optuna-dashboard builds its argparse parser inside main(): check its --help lists every flag used."""
    flags = [a.split("=", 1)[0] for a in args if a.startswith("-")]
    unknown = [f for f in flags if f not in _dashboard_help().split()]
    if unknown or len([a for a in args if not a.startswith("-")]) > len(flags) + 1:
        raise InvalidCommand(f"optuna-dashboard does not take {unknown or args}")


def validate(argv: list[str]) -> str:
    """Raise InvalidCommand if argv is not a valid invocation; return the program."""
    program, args = argv[0], [str(a) for a in argv[1:]]
    if program == "tune-entrypoint":  # the image's entrypoint runs the rest (tools/docker-entrypoint)
        return validate(argv[1:])
    if program == "tune" or argv[:3] == ["python", "-m", "marstune.tuning"]:
        from marstune.tuning.cli.app import app

        _click_parse(typer.main.get_command(app), "tune", args if program == "tune" else args[2:])
        return "tune"
    if program == "ray":
        _ray_parse(tuple(args))
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
    result = _config(_env_file(tmp_path / "filled.env"))
    assert result.returncode == 0, result.stderr
    empty = tmp_path / "empty.env"
    empty.write_text("")
    refused = _config(empty)  # no .env: compose must refuse, naming the missing password
    assert refused.returncode != 0 and "set POSTGRES_PASSWORD in .env" in refused.stderr, refused.stderr


def test_the_example_copied_as_is_is_refused() -> None:
    """No placeholder password that passes the check: the example ships the secrets empty, and compose
    refuses an empty POSTGRES_PASSWORD, saying how to make one."""
    example = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line and line[0] != "#"
    )
    assert example["POSTGRES_PASSWORD"] == "" and example["RAY_AUTH_TOKEN"] == "", example
    refused = _config(ENV_EXAMPLE)
    assert refused.returncode != 0, refused.stdout
    assert "set POSTGRES_PASSWORD in .env: make .env writes a random one" in refused.stderr, refused.stderr


def test_services_and_settings(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert {"postgres", "dashboard", "tune-worker", "ray-head", "ray-worker", "tune", "tune-ray"} <= set(
        services
    )
    assert any(v.startswith("pgdata:") for v in services["postgres"]["volumes"])
    assert "pgdata" in resolved["volumes"]
    for name in ("tune-worker", "ray-worker"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}], name
    storage = services["tune-worker"]["environment"]["TUNE_STORAGE"]
    assert storage == f"postgresql+psycopg://tune:{PASSWORD}@postgres:5432/tune"
    for name in ("dashboard", "tune", "tune-ray"):  # one place, same value
        assert services[name]["environment"]["TUNE_STORAGE"] == storage, name
    for name, service in services.items():  # the secrets travel in the environment only
        argv = [*service.get("entrypoint", []), *service.get("command", [])]
        check = service.get("healthcheck", {}).get("test", [])
        assert not any(PASSWORD in str(a) or TOKEN in str(a) for a in [*argv, *check]), name
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
    assert validate(["tune-entrypoint", "tune", "status", "--json"]) == "tune"
    with pytest.raises(InvalidCommand):
        validate(["tune-entrypoint", "tune", "stats"])


def test_postgres_is_published_on_loopback_unless_configured(
    tmp_path: Path, resolved: dict[str, Any]
) -> None:
    (port,) = resolved["services"]["postgres"]["ports"]
    assert _published(port) == ("127.0.0.1", "5432", "5432")  # with .env.example's value
    unset = _resolve(_env_file(tmp_path / "unset.env", POSTGRES_PUBLISH=None))  # the file's own default
    assert [_published(p)[0] for p in unset["services"]["postgres"]["ports"]] == ["127.0.0.1"]
    internal = _resolve(_env_file(tmp_path / "lan.env", POSTGRES_PUBLISH="10.0.0.5:5432"))  # documented
    assert [_published(p) for p in internal["services"]["postgres"]["ports"]] == [
        ("10.0.0.5", "5432", "5432")
    ]
    assert "POSTGRES_PUBLISH" in ENV_EXAMPLE.read_text() and "internal network" in ENV_EXAMPLE.read_text()


def test_only_ray_services_get_and_need_the_ray_token(tmp_path: Path) -> None:
    """Compose substitutes every variable whatever the profile, so a `:?` would stop postgres and the
    workers too: the file validates without RAY_AUTH_TOKEN, and the image's entrypoint refuses a Ray
    service (RAY_AUTH_MODE=token) started without one."""
    no_token = _env_file(tmp_path / "no-token.env", RAY_AUTH_TOKEN=None)
    for options in ((), ("--profile", "ray")):
        services = _resolve(no_token, *options)["services"]
        for name, service in services.items():
            ray_vars = {k for k in service.get("environment", {}) if k.startswith("RAY_")}
            if name in RAY_SERVICES:
                assert service["environment"]["RAY_AUTH_MODE"] == "token", name
                assert service["environment"]["RAY_AUTH_TOKEN"] == "", name
            else:
                assert not ray_vars, f"{name} needs no Ray settings, got {ray_vars}"
    services = _resolve(no_token)["services"]
    for name in sorted(RAY_SERVICES):
        refused = _entrypoint(["echo", "started"], services[name]["environment"], tmp_path)
        assert refused.returncode == 1 and "started" not in refused.stdout, (name, refused)
        (line,) = refused.stderr.splitlines()
        assert "RAY_AUTH_TOKEN is empty" in line and "set it in .env" in line, line
    for name in ("dashboard", "tune-worker", "tune"):
        started = _entrypoint(["echo", "started"], services[name]["environment"], tmp_path)
        assert started.returncode == 0 and started.stdout == "started\n", (name, started.stderr)
    with_token = _resolve(_env_file(tmp_path / "token.env"))["services"]
    for name in sorted(RAY_SERVICES):
        assert with_token[name]["environment"]["RAY_AUTH_TOKEN"] == TOKEN, name
        started = _entrypoint(["echo", "started"], with_token[name]["environment"], tmp_path)
        assert started.returncode == 0 and started.stdout == "started\n", (name, started.stderr)


def test_the_entrypoint_refuses_old_placeholders_without_showing_them(tmp_path: Path) -> None:
    storage = "postgresql+psycopg://tune:change-me-please@postgres:5432/tune"
    for env, name in (
        ({"TUNE_STORAGE": storage}, "POSTGRES_PASSWORD"),
        ({"RAY_AUTH_TOKEN": "change-me-too"}, "RAY_AUTH_TOKEN"),
    ):
        refused = _entrypoint(["echo", "started"], env, tmp_path)
        assert refused.returncode == 1 and not refused.stdout, refused
        (line,) = refused.stderr.splitlines()
        assert f"{name} is still the .env.example placeholder" in line and "change-me" not in line, line


def test_every_long_running_service_has_a_healthcheck(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert {name for name, s in services.items() if "restart" not in s} == ONE_OFF
    for name, service in services.items():
        if name in ONE_OFF:
            continue
        check = service.get("healthcheck", {}).get("test")
        assert check and check[0] in ("CMD", "CMD-SHELL"), f"service {name} has no healthcheck"
        argv = check[1:] if check[0] == "CMD" else shlex.split(check[1])
        if argv[:2] == ["python", "-c"]:
            compile(argv[2], f"{name} healthcheck", "exec")  # a one-liner that is valid Python
        elif argv[0] != "pg_isready":
            try:
                validate(argv)  # `tune status ...`, `ray status ...`: their own parsers accept them
            except InvalidCommand as exc:
                pytest.fail(f"service {name}: healthcheck {argv} is not a valid command: {exc}")
    assert services["tune-worker"]["healthcheck"]["test"][1:3] == ["tune", "status"]  # reads the database
    assert "/api/studies" in services["dashboard"]["healthcheck"]["test"][-1]  # serves, and reads it
    for name in ("ray-head", "ray-worker"):
        assert services[name]["healthcheck"]["test"][1:3] == ["ray", "status"], name


def test_ray_runs_in_the_hosts_network(resolved: dict[str, Any]) -> None:
    """Ray nodes advertise their own address and open many ports: container addresses would be
    unreachable from other hosts."""
    services = resolved["services"]
    for name in sorted(RAY_SERVICES):
        assert services[name].get("network_mode") == "host", name
        assert "ports" not in services[name], name  # meaningless (and refused) with host networking
        assert services[name].get("profiles") == ["ray"], name
    head = services["ray-head"]["command"]
    assert "--dashboard-host=127.0.0.1" in head  # no longer behind a loopback port mapping
    # The driver attaches to the head's raylet: it finds it among the processes it sees, and talks to it
    # through the sockets in Ray's session folder.
    assert services["tune-ray"]["pid"] == "service:ray-head"
    for name in ("ray-head", "tune-ray"):
        assert "ray-tmp:/tmp/ray:rw" in services[name]["volumes"], name
    assert "ray-tmp" in resolved["volumes"]
    assert "mkdir -p /tmp/ray && chown tune:tune /tmp/ray" in DOCKERFILE.read_text()  # the volume's owner
    for name in set(services) - RAY_SERVICES:
        assert services[name].get("network_mode") != "host", name


def _studies_mount(service: dict[str, Any]) -> str:
    """The source of what a service mounts at /app/studies (v1's `source:target:mode` string form)."""
    (found,) = [str(v).split(":")[0] for v in service.get("volumes", []) if ":/app/studies" in str(v)]
    return found


def test_every_tune_service_shares_one_studies_volume(tmp_path: Path, resolved: dict[str, Any]) -> None:
    """Databases, kept models, exports and runs: one volume at /app/studies in every service of the tune
    image (the named volume `studies`, or a host folder with TUNE_STUDIES), each running as its owner,
    TUNE_UID:TUNE_GID (1000, the image's `tune` user, unless set)."""
    services = resolved["services"]
    tune_services = {name for name, s in services.items() if s["image"] == "tune:latest"}
    assert tune_services == set(services) - {"postgres"}
    for name in sorted(tune_services):
        assert services[name]["user"] == "1000:1000", name
        assert _studies_mount(services[name]) == "studies", name
    assert "studies" in resolved["volumes"]
    assert "/app/studies" not in str(services["postgres"].get("volumes"))
    mine = _resolve(
        _env_file(tmp_path / "ids.env", TUNE_UID="1234", TUNE_GID="99", TUNE_STUDIES="/srv/nfs/studies"),
        "--profile", "ray",
    )["services"]  # fmt: skip
    assert {mine[name]["user"] for name in tune_services} == {"1234:99"}
    assert {_studies_mount(mine[name]) for name in tune_services} == {"/srv/nfs/studies"}
    text = DOCKERFILE.read_text()
    assert re.search(r"useradd .*--uid 1000 tune", text)
    # The image's /app (commands' default outputs) and /app/studies (a new named volume copies its
    # owner) belong to that user; runs/ points into the volume.
    assert "chown -R tune:tune /app" in text and "ln -s studies/runs /app/runs" in text


def test_the_base_images_are_settings_with_the_registrys_defaults(
    tmp_path: Path, resolved: dict[str, Any]
) -> None:
    """PYTHON_IMAGE (the tune image's base, a build argument) and POSTGRES_IMAGE: the official images
    unless set, e.g. to what tools/build-base-images makes from Debian's packages."""
    steps = _dockerfile(DOCKERFILE.read_text())
    assert steps[0] == ("ARG", "PYTHON_IMAGE=python:3.11-slim"), steps[0]
    assert [a.split()[0] for op, a in steps if op == "FROM"] == ["${PYTHON_IMAGE}"] * 2
    services = resolved["services"]
    assert services["postgres"]["image"] == "postgres:16"
    for name, service in services.items():
        if name != "postgres":
            assert service["build"]["args"] == {"PYTHON_IMAGE": "python:3.11-slim", "EXTRAS": "ray,gpu"}, name
    unset = _resolve(
        _env_file(tmp_path / "unset.env", PYTHON_IMAGE=None, POSTGRES_IMAGE=None, TUNE_EXTRAS=None)
    )
    assert unset["services"]["postgres"]["image"] == "postgres:16"
    assert unset["services"]["tune-worker"]["build"]["args"]["PYTHON_IMAGE"] == "python:3.11-slim"
    local = _resolve(
        _env_file(
            tmp_path / "local.env", PYTHON_IMAGE="tune-python:3.11-bookworm",
            POSTGRES_IMAGE="tune-postgres:15-bookworm", TUNE_EXTRAS="ray",
        )
    )["services"]  # fmt: skip
    assert local["postgres"]["image"] == "tune-postgres:15-bookworm"
    assert local["dashboard"]["build"]["args"] == {
        "PYTHON_IMAGE": "tune-python:3.11-bookworm",
        "EXTRAS": "ray",
    }
    script = (REPO / "tools" / "build-base-images").read_text()
    for name in ("tune-python:3.11-bookworm", "tune-postgres:15-bookworm"):
        assert name in script and name in ENV_EXAMPLE.read_text(), name


def test_the_entrypoint_refuses_a_studies_folder_it_cannot_write(tmp_path: Path) -> None:
    """What a host's ./studies owned by someone else looks like inside the container: the entrypoint
    says which ids to set instead of letting an export fail at its end. Also: a uid without a writable
    home (TUNE_UID is not in the image's /etc/passwd) gets one under $TMPDIR."""
    studies = tmp_path / "studies"
    studies.mkdir()
    tmpdir = Path(tempfile.mkdtemp(prefix="entrypoint-"))  # in /tmp: reachable by any uid, unlike tmp_path
    tmpdir.chmod(0o777)
    as_other: list[str] = []
    if os.geteuid() == 0:  # root writes anywhere: run as nobody, as the container runs as TUNE_UID
        as_other = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        tmp_path.chmod(0o755)
        studies.chmod(0o755)
    else:
        studies.chmod(stat.S_IRUSR | stat.S_IXUSR)
    env = {"HOME": "/nonexistent", "TMPDIR": str(tmpdir)}
    try:
        refused = _entrypoint(["echo", "started"], env, tmp_path, user=as_other)
        assert refused.returncode == 1 and not refused.stdout, refused
        (line,) = refused.stderr.splitlines()
        assert "studies (./studies on the host) is not writable" in line and "TUNE_UID" in line, line
        studies.chmod(0o777)
        started = _entrypoint(["sh", "-c", 'echo "$HOME"'], env, tmp_path, user=as_other)
        assert started.returncode == 0, started.stderr
        home = Path(started.stdout.strip())
        assert home.parent == tmpdir and home.is_dir(), started.stdout
    finally:
        shutil.rmtree(tmpdir)


def _dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    )
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in joined.splitlines() if ln.strip()]


def test_the_dockerfile_installs_dependencies_before_the_code() -> None:
    """An edit of the code rebuilds only the small layers: the dependencies come from a list extracted
    from pyproject.toml, installed before any code is copied; the project then goes in with --no-deps,
    and ensure-tune checks that `tune` is ours (Ray's wheel has a `tune` script too)."""
    steps = _dockerfile(DOCKERFILE.read_text())
    stages = [i for i, (op, _) in enumerate(steps) if op == "FROM"]
    assert len(stages) == 2 and steps[stages[0]][1].endswith("AS requirements"), steps
    first, final = steps[stages[0] : stages[1]], steps[stages[1] :]
    assert [a for op, a in first if op == "COPY"] == ["pyproject.toml tools/requirements.py ./"]
    assert any(op == "RUN" and "requirements.py pyproject.toml" in a for op, a in first)

    def index(pred: Any, what: str) -> int:
        found = [i for i, step in enumerate(final) if pred(*step)]
        assert found, f"no {what} in the Dockerfile's final stage"
        return found[0]

    deps = index(lambda op, a: op == "RUN" and "pip install -r" in a, "dependency install")
    code = index(lambda op, a: op == "COPY" and re.search(r"\b(tuning|models|data)\b", a), "code COPY")
    project = index(lambda op, a: op == "RUN" and "pip install --no-deps ." in a, "project install")
    assert deps < code < project, final
    before = [a for op, a in final[:deps] if op in ("COPY", "ADD")]
    assert before == ["--from=requirements /src/requirements.txt /tmp/requirements.txt"], before
    # `tune` is checked where this Python installs scripts (/usr/local/bin, or a venv's bin).
    assert (
        'ensure-tune "$(python -c \'import sysconfig; print(sysconfig.get_path("scripts"))\')" .'
        in (final[project][1])
    )
    assert ("ENTRYPOINT", '["tune-entrypoint"]') in final
    assert ("COPY", "tools/docker-entrypoint /usr/local/bin/tune-entrypoint") in final


def test_the_extracted_requirements_are_the_projects() -> None:
    """tools/requirements.py (the Dockerfile's first stage) against the metadata pip built from the same
    pyproject.toml: the same requirements, for the image's extras."""
    from packaging.requirements import Requirement

    def key(text: str) -> tuple[str, frozenset[str], str]:
        req = Requirement(text)
        return req.name.lower(), frozenset(req.extras), str(req.specifier)

    extras = re.search(r"ARG EXTRAS=(\S+)", DOCKERFILE.read_text()).group(1)
    out = subprocess.run(
        [sys.executable, "tools/requirements.py", "pyproject.toml", extras],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout  # fmt: skip
    import importlib.metadata

    wanted = set()
    for text in importlib.metadata.requires("marstune") or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras.split(",")):
            req.marker = None
            wanted.add(key(str(req)))
    assert {key(line) for line in out.splitlines()} == wanted
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    bad = subprocess.run(
        [sys.executable, "tools/requirements.py", "pyproject.toml", "ray,nope"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert bad.returncode != 0 and not bad.stdout
    assert (
        bad.stderr.strip() == f"pyproject.toml has no extra 'nope'; its extras: {', '.join(sorted(declared))}"
    )


def test_make_env_writes_fresh_secrets_it_never_shows(tmp_path: Path) -> None:
    (tmp_path / "studies").mkdir()
    target = tmp_path / ".env"
    made = subprocess.run(
        [sys.executable, str(REPO / "tools" / "make_env.py"), str(ENV_EXAMPLE), str(target)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    values = dict(
        line.split("=", 1) for line in target.read_text().splitlines() if "=" in line and line[0] != "#"
    )
    secrets_ = [values["POSTGRES_PASSWORD"], values["RAY_AUTH_TOKEN"]]
    assert all(re.fullmatch(r"[0-9a-f]{64}", s) for s in secrets_) and secrets_[0] != secrets_[1]
    assert not any(s in made.stdout + made.stderr for s in secrets_)
    # The named volume (the example's TUNE_STUDIES) is the image user's: the ids stay 1000.
    assert values["TUNE_STUDIES"] == "studies"
    assert (values["TUNE_UID"], values["TUNE_GID"]) == ("1000", "1000")
    services = _resolve(target)["services"]
    assert f":{secrets_[0]}@" in services["tune-worker"]["environment"]["TUNE_STORAGE"]
    before = target.read_text()
    again = subprocess.run(
        [sys.executable, str(REPO / "tools" / "make_env.py"), str(ENV_EXAMPLE), str(target)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode != 0 and "exists" in again.stderr and target.read_text() == before


def test_make_env_gives_a_host_studies_folder_its_owner(tmp_path: Path) -> None:
    """With TUNE_STUDIES a host folder (a path), the services run as its owner, so they can write there."""
    (tmp_path / "shared").mkdir()
    os.chown(tmp_path / "shared", 4321, 765) if os.geteuid() == 0 else None
    example = tmp_path / "example"
    example.write_text(ENV_EXAMPLE.read_text().replace("TUNE_STUDIES=studies\n", "TUNE_STUDIES=./shared\n"))
    made = subprocess.run(
        [sys.executable, str(REPO / "tools" / "make_env.py"), str(example), str(tmp_path / ".env")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    values = dict(
        ln.split("=", 1) for ln in (tmp_path / ".env").read_text().splitlines() if "=" in ln and ln[0] != "#"
    )
    owner = (tmp_path / "shared").stat()
    assert (values["TUNE_UID"], values["TUNE_GID"]) == (str(owner.st_uid), str(owner.st_gid))
    assert values["TUNE_STUDIES"] == "./shared" and f"TUNE_UID={owner.st_uid}" in made.stdout
