"""Print the requirements of pyproject.toml's project (and the given extras), one a line, for pip -r.

    python tools/requirements.py pyproject.toml ray,gpu > requirements.txt

The Dockerfile installs these before it copies the code, so an edit of tuning/, models/ or data/ does not
reinstall TensorFlow, CUDA and Ray; the project itself then goes in with `pip install --no-deps .`. Only
the standard library: it runs on the bare base image. An extra may name the project's own extras
(`marstune[gp]`); they are expanded here, since the project is not installed yet.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """The project's dependencies and those of `extras`, in file order, without repeats."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    me = _normal(project["name"])
    out: list[str] = []
    todo = [list(project.get("dependencies", []))]
    todo += [_extra(optional, extra, pyproject) for extra in extras]
    seen_extras = set(extras)
    while todo:
        for req in todo.pop(0):
            match = _NAME.match(req)
            if match and _normal(match.group(1)) == me:  # the project's own extras
                for extra in (e.strip() for e in (match.group(2) or "").split(",") if e.strip()):
                    if extra not in seen_extras:
                        seen_extras.add(extra)
                        todo.append(_extra(optional, extra, pyproject))
            elif req not in out:
                out.append(req)
    return out


def _extra(optional: dict[str, list[str]], extra: str, pyproject: Path) -> list[str]:
    if extra not in optional:
        raise SystemExit(f"{pyproject} has no extra {extra!r}; its extras: {', '.join(sorted(optional))}")
    return list(optional[extra])


def main(argv: list[str]) -> None:
    if len(argv) not in (1, 2):
        raise SystemExit("usage: python tools/requirements.py PYPROJECT [EXTRA,EXTRA...]")
    extras = [e.strip() for e in (argv[1] if len(argv) == 2 else "").split(",") if e.strip()]
    print("\n".join(requirements(Path(argv[0]), extras)))


if __name__ == "__main__":
    main(sys.argv[1:])
