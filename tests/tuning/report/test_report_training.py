"""Real U-Net trials (tiny synthetic data, 1 epoch): what the dashboard shows of a trial, TensorBoard
logs per trial, and the report's per-class IoU and example predictions (a real quick retraining)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import optuna
import pytest

from marstune.tuning.config.spec import spec_from_stored
from marstune.tuning.study.lifecycle import stored_spec_raw
from marstune.tuning.study.storage import open_storage
from marstune.tuning.study.trial_attrs import EPOCH_LOG_ATTR, per_class_iou, trial_config
from tests.conftest import SMALL_UNETS, run_tune

TINY = (
    "--set", "train.max_items=24", "--set", "data.synthetic_items=24", "--set", "train.batch_size=8",
    "--set", "train.threads=1", "--epochs", "1", "--pruner", "none", "-q", *SMALL_UNETS,
)  # fmt: skip


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real trials with --tensorboard, in a fresh folder (the default storage under studies/)."""
    cwd = tmp_path_factory.mktemp("real")
    result = run_tune(
        "run", "--study", "real", "--sampler", "random", "--trials", "2", "--tensorboard", *TINY, cwd=cwd
    )
    assert result.returncode == 0, result.stderr
    return cwd


def test_trials_carry_what_the_dashboard_shows(study_dir: Path) -> None:
    study = optuna.load_study(
        study_name="real", storage=open_storage(f"sqlite:///{study_dir}/studies/tune.db")
    )
    spec = stored_spec_raw(study._storage, study._study_id)  # a system attribute (not flooding user attrs)
    assert spec is not None and spec["study"] == "real" and spec["train"]["epochs"] == 1
    assert study.user_attrs["data_source"].startswith("synthetic")
    for trial in study.get_trials():
        assert trial.state == optuna.trial.TrialState.COMPLETE and 0.0 <= trial.value <= 1.0
        searched = {"base_filters", "levels", "kernel", "dropout", "activation"}
        assert set(trial.params) == searched | {"loss", "class_weight_exponent", "focal_gamma"}
        assert list(trial.intermediate_values) == [0]  # one epoch, one learning-curve point
        attrs = trial.user_attrs
        assert trial_config(trial.system_attrs, attrs) == {
            **spec["baseline"],
            **spec_from_stored(spec).loss.as_params(),
            **trial.params,
        }
        assert attrs["epochs_run"] == 1 and attrs["device"] == "cpu" and attrs["engine"] == "optuna"
        assert attrs["wall_seconds"] >= attrs["train_seconds"] > 0
        per_class = per_class_iou(attrs)  # short attributes iou_<class>, not one wide dict
        assert attrs["iou_soil"] == per_class["soil"] and "per_class_iou" not in attrs  # type: ignore[index]
        assert "epoch_log" not in attrs and len(trial.system_attrs[EPOCH_LOG_ATTR]) == 1
        assert set(per_class) == {"background", "soil", "bedrock", "sand", "big_rock"}
        assert all(v is None or 0.0 <= v <= 1.0 for v in per_class.values())


def test_tensorboard_logs_each_trial_under_the_study_folder(study_dir: Path) -> None:
    root = study_dir / "studies" / "real" / "tensorboard"
    assert sorted(p.name for p in root.iterdir()) == ["trial-0", "trial-1"]
    for trial in ("trial-0", "trial-1"):
        for split in ("train", "validation"):
            events = list((root / trial / split).glob("events.out.tfevents.*"))
            assert len(events) == 1, (trial, split)
            data = events[0].read_bytes()
            assert b"epoch_loss" in data and b"epoch_miou" in data  # the scalars TensorBoard plots


def test_report_shows_per_class_iou_and_example_predictions(study_dir: Path) -> None:
    result = run_tune(
        "report",
        "--study",
        "real",
        "--example-epochs",
        "1",
        "--example-items",
        "24",
        "--threads",
        "1",
        cwd=study_dir,
    )
    assert result.returncode == 0, result.stderr
    out = study_dir / "studies" / "real" / "report.html"
    text = out.read_text()
    assert '<div id="plot-per-class-iou"' in text and "Per-class IoU of the best trial" in text
    image = re.search(r'<img id="plot-example-predictions" alt="[^"]*" src="data:image/png;base64,', text)
    assert image is not None  # embedded, so the file stays self-contained
    assert "own model (its best epoch, kept by the search)" in text  # not a retrain
    # the trial's own weights on the trial's own held-out split: the trial's value again
    quick = float(re.search(r"on the held-out images of [^:]+: mIoU (\d\.\d+)", text).group(1))
    study = optuna.load_study(
        study_name="real", storage=open_storage(f"sqlite:///{study_dir}/studies/tune.db")
    )
    assert quick == pytest.approx(study.best_value, abs=0.02), (quick, study.best_value)
    assert '<div id="plot-param-importances"' in text  # 2 complete trials with different params
    assert "training seconds (cumulative)" in text  # real trials record training time: the compute axis
    import matplotlib.image

    for key in ("per-class-iou", "example-predictions"):
        png = out.parent / f"report-{key}.png"
        pixels = matplotlib.image.imread(png)[..., :3]
        assert png.stat().st_size > 20_000 and pixels.mean(axis=-1).std() > 0.1, key
    panels = matplotlib.image.imread(out.parent / "report-example-predictions.png")
    assert panels.shape[1] > 1000 and panels.shape[0] > 400  # 3 columns, a row per held-out image
    assert np.unique((panels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0).shape[0] > 100
