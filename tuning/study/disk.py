"""A full disk, told in one line that names it: the study database's disk, the kept models' or the
database server's. A full disk does not pass by waiting (study/outage.py retries only what does), so
the run stops; the trial it was running is marked as the storage's fault (FailKind.STORAGE), which
the failure streak does not count, and the same command continues once there is room.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from marstune.tuning.errors import DiskFull, TuneError, is_disk_full
from marstune.tuning.study.urls import display_url, sqlite_path


def mount_of(path: Path) -> Path:
    """The mount point of the filesystem holding `path` (its nearest existing folder)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    device = path.stat().st_dev
    while path != path.parent and path.parent.stat().st_dev == device:
        path = path.parent
    return path


def _file_named(exc: BaseException) -> Path | None:
    """The file an OSError in the chain names (a kept model, a TensorBoard log), if any."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.filename:
            return Path(os.fsdecode(seen.filename))
        seen = seen.__cause__ or seen.__context__
    return None


def _amount(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def full_disk_line(url: str, exc: BaseException, needed: int | None = None) -> str:
    """Which disk is full, how much is left (and how much the write needed, when known), and what to do:
    one line. `free` is read after the failed write cleaned up, so without `needed` it can look ample."""
    database = sqlite_path(url)
    target = _file_named(exc) or database
    if target is None:  # the database server's disk
        return (
            f"the disk of the database server behind {display_url(url)} is full: free space on the server "
            "(PostgreSQL: its data directory), then run the same command again"
        )
    mount = mount_of(target)
    free = shutil.disk_usage(mount).free
    what = "the study database" if database is not None and target == database else "the file"
    room = f"{_amount(free)} free" + (f", {_amount(needed)} needed" if needed is not None else "")
    return (
        f"the disk holding {what} {target} is full (the filesystem mounted at {mount}, {room}): "
        "free space there, or move the study's files to another disk, then run the same command again"
    )


@contextmanager
def full_disk_named(url: str) -> Iterator[None]:
    """Turn a full-disk error from anywhere inside (the driver, Optuna, the OS) into DiskFull, one line."""
    try:
        yield
    except TuneError:
        raise
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFull(full_disk_line(url, exc)) from None
