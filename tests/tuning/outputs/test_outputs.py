"""The rules every output follows (tuning/outputs): never over an input or a database, replaced
atomically keeping its mode, no temporary file left behind."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from marstune.tuning.errors import OutputError
from marstune.tuning.outputs import check_folder_output, check_output, replace_atomically, write_atomically


def test_an_existing_output_is_replaced_keeping_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    target.chmod(0o640)
    write_atomically(target, "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_new_output_gets_the_umask_mode_not_mkstemps_0600(tmp_path: Path) -> None:
    target = write_atomically(tmp_path / "new.yaml", "x")
    assert stat.S_IMODE(target.stat().st_mode) & 0o044  # readable by others, as any new file


def test_inputs_databases_directories_and_missing_folders_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "d.npz"
    data.write_bytes(b"data")
    db = tmp_path / "notes.sqlite-looking-name.txt"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    (tmp_path / "dir").mkdir()
    for path, inputs, needle in (
        (data, [data], "input"),
        (tmp_path / "." / "d.npz", [data], "input"),  # another spelling of the same file
        (db, [], "database"),
        (tmp_path / "dir", [], "directory"),
        (tmp_path / "no" / "x.txt", [], "does not exist"),
        (tmp_path / ("x" * 300), [], "longer than 255"),
    ):
        with pytest.raises(OutputError, match=needle):
            check_output(path, inputs=inputs)
    assert data.read_bytes() == b"data"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.keras"
    target.write_bytes(b"old")

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space left on device"):
        replace_atomically(target, broken)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_the_temporary_name_keeps_the_suffix_the_writer_chooses_its_format_by(tmp_path: Path) -> None:
    seen: list[str] = []
    replace_atomically(tmp_path / "m.keras", lambda tmp: (seen.append(tmp.suffix), tmp.write_bytes(b"k")))
    assert seen == [".keras"]


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal", ".lock"])
def test_a_databases_journal_is_refused_like_the_database(suffix: str, tmp_path: Path) -> None:
    db = tmp_path / "tune.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    journal = tmp_path / f"tune.db{suffix}"
    for exists in (False, True):
        if exists:
            journal.write_bytes(b"frames not yet checkpointed")
        with pytest.raises(OutputError, match="database"):
            check_output(journal)
    check_output(tmp_path / f"other.db{suffix}")  # no database beside it: an ordinary name


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("/dev/null", "is not a regular file"),  # a rename over it would replace the device (as root)
        ("/proc/export.yaml", "is not writable"),  # os.access says yes there for root: it is tried
        ("-", "outputs are files, not stdout"),
        ("file/export.yaml", "is a file, not a folder"),
        (".", "is a directory; give a file name"),
    ],
)
def test_no_place_for_a_file_is_refused_before_any_work(where: str, reason: str, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("notes")
    path = Path(where) if where.startswith("/") or where in ("-", ".") else tmp_path / where
    with pytest.raises(OutputError, match=reason):
        check_output(path)
    assert Path("/dev/null").is_char_device() and (tmp_path / "file").read_text() == "notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no probe left behind


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("-", "give a folder name"),
        ("file", "is a file; give a folder"),
        ("file/pngs", "is a file, not a folder"),
        ("/proc/pngs", "nothing can be created in /proc"),
    ],
)
def test_a_folder_output_nothing_can_be_made_in_is_refused(where: str, reason: str, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("notes")
    path = Path(where) if where.startswith("/") or where == "-" else tmp_path / where
    with pytest.raises(OutputError, match=reason):
        check_folder_output(path, flag="--png")
    assert check_folder_output(tmp_path / "new" / "pngs", flag="--png") == tmp_path / "new" / "pngs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing made, no probe left
