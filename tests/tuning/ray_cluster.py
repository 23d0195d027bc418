"""A real two-node Ray cluster on loopback for tests, started with `ray start` and stopped by PID.

Ray 2.60 replaces 127.0.0.1 with the machine's external address unless its multi-node mode is off, which
in turn refuses a second node. So the head runs with that mode off (everything on 127.0.0.1), and the
second node joins through the IPv4-mapped loopback address [::ffff:127.0.0.1], which Ray leaves alone:
both nodes talk over loopback only, and get distinct node addresses. Token auth is on for every process
(a second node only joins with it); the token lives in the environment, so no ~/.ray file is written.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.tuning.servers import free_ports

RAY = str(Path(sys.executable).with_name("ray"))
STARTED = "Ray runtime started"


_PORT_FLAGS = (
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
)


def _ports(*extra: str) -> list[str]:
    """Every port Ray would otherwise take from a fixed default (shared machine: others run Ray too),
    chosen together so no two components of a node get the same one."""
    flags = (*_PORT_FLAGS, *extra)
    return [f"{flag}={port}" for flag, port in zip(flags, free_ports(len(flags)), strict=True)]


@dataclass
class RayCluster:
    address: str  # what a driver passes as --address
    env: dict[str, str]  # the token settings every process of the cluster (and its drivers) needs
    temp_dirs: list[Path] = field(default_factory=list)
    leaders: list[subprocess.Popen] = field(default_factory=list)  # `ray start --block`, one per node

    def pids(self) -> set[int]:
        """Every process of this cluster: our process groups, and anything naming our temp dirs."""
        groups = {p.pid for p in self.leaders}
        found = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    continue  # exited, waiting to be reaped: nothing left to stop
                pgid = os.getpgid(int(entry.name))
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ProcessLookupError, IndexError):
                continue
            if pgid in groups or any(str(d) in cmdline for d in self.temp_dirs):
                found.add(int(entry.name))
        return found

    def stop(self) -> None:
        """SIGTERM the `ray start --block` leaders (they stop their node), then SIGKILL what is left."""
        for leader in self.leaders:
            if leader.poll() is None:
                leader.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (self.pids() or any(p.poll() is None for p in self.leaders)):
            time.sleep(0.5)
        for pid in self.pids():  # found afresh: still in our groups or naming our temp dirs
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for leader in self.leaders:
            leader.wait(timeout=10)
        for d in self.temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


def _start(cluster: RayCluster, args: list[str], env: dict[str, str], log: Path) -> None:
    temp_dir = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: unix socket path limit
    cluster.temp_dirs.append(temp_dir)
    with open(log, "w") as out:
        leader = subprocess.Popen(
            [RAY, "start", "--block", f"--temp-dir={temp_dir}", "--disable-usage-stats", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped by PID, never `ray stop`
        )
    cluster.leaders.append(leader)
    deadline = time.monotonic() + 180
    while STARTED not in log.read_text():
        if leader.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"`ray start` failed:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def start_cluster(logs: Path, *, port: int | None = None, token: str | None = None) -> RayCluster:
    """A head (1 CPU) and a second node (1 CPU, custom resource `node2`), both on loopback; `port` and
    `token` as given (a head started again where it was), else new ones."""
    logs.mkdir(parents=True, exist_ok=True)
    if port is None:
        [port] = free_ports(1)
    auth = {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token or secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    # Not the switch a Ray driver in this process may have set (ray_engine._prepare_env): with it, the
    # second node refuses to join ("multi-node clusters are not supported").
    inherited = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    base = {**inherited, **auth}
    cluster = RayCluster(address=f"127.0.0.1:{port}", env=auth)
    try:
        head = ["--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1"]
        head += ["--include-dashboard=false", *_ports("--ray-client-server-port")]
        _start(cluster, head, {**base, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}, logs / "head.log")
        second = [f"--address=[::ffff:127.0.0.1]:{port}", "--num-cpus=1", '--resources={"node2": 1}']
        _start(cluster, second + _ports(), base, logs / "node2.log")
    except BaseException:
        cluster.stop()
        raise
    return cluster


_SS_LINE = re.compile(r"^\S+\s+\d+\s+\d+\s+(\S+)\s+(\S+)\s+(.*)$")


def _loopback(endpoint: str) -> bool:
    host = endpoint.rsplit(":", 1)[0].strip("[]").split("%")[0]
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def outside_connections(pids: set[int]) -> list[str]:
    """TCP connections of these processes whose local or peer address is not loopback (`ss -tnp`)."""
    out = subprocess.run(["ss", "-tnpH"], capture_output=True, text=True, check=True).stdout
    bad = []
    for line in out.splitlines():
        m = _SS_LINE.match(line.strip())
        if not m:
            continue
        owners = {int(p) for p in re.findall(r"pid=(\d+)", m.group(3))}
        if owners & pids and not (_loopback(m.group(1)) and _loopback(m.group(2))):
            bad.append(line.strip())
    return bad
