"""Hints keep their context: the commands `tune run` and the report suggest repeat the --storage
(password masked), --spec and --data given; `report --out` makes its folder; `tune status` names each
study's engine; `--study` completes the study names in the storage."""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import run_tune

TUNE = str(Path(sys.executable).with_name("tune"))
ANALYTIC = ["--set", "objective.kind=analytic", "--set", "train.epochs=2", "--trials", "1"]


def _spec_file(folder: Path) -> Path:
    spec = folder / "my spec.yaml"  # a space: the hint quotes it
    spec.write_text("study: c\nsearch: {sampler: random}\n")
    return spec


def test_the_next_hint_repeats_the_storage_given(tmp_path: Path) -> None:
    result = run_tune("run", "--storage", "sqlite:///s.db", "--study", "c", *ANALYTIC, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "next: tune export-best --study c --storage sqlite:///s.db   (--recheck 3" in result.stderr


def test_the_next_hint_never_shows_the_password_and_still_runs(pg_url: str, tmp_path: Path) -> None:
    """A masked URL (`:***@`) would not run when pasted: the hint names "$TUNE_STORAGE" instead, which
    the pasted command reads once the person sets it."""
    secret = pg_url.replace("postgres@", "postgres:hunter2@")  # trust auth: the password is not checked
    result = run_tune("run", "--storage", secret, "--study", "c", *ANALYTIC, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'next: tune export-best --study c --storage "$TUNE_STORAGE"   ' in result.stderr, result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    pasted = subprocess.run(
        'tune export-best --study c --storage "$TUNE_STORAGE"',
        shell=True,
        cwd=tmp_path,
        env={
            **os.environ,
            "TUNE_STORAGE": secret,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        },
        capture_output=True,
        text=True,
    )
    assert pasted.returncode == 0 and "best of c" in pasted.stderr, pasted.stderr


def test_the_reports_suggested_run_repeats_storage_spec_and_data(tmp_path: Path) -> None:
    spec = _spec_file(tmp_path)
    args = ("run", "--storage", "sqlite:///s.db", "--spec", str(spec), "--data", "d.npz", *ANALYTIC)
    ran = run_tune(*args, cwd=tmp_path)  # the analytic objective reads no data: only its path is kept
    assert ran.returncode == 0, ran.stderr
    out = tmp_path / "new" / "deeper" / "r.html"  # folders that do not exist yet are made
    made = run_tune("report", "--storage", "sqlite:///s.db", "--no-examples", "--out", str(out), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    page = html.unescape(out.read_text())
    quoted = f"'{spec}'"
    flags = f"--storage sqlite:///s.db --spec {quoted} --data d.npz"
    assert f"tune run --study c-random --sampler random {flags}" in page


def test_report_out_under_a_file_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    ran = run_tune("run", "--storage", "sqlite:///s.db", "--study", "c", *ANALYTIC, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    (tmp_path / "afile").write_text("mine\n")
    made = run_tune(
        "report", "--storage", "sqlite:///s.db", "--no-examples", "--out", "afile/sub/r.html", cwd=tmp_path
    )
    assert made.returncode == 1
    assert made.stderr.strip().splitlines() == [
        f"Error: --out afile/sub/r.html: its folder afile/sub: {tmp_path / 'afile'} is a file, not a "
        "folder; change --out afile/sub/r.html: its folder"
    ]
    assert (tmp_path / "afile").read_text() == "mine\n"


def test_status_names_the_engine_and_study_names_complete(tmp_path: Path) -> None:
    for name in ("alpha", "beta"):
        ran = run_tune("run", "--storage", "sqlite:///s.db", "--study", name, *ANALYTIC, cwd=tmp_path)
        assert ran.returncode == 0, ran.stderr
    rows = json.loads(run_tune("status", "--storage", "sqlite:///s.db", "--json", cwd=tmp_path).stdout)
    assert [(r["study"], r["engine"]) for r in rows] == [("alpha", "optuna"), ("beta", "optuna")]
    table = run_tune("status", "--storage", "sqlite:///s.db", cwd=tmp_path).stdout
    assert "engine" in table and table.count("optuna") == 2

    def complete(words: str) -> list[str]:
        env = {**os.environ, "_TUNE_COMPLETE": "complete_bash", "COMP_WORDS": words}
        env["COMP_CWORD"] = str(len(words.split()) - (0 if words.endswith(" ") else 1))
        done = subprocess.run([TUNE], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("tune status --storage sqlite:///s.db --study ") == ["alpha", "beta"]
    assert complete("tune report --storage sqlite:///s.db --study b") == ["beta"]
    assert complete("tune export-best --storage sqlite:///nowhere.db --study ") == []  # no error shown
