"""`make compose-check`: docker-compose.yml started end to end on this machine, then removed.

    python tools/compose_check.py [--profile optuna|ray|all]

1. optuna: PostgreSQL, the dashboard and two CPU `tune-worker`s; a small real U-Net study (synthetic
   terrain, 2 epochs) run to its target by `docker compose run --rm tune run ...` with the workers on it;
   `tune export-best` writes the best configuration and its kept model into the shared studies volume;
   the same model is fetched through the dashboard's HTTP API (optuna-dashboard's artifact download) and
   must be byte for byte the exported one; every service's health is checked.
2. ray: PostgreSQL, the Ray head, one Ray worker node and the `tune-ray` driver running a few trials.
After each, `down -v`, and nothing of the project may remain (container, network or volume): the check
fails if anything does. The images stay, so the next check reuses their layers.

Its own compose project (tune-check-<random>), free ports, random secrets and a .env of its own in a
temporary folder (mode 700): a stack of the user's own, .env or ./studies are never touched. This machine
has no GPU: the file is run as `docker compose config` resolves it, less the GPU reservations (`deploy`),
which a CPU-only Docker refuses. The base images come from PYTHON_IMAGE and POSTGRES_IMAGE if set, else
the registry's defaults if they can be pulled, else tools/build-base-images (Debian's packages).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BASES = {"PYTHON_IMAGE": "python:3.11-slim", "POSTGRES_IMAGE": "postgres:16"}
LOCAL_BASES = {"PYTHON_IMAGE": "tune-python:3.11-bookworm", "POSTGRES_IMAGE": "tune-postgres:15-bookworm"}
STUDY = "compose-check"
TRIALS = 6  # the optuna study's target: enough for the workers, restarted until it exists, to join
RAY_TRIALS = 3
# Tiny and quick: the demo's space (small U-Nets), 24 synthetic pairs, 2 epochs; two kept models.
TINY = [
    "--spec", "studies/demo.yaml", "--epochs", "2", "--set", "data.synthetic_items=24",
    "--set", "train.max_items=24", "--set", "train.batch_size=8", "--set", "search.keep_models=2",
    "--set", "search.trials_per_process=0", "--threads", "1",
]  # fmt: skip


class CheckFailed(Exception):
    """What went wrong, in one line."""


def say(message: str) -> None:
    print(f"compose-check: {message}", file=sys.stderr, flush=True)


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports, every socket held until all are chosen (a port given back
    by one probe can be handed out again by the next)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def compose_command() -> list[str]:
    """The v2 plugin if the docker CLI has it, else v1's docker-compose."""
    if shutil.which("docker") is None:
        raise CheckFailed("docker is not installed")
    v2 = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if v2.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose") is not None:
        return ["docker-compose"]
    raise CheckFailed("neither `docker compose` (v2 plugin) nor docker-compose (v1) is installed")


def ensure_daemon() -> None:
    """Start dockerd in the background when no daemon answers (log in $TMPDIR/dockerd.log)."""
    if subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        raise CheckFailed("the Docker daemon is not running: start it (systemctl start docker, or dockerd &)")
    log = Path(tempfile.gettempdir()) / "dockerd.log"
    say(f"the Docker daemon is not running: starting dockerd in the background (log: {log})")
    with open(log, "ab") as out:
        subprocess.Popen(["dockerd"], stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + 60
    while subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise CheckFailed(f"dockerd did not answer within 60 s: see {log}")
        time.sleep(1)


def base_images() -> dict[str, str]:
    """PYTHON_IMAGE and POSTGRES_IMAGE: as set; else the defaults if present or pullable; else local ones."""
    chosen = {k: os.environ[k] for k in DEFAULT_BASES if os.environ.get(k)}
    if len(chosen) == len(DEFAULT_BASES):
        return chosen
    missing = []
    for key, image in DEFAULT_BASES.items():
        if key in chosen:
            continue
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0:
            chosen[key] = image
            continue
        try:
            pulled = subprocess.run(["docker", "pull", "-q", image], capture_output=True, timeout=120)
            ok = pulled.returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
        if ok:
            chosen[key] = image
        else:
            missing.append(key)
    if missing:
        say(f"no registry serves {', '.join(DEFAULT_BASES[k] for k in missing)}: tools/build-base-images")
        subprocess.run([str(REPO / "tools" / "build-base-images")], check=True, stdout=subprocess.DEVNULL)
        chosen.update({k: LOCAL_BASES[k] for k in missing})
    return chosen


class Stack:
    """One compose project: its env file, its CPU variant of the compose file, and its commands."""

    def __init__(self, compose: list[str], workdir: Path, bases: dict[str, str], profiles: Sequence[str]):
        self.compose = compose
        self.workdir = workdir
        self.project = f"tune-check-{secrets.token_hex(4)}"
        names = ("postgres", "dashboard", "ray", "ray_dashboard", "ray_client", "ray_agent", "worker_agent")
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.settings = {
            "POSTGRES_PASSWORD": secrets.token_hex(32),
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "POSTGRES_PORT": str(self.ports["postgres"]),
            "POSTGRES_PUBLISH": f"127.0.0.1:{self.ports['postgres']}",
            "DASHBOARD_PUBLISH": f"127.0.0.1:{self.ports['dashboard']}",
            "RAY_PORT": str(self.ports["ray"]),
            "RAY_DASHBOARD_PORT": str(self.ports["ray_dashboard"]),
            "RAY_CLIENT_PORT": str(self.ports["ray_client"]),
            "RAY_AGENT_PORT": str(self.ports["ray_agent"]),
            "RAY_CPUS_PER_WORKER": "1",
            "TUNE_STUDY": STUDY,
            "TUNE_THREADS": "1",
            "TUNE_EXTRAS": "ray",  # no CUDA wheels: this machine has no GPU
            "TUNE_IMAGE": "tune:compose-check",
            "TUNE_HEARTBEAT_INTERVAL": "5",
            "TUNE_GRACE_PERIOD": "30",
            **bases,
        }
        self.env_file = workdir / ".env"
        fd = os.open(self.env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("".join(f"{k}={v}\n" for k, v in self.settings.items()))
        self.file = workdir / "docker-compose.cpu.yml"
        self._write_cpu_file(profiles)

    def _base(self) -> list[str]:
        return [*self.compose, "--env-file", str(self.env_file), "-p", self.project]

    def _env(self, **extra: str) -> dict[str, str]:
        """Only this check's settings reach compose (none of the caller's POSTGRES_*, TUNE_*, RAY_*)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "TUNE_", "RAY_"))}
        return {**env, **extra}

    def _write_cpu_file(self, profiles: Sequence[str]) -> None:
        options = [a for p in profiles for a in ("--profile", p)]
        resolved = subprocess.run(
            [*self._base(), "-f", str(REPO / "docker-compose.yml"), *options, "config"],
            capture_output=True, text=True, cwd=REPO, env=self._env(),
        )  # fmt: skip
        if resolved.returncode != 0:
            raise CheckFailed(f"docker-compose.yml does not resolve: {resolved.stderr.strip()}")
        config = yaml.safe_load(resolved.stdout)
        for service in config["services"].values():
            service.pop("deploy", None)  # the GPU reservations: a CPU-only Docker refuses them
        fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # it holds the secrets
        with os.fdopen(fd, "w") as out:
            yaml.safe_dump(config, out, sort_keys=False)

    def run(
        self, *args: str, check: bool = True, timeout: float = 1800, show: bool = False, **env: str
    ) -> subprocess.CompletedProcess:
        """A compose command: stdout captured (shown too for `build`); stderr shown as it comes (`show`,
        for long work) or kept for the error."""
        argv = [*self._base(), "-f", str(self.file), *args]
        done = subprocess.run(
            argv, cwd=REPO, env=self._env(**env), timeout=timeout, text=True,
            stdout=None if args[0] == "build" else subprocess.PIPE, stderr=None if show else subprocess.PIPE,
        )  # fmt: skip
        if check and done.returncode != 0:
            tail = "(its output is above)" if show else "\n".join(done.stderr.strip().splitlines()[-15:])
            raise CheckFailed(f"`compose {' '.join(args[:4])}` exited {done.returncode}: {tail}")
        return done

    def start(self, *args: str) -> subprocess.Popen:
        """A compose command in the background, its stderr shown as it comes."""
        argv = [*self._base(), "-f", str(self.file), *args]
        return subprocess.Popen(argv, cwd=REPO, env=self._env(), stdout=subprocess.DEVNULL, text=True)

    def containers(self, service: str | None = None, every: bool = False) -> list[str]:
        labels = [f"label=com.docker.compose.project={self.project}"]
        if service:
            labels.append(f"label=com.docker.compose.service={service}")
        argv = ["docker", "ps", "-q", "--no-trunc", *(["-a"] if every else [])]
        for label in labels:
            argv += ["--filter", label]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()

    def inspect(self, container: str) -> dict:
        out = subprocess.run(["docker", "inspect", container], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)[0]

    def wait_healthy(self, service: str, count: int = 1, timeout: float = 300) -> list[str]:
        """Docker's own health status, from the service's healthcheck in the compose file."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.containers(service)
            states = [self.inspect(c)["State"] for c in found]
            healthy = [
                c
                for c, s in zip(found, states, strict=True)
                if s.get("Health", {}).get("Status") == "healthy"
            ]
            if len(healthy) >= count:
                say(f"{service}: healthy ({len(healthy)} container(s))")
                return healthy
            if time.monotonic() > deadline:
                logs = self.run("logs", "--tail", "20", service, check=False).stdout
                raise CheckFailed(f"{service} is not healthy after {timeout:.0f} s: {states}\n{logs}")
            time.sleep(3)

    def passes_healthcheck(self, container: str) -> bool:
        """Run the healthcheck the compose file gives a container, now, in it (as Docker runs it)."""
        test = self.inspect(container)["Config"]["Healthcheck"]["Test"]
        argv = test[1:] if test[0] == "CMD" else ["sh", "-c", test[1]]
        done = subprocess.run(["docker", "exec", container, *argv], capture_output=True, timeout=120)
        return done.returncode == 0

    def down(self) -> None:
        """`down -v`, then nothing of the project may remain."""
        self.run("down", "-v", "--remove-orphans", "--timeout", "20", check=False, timeout=300)
        label = f"label=com.docker.compose.project={self.project}"
        left = {
            kind: subprocess.run(
                ["docker", kind, "ls", "-q", "--filter", label] if kind != "container" else
                ["docker", "ps", "-aq", "--filter", label],
                capture_output=True, text=True, check=True,
            ).stdout.split()
            for kind in ("container", "network", "volume")
        }  # fmt: skip
        left = {k: v for k, v in left.items() if v}
        if left:
            raise CheckFailed(f"`down -v` left {left} of project {self.project}")
        say(f"down -v: no container, network or volume of {self.project} is left")


def http_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def at_target(stack: Stack, cli: Sequence[str], study: str, target: int) -> None:
    """`tune status --json`: finished trials (complete + pruned) exactly the target, none running."""
    (row,) = json.loads(stack.run(*cli, "status", "--study", study, "--json").stdout)
    counts = {k: row[k] for k in ("complete", "pruned", "fail", "skipped", "running", "waiting", "target")}
    say(f"tune status {study}: {json.dumps(counts)}")
    if row["complete"] + row["pruned"] != target or row["target"] != target or row["running"]:
        raise CheckFailed(f"{study} is not at exactly its target of {target}: {counts}")


def check_optuna(stack: Stack) -> None:
    stack.run("up", "-d", "postgres", "dashboard", timeout=600)
    stack.wait_healthy("postgres", timeout=180)
    stack.wait_healthy("dashboard", timeout=240)
    # Before the study exists they exit 1 and are restarted (restart: on-failure) until it does.
    stack.run("up", "-d", "--scale", "tune-worker=2", "tune-worker", timeout=300)
    workers = stack.containers("tune-worker", every=True)
    if len(workers) != 2:
        raise CheckFailed(f"expected 2 tune-worker containers, found {len(workers)}")
    say(f"tune run: {TRIALS} trials of a real U-Net (synthetic terrain, 2 epochs) with 2 tune-workers")
    started = time.monotonic()
    cli = ("run", "--rm", "-T", "tune")
    run = stack.start(*cli, "run", "--study", STUDY, "--sampler", "random", "--trials", str(TRIALS), *TINY)
    healthy: set[str] = set()  # workers whose healthcheck passed while they worked on the study
    while run.poll() is None:
        for worker in set(stack.containers("tune-worker")) - healthy:  # running now
            if stack.passes_healthcheck(worker):  # fails until the study exists
                healthy.add(worker)
                say(f"tune-worker {worker[:12]}: its healthcheck passes (the study answers)")
        time.sleep(5)
    if run.returncode != 0:
        raise CheckFailed(f"`compose run --rm tune run` exited {run.returncode} (its output is above)")
    say(f"tune run: done in {time.monotonic() - started:.0f} s")
    if len(healthy) != 2:
        raise CheckFailed(f"{2 - len(healthy)} tune-worker(s) never passed their healthcheck while working")
    deadline = time.monotonic() + 300  # each ends at the target, exit 0 (never restarted after)
    while any(stack.inspect(w)["State"]["Running"] for w in workers):
        if time.monotonic() > deadline:
            raise CheckFailed("the tune-workers did not exit at the study's target within 300 s")
        time.sleep(3)
    codes = [stack.inspect(w)["State"]["ExitCode"] for w in workers]
    if codes != [0, 0]:
        logs = stack.run("logs", "--tail", "30", "tune-worker", check=False).stdout
        raise CheckFailed(f"tune-workers exited {codes}, not 0 at the target:\n{logs}")

    at_target(stack, cli, STUDY, TRIALS)

    exported = json.loads(stack.run(*cli, "export-best", "--study", STUDY, "--json").stdout)
    if not exported.get("model"):
        raise CheckFailed(f"export-best wrote no model: {exported}")
    model = stack.run("run", "--rm", "-T", "--entrypoint", "sha256sum", "tune", exported["model"]).stdout
    model_sha = model.split()[0]
    say(f"export-best: trial {exported['trial']} (val mIoU {exported['value']:.4f}), {exported['model']}")

    dashboard = f"http://127.0.0.1:{stack.ports['dashboard']}"
    studies = http_json(f"{dashboard}/api/studies")["study_summaries"]
    (study_id,) = [s["study_id"] for s in studies if s["study_name"] == STUDY]
    trials = http_json(f"{dashboard}/api/studies/{study_id}")["trials"]
    (best,) = [t for t in trials if t["number"] == exported["trial"]]
    (artifact,) = best["artifacts"]
    url = f"{dashboard}/artifacts/{study_id}/{best['trial_id']}/{artifact['artifact_id']}"
    with urllib.request.urlopen(url, timeout=60) as response:
        served = response.read()
    if hashlib.sha256(served).hexdigest() != model_sha:
        raise CheckFailed(f"the dashboard served {len(served)} bytes at {url}, not the exported model")
    say(f"dashboard: {url} serves the exported model ({len(served)} bytes, sha256 {model_sha[:12]})")
    hosts = {a["value"].split(":")[0] for t in trials for a in t["user_attrs"] if a["key"] == "worker"}
    worker_hosts = {w[:12] for w in workers}
    if not hosts & worker_hosts:
        raise CheckFailed(f"no trial ran in a tune-worker container: workers {sorted(hosts)}")
    say(f"trials ran in {len(hosts)} containers, {len(hosts & worker_hosts)} of them tune-workers")
    for service in ("postgres", "dashboard"):
        stack.wait_healthy(service, timeout=60)


def check_ray(stack: Stack) -> None:
    stack.run("up", "-d", "postgres", timeout=300)
    stack.wait_healthy("postgres", timeout=180)
    stack.run("--profile", "ray", "up", "-d", "ray-head", timeout=300)
    stack.wait_healthy("ray-head", timeout=300)
    # Its own agent port: head and worker share this host's network here (on a cluster, two hosts).
    agent = str(stack.ports["worker_agent"])
    stack.run("--profile", "ray", "up", "-d", "ray-worker", timeout=300, RAY_AGENT_PORT=agent)
    stack.wait_healthy("ray-worker", timeout=300)
    (head,) = stack.containers("ray-head")
    nodes = subprocess.run(
        ["docker", "exec", head, "ray", "status"], capture_output=True, text=True, timeout=120
    ).stdout
    alive = nodes.split("Active:")[1].split("Pending:")[0].count("node_")
    if alive != 2:
        raise CheckFailed(f"the Ray cluster has {alive} active nodes, not 2:\n{nodes}")
    say("ray status: 2 active nodes (the head and one worker)")
    address = f"127.0.0.1:{stack.ports['ray']}"
    say(f"tune-ray: {RAY_TRIALS} trials through --engine ray --address {address}")
    cli = ("--profile", "ray", "run", "--rm", "-T", "tune-ray")
    stack.run(
        *cli, "run", "--engine", "ray", "--address", address, "--study", f"{STUDY}-ray",
        "--sampler", "random", "--trials", str(RAY_TRIALS), *TINY, show=True,
    )  # fmt: skip
    at_target(stack, cli, f"{STUDY}-ray", RAY_TRIALS)
    for service in ("postgres", "ray-head", "ray-worker"):
        stack.wait_healthy(service, timeout=60)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=("optuna", "ray", "all"), default="all")
    args = parser.parse_args(argv)
    began = time.monotonic()
    try:
        compose = compose_command()
        ensure_daemon()
        bases = base_images()
        say(f"{' '.join(compose)}; bases {bases['PYTHON_IMAGE']} and {bases['POSTGRES_IMAGE']}")
        checks = [("optuna", check_optuna), ("ray", check_ray)]
        for name, check in checks:
            if args.profile not in (name, "all"):
                continue
            with tempfile.TemporaryDirectory(prefix="tune-compose-check-") as workdir:
                stack = Stack(compose, Path(workdir), bases, ["ray"] if name == "ray" else [])
                say(f"{name}: project {stack.project}; building the image (cached layers are reused)")
                built = time.monotonic()
                stack.run("build", "ray-head" if name == "ray" else "dashboard", show=True, timeout=7200)
                say(f"{name}: image built in {time.monotonic() - built:.0f} s")
                try:
                    check(stack)
                finally:
                    stack.down()
            say(f"{name}: passed")
    except CheckFailed as exc:
        say(f"FAILED: {exc}")
        return 1
    say(f"passed in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
