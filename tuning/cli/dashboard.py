"""`tune dashboard`: optuna-dashboard on the study storage, bound to loopback unless --public.

Our database is a plain Optuna RDB storage, so this is a convenience over `optuna-dashboard URL`: the
same default storage as every other command, the SQLite busy timeout of `open_storage`, a threaded
server (the browser fetches in parallel), and a refusal to expose an unauthenticated UI by accident.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from marstune.tuning.cli.options import StorageOpt, handle_errors, stderr
from marstune.tuning.errors import DashboardError

HELP = (
    "Browse studies in optuna-dashboard: history, parameters, learning curves, user attributes.\n\n"
    "The dashboard has no authentication and can delete studies, so it listens on 127.0.0.1 only; "
    "reach it from another machine through an SSH tunnel, or pass --public to bind another address "
    "anyway. It works while studies run. Stop it with Ctrl-C. The same database also opens with the "
    "stock command, optuna-dashboard.\n\n"
    "Examples:\n\n"
    "  tune dashboard                         # http://127.0.0.1:8080/dashboard\n\n"
    "  tune dashboard --port 8081 --storage sqlite:///studies/tune.db\n\n"
    "  # from another machine: a tunnel, then http://127.0.0.1:8080/dashboard\n"
    "  ssh -L 8080:127.0.0.1:8080 host\n\n"
    "  tune dashboard --host 0.0.0.0 --public # whole network, no authentication\n\n"
    "  optuna-dashboard sqlite:///studies/tune.db   # the stock command\n"
)

PUBLIC_WARNING = (
    "WARNING: serving on {host}, reachable by anyone on the network: the dashboard has no "
    "authentication and anyone who reaches it can read, edit and delete studies."
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere: treat it as public


def check_host(host: str, public: bool) -> str | None:
    """Refuse a non-loopback address without --public; with it, return the warning to print."""
    if is_loopback(host):
        return None
    if not public:
        raise DashboardError(
            f"refusing to serve the dashboard on {host!r}: it has no authentication and can delete "
            "studies; use --host 127.0.0.1 (with an SSH tunnel), or pass --public to expose it anyway"
        )
    return PUBLIC_WARNING.format(host=host)


def browse_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    shown = f"[{shown.strip('[]')}]" if ":" in shown and not shown.startswith("[") else shown
    return f"http://{shown}:{port}/dashboard"


def make_server(host: str, port: int, app: Any, *, log_requests: bool = False) -> Any:
    """A threaded wsgiref server (the stock one serves one request at a time: a slow plot blocks the UI)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
    from wsgiref.simple_server import make_server as wsgi_make_server

    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(ThreadingMixIn, WSGIServer):
        address_family = family
        daemon_threads = True  # Ctrl-C must not wait for a browser's open keep-alive connection

    class Handler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
            if log_requests:
                super().log_message(format, *args)

    try:
        return wsgi_make_server(host.strip("[]"), port, app, server_class=Server, handler_class=Handler)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DashboardError(
            f"cannot listen on {host}:{port}: {reason}; pass another --port (or --host)"
        ) from None


@handle_errors
def dashboard(
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback unless --public).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
    public: Annotated[
        bool, typer.Option("--public", help="Allow a non-loopback --host (no authentication!).")
    ] = False,
    log_requests: Annotated[
        bool, typer.Option("--log-requests", help="Print every HTTP request to stderr.")
    ] = False,
) -> None:
    from marstune.tuning.study.storage import open_storage, study_names
    from marstune.tuning.study.urls import display_url, resolve_url

    warning = check_host(host, public)
    url = resolve_url(storage)
    opened = open_storage(url)  # refuses a missing SQLite file: the dashboard would create an empty one
    import optuna_dashboard

    from marstune.tuning.study import tables
    from marstune.tuning.study.artifacts import AllStudiesStore, all_folders

    def folders() -> list[Path]:  # every study's kept models: listed and served by the dashboard
        with tables.reading(url) as conn:
            return all_folders(conn)

    store = AllStudiesStore(folders(), refresh=folders)  # read again for a study made after the start
    app = optuna_dashboard.wsgi(opened, artifact_store=store)
    server = make_server(host, port, app, log_requests=log_requests)
    if warning:
        stderr(warning)
    names = study_names(opened)
    stderr(f"storage {display_url(url)}: {len(names)} studies ({', '.join(names[:5]) or 'none yet'})")
    # stdout carries the one line a script (or a test) waits for.
    typer.echo(f"optuna-dashboard on {browse_url(host, server.server_port)}  (Ctrl-C to stop)")
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        stderr("dashboard stopped")
    finally:
        server.server_close()
