"""Installing: `tune` is ours after every install path, and `make test` sets up what its tests drive.

Ray 2.60's wheel declares a `tune` console script of its own, so installing or upgrading Ray after us
replaces our command; the Makefile's install (and the Dockerfile) end with tools/ensure-tune, which
notices and re-installs ours. Here a throwaway venv gets Ray's real entry-point script written over its
`tune`, and the Makefile's guard must bring ours back. The system packages (Debian's chromium,
docker-compose) are installed by `make test` as root; apt itself is simulated here by a stand-in
`apt-get` and `id` on PATH, the Makefile and its script are the real ones.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO

OURS = "tune (marstune "


def _version(tune: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(tune), "--version"], capture_output=True, text=True, timeout=120)


def _make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The repository's Makefile, as a person would run it (not as a sub-make of the `make test` that
    may be running this test: its flags, overrides and jobserver stay out)."""
    outer = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
    return subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", str(REPO), *args],
        capture_output=True,
        text=True,
        env={**{k: v for k, v in os.environ.items() if k not in outer}, **(env or {})},
        timeout=600,
    )


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_the_tune_beside_this_python_is_ours() -> None:
    result = _version(Path(sys.executable).parent / "tune")
    assert result.returncode == 0 and result.stdout.startswith(OURS), (result.stdout, result.stderr)


@pytest.mark.slow  # pip builds and installs the project: ~20 s
def test_the_makefile_guard_restores_tune_after_ray_replaced_it(tmp_path: Path) -> None:
    """A real venv (no pip of its own: it borrows this venv's packages through a .pth line), whose
    `tune` is then Ray's console script exactly as pip writes it, from Ray's own entry point."""
    (ray_tune,) = [
        ep
        for ep in importlib.metadata.entry_points(group="console_scripts", name="tune")
        if ep.dist.name == "ray"
    ]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (site / "borrowed.pth").write_text(sysconfig.get_path("purelib") + "\n")
    module, func = ray_tune.value.split(":")
    tune = _script(
        venv / "bin" / "tune",
        f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom {module} import {func}\n"
        f"if __name__ == '__main__':\n    sys.exit({func}())\n",
    )
    clobbered = _version(tune)
    assert not clobbered.stdout.startswith(OURS) and "No such option" in clobbered.stderr, clobbered

    guard = _make("ensure-tune", f"VENV={venv}")
    assert guard.returncode == 0, guard.stderr
    assert f"{venv}/bin/tune is not marstune's" in guard.stderr and "marstune's again" in guard.stderr
    restored = _version(tune)
    assert restored.returncode == 0 and restored.stdout.startswith(OURS), (restored.stdout, restored.stderr)

    again = _make("ensure-tune", f"VENV={venv}")  # ours now: the guard says nothing, installs nothing
    assert again.returncode == 0 and again.stdout == again.stderr == "", again
    assert _version(Path(sys.executable).parent / "tune").stdout.startswith(OURS)  # this venv untouched


def test_the_guard_fails_loudly_when_reinstalling_does_not_help(tmp_path: Path) -> None:
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    _script(bin_ / "tune", "#!/bin/sh\necho 'tune 0.0.1 (someone else)'\n")
    _script(bin_ / "python", "#!/bin/sh\nexit 0\n")  # a pip that "succeeds" and changes nothing
    result = subprocess.run(
        [str(REPO / "tools" / "ensure-tune"), str(bin_), "-e", str(REPO)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith(f"ensure-tune: {bin_}/tune is still not marstune's")


@pytest.fixture
def fake_system(tmp_path: Path) -> dict[str, Path]:
    """A PATH with stand-ins for `id` and `apt-get`: apt-get logs its arguments and, on install,
    creates the programs (as the real packages would)."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    paths = {"bin": bin_, "log": tmp_path / "apt.log", "chromium": tmp_path / "usr" / "bin" / "chromium"}
    _script(
        bin_ / "apt-get",
        f'#!/bin/sh\necho "$*" >> {paths["log"]}\n'
        f'case "$*" in *install*) mkdir -p {paths["chromium"].parent}; '
        f"printf '#!/bin/sh\\n' > {paths['chromium']}; chmod +x {paths['chromium']}; "
        f"cp {paths['chromium']} {bin_}/docker-compose-under-test ;; esac\n",
    )
    return paths


def _system_deps(fake: dict[str, Path], uid: int) -> subprocess.CompletedProcess:
    _script(fake["bin"] / "id", f"#!/bin/sh\necho {uid}\n")
    return _make(
        "system-deps",
        f"CHROMIUM={fake['chromium']}",
        "DOCKER_COMPOSE=docker-compose-under-test",
        env={"PATH": f"{fake['bin']}:/usr/bin:/bin"},
    )


def test_make_installs_missing_system_packages_as_root(fake_system: dict[str, Path]) -> None:
    result = _system_deps(fake_system, uid=0)
    assert result.returncode == 0, result.stderr
    assert fake_system["log"].read_text().splitlines() == [
        "update -qq",
        "install -y -qq chromium docker-compose",
    ]
    again = _system_deps(fake_system, uid=0)  # all there now: nothing to do, nothing said
    assert (
        again.returncode == 0 and again.stderr == "" and len(fake_system["log"].read_text().splitlines()) == 2
    )


def test_make_says_the_one_command_to_run_when_not_root(fake_system: dict[str, Path]) -> None:
    result = _system_deps(fake_system, uid=1000)
    assert result.returncode != 0 and not fake_system["log"].exists()
    ours = [line for line in result.stderr.splitlines() if not line.startswith("make:")]
    assert ours == [
        "make test needs the Debian packages chromium docker-compose: run "
        "'sudo apt-get update && sudo apt-get install -y chromium docker-compose', then make test again"
    ]


def test_make_test_installs_then_lints_formats_and_runs_every_test() -> None:
    """The order of `make test`, as make would run it (-n: print, run nothing), and CI runs just that."""
    planned = _make("-n", "test")
    assert planned.returncode == 0, planned.stderr
    lines = planned.stdout.splitlines()

    def at(text: str) -> int:
        found = [i for i, line in enumerate(lines) if text in line]
        assert found, f"`make test` does not run {text!r}:\n{planned.stdout}"
        return found[0]

    steps = [
        "tools/ensure-tune",
        "tools/system-deps chromium=/usr/bin/chromium docker-compose=docker-compose",
    ]
    steps += [".venv/bin/ruff check .", ".venv/bin/ruff format --check .", "lint-imports"]
    steps += [".venv/bin/pytest -q -ra"]
    assert [at(step) for step in steps] == sorted(at(step) for step in steps)
    assert " -m " not in lines[at(".venv/bin/pytest")]  # slow tests included
    assert "--durations=30" in lines[at(".venv/bin/pytest")]  # where the time goes, for the next change
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and line[0] != "#"]
    assert ci[-1] == "exec make test" and not any("apt-get" in line for line in ci), ci
