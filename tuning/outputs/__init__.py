"""Every file a command writes goes through here: checked first, then replaced atomically.

The rules (for every command): never write over one of the command's own inputs or over a database;
replace an existing output only atomically and keeping its mode; leave no temporary file behind on
failure. A temporary file sits beside the target (the rename is then atomic on the same filesystem) and
keeps the target's suffix, since Keras, NumPy and matplotlib choose the format from it.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path

from marstune.tuning.constants import CLAIM_LOCK_SUFFIX
from marstune.tuning.errors import OutputError

SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
# the files SQLite keeps beside a database, and the study claim's flock file
DATABASE_COMPANIONS = ("-wal", "-shm", "-journal", CLAIM_LOCK_SUFFIX)
DEFAULT_MODE = 0o666  # what open() would create, before the umask


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def same_path(a: Path | str, b: Path | str) -> bool:
    """True when `a` and `b` are one file: the same inode, or the same place (one may not exist yet)."""
    a, b = Path(a), Path(b)
    return _same_file(a, b) or os.path.normpath(a.absolute()) == os.path.normpath(b.absolute())


def is_database(path: Path) -> bool:
    """True for an SQLite database file (the default study storage), whatever its name."""
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def check_output(
    path: Path, *, inputs: Iterable[Path | str | None] = (), flag: str = "--out", folder_ok: bool = False
) -> Path:
    """Refuse an output path before anything is computed; returns it. `inputs` are the command's own
    input files (data, config, model, database), which it must never overwrite."""
    path = Path(path)
    if str(path) == "-":
        raise OutputError(f"{flag} -: outputs are files, not stdout; give a file name")
    if len(path.name.encode()) > 255:  # before any stat: the OS refuses the name itself
        raise OutputError(f"{flag} {path}: the file name is longer than 255 bytes; choose a shorter one")
    for source in inputs:
        if source is not None and same_path(path, source):
            raise OutputError(f"{flag} {path} is also this command's input; write the output elsewhere")
    if (path.is_dir() or not path.name) and not folder_ok:  # `.`, `..` and "" name no file either
        raise OutputError(f"{flag} {path} is a directory; give a file name, e.g. {path / 'out'}")
    if path.exists() and not path.is_file() and not path.is_dir():  # a rename would replace the device
        raise OutputError(f"{flag} {path} is not a regular file (a device, pipe or socket); give a file name")
    if path.is_file() and is_database(path):
        raise OutputError(f"{flag} {path} is a database; choose another file name")
    for companion in DATABASE_COMPANIONS:  # they hold a database's latest writes, or its claim
        if path.name.endswith(companion) and is_database(path.with_name(path.name.removesuffix(companion))):
            raise OutputError(
                f"{flag} {path} is part of a database (its {companion[1:]}); choose another file name"
            )
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{flag} {path}: {parent} is a file, not a folder; change {flag}")
    if not parent.is_dir():
        raise OutputError(f"{flag} {path}: folder {parent} does not exist; create it or change {flag}")
    if not os.access(parent, os.W_OK | os.X_OK) or not _can_create_in(path):
        raise OutputError(f"{flag} {path}: folder {parent} is not writable; change {flag}")
    return path


def check_folder_output(folder: Path, *, flag: str) -> Path:
    """Refuse a folder a command would create and fill, before any work: `-`, a file, or a place under
    which nothing can be made (a file above it, /proc, a read-only mount)."""
    folder = Path(folder)
    if str(folder) == "-":
        raise OutputError(f"{flag} -: give a folder name")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{flag} {folder} is a file; give a folder")
    above = next((p for p in [folder.absolute(), *folder.absolute().parents] if p.exists()), Path("/"))
    if not above.is_dir():
        raise OutputError(f"{flag} {folder}: {above} is a file, not a folder; change {flag}")
    if not os.access(above, os.W_OK | os.X_OK) or not _can_create_in(above / "probe"):
        raise OutputError(f"{flag} {folder}: nothing can be created in {above}; change {flag}")
    return folder


def _can_create_in(path: Path) -> bool:
    """Whether a file can be made beside `path` (where its temporary file goes): os.access says yes for
    root in /proc or on a read-only mount, so try it."""
    probe = temporary_name(path)
    try:
        probe.touch(exist_ok=False)
    except OSError:
        return False
    probe.unlink(missing_ok=True)
    return True


def temporary_name(path: Path) -> Path:
    """The one temporary-name scheme: hidden, unique, beside the target, with the target's suffix."""
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def replace_atomically(
    path: Path,
    write: Callable[[Path], None],
    *,
    inputs: Iterable[Path | str | None] = (),
    flag: str = "--out",
) -> Path:
    """Call `write(tmp)` to make the file, then move it over `path` in one step, keeping an existing
    file's mode (new files get the umask's). On any failure the temporary file is removed."""
    check_output(path, inputs=inputs, flag=flag)
    tmp = temporary_name(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else DEFAULT_MODE & ~_umask()
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}; change {flag}") from None
    finally:
        with suppress(FileNotFoundError):
            tmp.unlink()
    return path


def write_atomically(
    path: Path, content: str | bytes, *, inputs: Iterable[Path | str | None] = (), flag: str = "--out"
) -> Path:
    """Write text or bytes to `path` atomically (see replace_atomically)."""

    def write(tmp: Path) -> None:
        data = content.encode() if isinstance(content, str) else content
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # the rename must never publish a file whose bytes are not on disk

    return replace_atomically(Path(path), write, inputs=inputs, flag=flag)


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, for a moment, in every thread)."""
    with suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022
