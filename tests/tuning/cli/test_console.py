"""What a person sees in the terminal: a short spec summary after the join check (the full spec with
--verbose or `tune status --spec`), a summary table without an empty header row, and no TensorFlow
start-up lines from the Keras Tuner engine."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.conftest import run_tune

ANALYTIC = ["--set", "objective.kind=analytic", "--set", "train.epochs=2"]


def _run(tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    result = run_tune("run", "--storage", "sqlite:///s.db", "--study", "c", *ANALYTIC, *extra, cwd=tmp_path)
    return result.returncode, result.stdout, result.stderr


def test_a_run_prints_a_short_spec_summary_and_the_full_one_only_when_asked(tmp_path: Path) -> None:
    code, _, err = _run(tmp_path, "--trials", "2")
    assert code == 0, err
    assert "study c on sqlite:///s.db: optuna engine, tpe sampler, median pruner, 2 trials" in err
    assert "  space: base_filters {8,16,32}, levels 2..5, kernel {3,5}, dropout 0..0.5" in err
    assert "the full spec: --verbose, or `tune status --spec --study c`" in err
    assert "resolved spec" not in err and "fail_every_attempt" not in err and "surrogate" not in err
    before_trials = err[: err.index("trial 0")]
    assert len(before_trials.splitlines()) <= 8  # was ~50 lines of YAML

    code, _, err = _run(tmp_path, "--trials", "3", "--verbose")
    assert code == 0, err
    assert "resolved spec (sqlite:///s.db):" in err and "  objective:" in err and "fail_every_attempt" in err

    shown = run_tune("status", "--storage", "sqlite:///s.db", "--study", "c", "--spec", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("# study c\n")
    stored = yaml.safe_load(shown.stdout)
    assert stored["objective"]["kind"] == "analytic" and stored["train"]["epochs"] == 2
    assert stored["search"]["trials"] == 2  # as the study was made


def test_a_refused_join_prints_only_the_refusal(tmp_path: Path) -> None:
    code, _, err = _run(tmp_path, "--trials", "1")
    assert code == 0, err
    code, out, err = _run(tmp_path, "--trials", "2", "--set", "train.batch_size=7")
    assert code == 1
    assert out == ""
    assert err.strip().splitlines() == [
        "Error: study 'c' exists with another spec (train.batch_size: 32 there, 7 here); run it with the "
        "settings it was made with, pass another --study, or start a new study from this one's trials with "
        "--warm-start-from c"
    ]


def test_the_summary_table_has_no_empty_header_row(tmp_path: Path) -> None:
    code, out, err = _run(tmp_path, "--trials", "1")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("study c: 1/1 finished")
    assert not [line for line in lines if re.fullmatch(r"\s*[┃│](\s*[┃│])+\s*", line)], out  # no empty row
    assert not [line for line in lines if "┡" in line or "╇" in line], out  # no header rule under it
    assert "best val mIoU" in out


def test_the_keras_tuner_engine_shows_no_tensorflow_start_up_lines(tmp_path: Path) -> None:
    result = run_tune(
        "run",
        "--engine",
        "keras-tuner",
        "--sampler",
        "random",
        "--trials",
        "1",
        "--storage",
        "sqlite:///s.db",
        *ANALYTIC,
        cwd=tmp_path,
        env={"TF_CPP_MIN_LOG_LEVEL": "0"},  # as a user's shell has it: unset
    )
    assert result.returncode == 0, result.stderr
    noise = re.compile(r"absl|oneDNN|cuda|cuDNN|cuInit|cpu_feature_guard|^[IWEF]\d{4} |rebuild TensorFlow")
    assert [line for line in result.stderr.splitlines() if noise.search(line)] == []
