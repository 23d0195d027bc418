"""Write .env for docker-compose.yml from .env.example, with fresh secrets: `make .env`.

    python tools/make_env.py .env.example .env

POSTGRES_PASSWORD and RAY_AUTH_TOKEN (empty in the example, so compose refuses to start on a copy left
as is) get random values. TUNE_UID/TUNE_GID: where TUNE_STUDIES is a host folder (a path, not the named
volume `studies`), its owner (the current user's ids if it does not exist yet), so the services can write
there; with the named volume they stay the image's user (1000), who owns it. The file is created with
mode 600 and never overwritten; the secrets are never printed. Every other line is copied as it is.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

SECRETS = ("POSTGRES_PASSWORD", "RAY_AUTH_TOKEN")


def host_folder(value: str) -> bool:
    """Compose's rule: a volume source that is a path (./x, /x, ~/x) is a bind mount, a name a volume."""
    return value.startswith((".", "/", "~"))


def render(example: str, here: Path) -> str:
    """`example` with secrets filled in; `here`: the folder of the .env (relative paths start there)."""
    settings = dict(ln.split("=", 1) for ln in example.splitlines() if "=" in ln and not ln.startswith("#"))
    ids: dict[str, str] = {}
    studies = settings.get("TUNE_STUDIES", "studies")
    if host_folder(studies):
        folder = here / Path(studies).expanduser()
        owner = folder.stat() if folder.is_dir() else None
        ids = {
            "TUNE_UID": str(owner.st_uid if owner else os.getuid()),
            "TUNE_GID": str(owner.st_gid if owner else os.getgid()),
        }
    lines = []
    for line in example.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            if key in SECRETS and not value:
                value = secrets.token_hex(32)
            elif key in ids:
                value = ids[key]
            line = f"{key}={value}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python tools/make_env.py .env.example .env")
    example, target = Path(argv[0]), Path(argv[1])
    if target.exists():
        raise SystemExit(f"{target} exists; edit it, or remove it to write a fresh one")
    text = render(example.read_text(), target.resolve().parent)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    filled = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#")
    print(
        f"wrote {target} (mode 600): random {' and '.join(SECRETS)} (not shown), "
        f"TUNE_UID={filled.get('TUNE_UID')} TUNE_GID={filled.get('TUNE_GID')}; "
        "copy it to every node (same secrets everywhere)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
