"""`tune export-best --recheck K`: the top K re-trained at a longer budget, the winner exported, both
scores kept in the export and on the study."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml

from marstune.tuning.study.storage import open_storage
from tests.conftest import run_tune

# The analytic objective with noise: bigger models learn slower, so a 2-epoch ranking is not the 12-epoch one.
ANALYTIC = ("--set", "objective.kind=analytic", "--set", "objective.noise=0.02", "--pruner", "none", "-q")


def test_recheck_retrains_the_top_k_and_exports_the_winner(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    run = ("run", "--storage", url, "--trials", "8", "--epochs", "2", "--sampler", "random", *ANALYTIC)
    assert run_tune(*run, cwd=tmp_path).returncode == 0
    r = run_tune("export-best", "--storage", url, "--recheck", "3", "--recheck-epochs", "12", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "re-checking the 3 best configuration(s) of unet-mars at 12 epochs each" in r.stderr
    exported = yaml.safe_load((tmp_path / "studies" / "unet-mars.best.yaml").read_text())
    checked = exported["recheck"]
    assert checked["epochs"] == 12 and len(checked["candidates"]) == 3
    study = optuna.load_study(study_name="unet-mars", storage=open_storage(url))
    top = sorted((t for t in study.trials if t.value is not None), key=lambda t: -t.value)[:3]
    assert {c["trial"] for c in checked["candidates"]} == {t.number for t in top}
    best = max(checked["candidates"], key=lambda c: c["recheck_value"])
    assert exported["trial"] == checked["winner"] == best["trial"]  # the winner at the longer budget
    assert all(c["recheck_value"] > c["search_value"] for c in checked["candidates"])  # 12 epochs > 2
    assert study.user_attrs["recheck"] == checked  # the report shows it from the study
    again = run_tune("export-best", "--storage", url, "--recheck-epochs", "0", cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.startswith("Error: ")


def test_a_wrong_output_is_refused_before_the_recheck_and_the_study_records_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    run = ("run", "--storage", url, "--trials", "4", "--epochs", "2", "--sampler", "random", *ANALYTIC)
    assert run_tune(*run, cwd=tmp_path).returncode == 0
    notes = tmp_path / "studies" / "unet-mars.best.yaml"  # the default output, but not an export
    notes.parent.mkdir(exist_ok=True)
    notes.write_text("my notes\n")
    refusals = {
        (): "the default --out studies/unet-mars.best.yaml exists and is not a best-config export",
        ("--out", "/dev/null"): "--out /dev/null is not a regular file",
        ("--out", "/proc/best.yaml"): "--out /proc/best.yaml: folder /proc is not writable",
        ("--recheck-epochs", "5"): "--recheck-epochs sets the epochs of --recheck K; pass --recheck K",
    }
    for args, message in refusals.items():
        recheck = () if "--recheck-epochs" in args else ("--recheck", "2")
        r = run_tune("export-best", "--storage", url, *recheck, *args, cwd=tmp_path)
        assert r.returncode in (1, 2) and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith(f"Error: {message}") and "re-checking" not in r.stderr
    assert notes.read_text() == "my notes\n" and Path("/dev/null").is_char_device()
    study = optuna.load_study(study_name="unet-mars", storage=open_storage(url))
    assert "recheck" not in study.user_attrs  # nothing was exported, so no re-check is on record
