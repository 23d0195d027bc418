"""The final run through the real CLI: run -> export-best -> pix2pix -> predict, resume, and refusals."""

from __future__ import annotations

import io
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from marstune.data.mars import save_npz
from marstune.data.synthetic import generate
from marstune.tuning.errors import DataError, ModelError, SpecError
from marstune.tuning.final.files import latest_run, read_export
from tests.conftest import run_tune, tune_in_process

LOSSES = ("d_loss", "g_loss", "seg_loss", "adv_loss")
# A one-point space with a tiny U-Net: the search is the analytic stand-in, the final run trains for real.
TINY_SPEC = {
    "space": {
        "base_filters": {"type": "categorical", "choices": [8]},
        "levels": {"type": "int", "low": 2, "high": 2},
        "kernel": {"type": "categorical", "choices": [3]},
        "dropout": {"type": "categorical", "choices": [0.0]},
        "activation": {"type": "categorical", "choices": ["relu"]},
    },
    "baseline": {"base_filters": 8, "levels": 2, "kernel": 3, "dropout": 0.0, "activation": "relu"},
    "train": {"batch_size": 8, "threads": 1, "val_fraction": 0.25},
    "data": {"synthetic_items": 24},
}
SEED_LOSS = {"loss": "crossentropy", "class_weight_exponent": 0.5, "focal_gamma": 2.0}  # baseline fill


def _ok(result) -> str:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    lines = result.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def _refused(result, *needles: str) -> str:
    assert result.returncode == 1, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real study (analytic objective) and its real export, made with the CLI as a user would (in this
    process: `tune_in_process` runs the same `main`)."""
    cwd = tmp_path_factory.mktemp("study")
    (cwd / "tiny.yaml").write_text(yaml.safe_dump(TINY_SPEC))
    url = f"sqlite:///{cwd / 'tune.db'}"
    _ok(
        tune_in_process(
            "run",
            "--spec",
            "tiny.yaml",
            "--set",
            "objective.kind=analytic",
            "--trials",
            "1",  # the one point of the space (more is refused: it could never be reached)
            "--study",
            "x",
            "--storage",
            url,
            "-q",
            cwd=cwd,
        )
    )
    path = Path(
        _ok(tune_in_process("export-best", "--study", "x", "--storage", url, "--out", "x.best.yaml", cwd=cwd))
    )
    return cwd / path


def test_end_to_end_run_export_pix2pix_predict(exported: Path) -> None:
    cwd = exported.parent
    final = run_tune(
        "pix2pix",
        "--config",
        exported.name,
        "--epochs",
        "1",
        "--max-items",
        "24",
        "--out",
        "runs/final",
        cwd=cwd,
    )
    out = Path(_ok(final))
    run = cwd / out
    assert out == Path("runs/final")
    # One progress line per epoch and model, the kind `tune run` prints (test_epoch_progress.py).
    for label in ("pix2pix", "u-net"):
        (line,) = [ln for ln in final.stderr.splitlines() if ln.startswith(f"  {label} epoch 1/1  ")]
        assert "val mIoU 0." in line and "  elapsed " in line and line.endswith("ETA 0m00s"), line
    assert "\r" not in final.stderr  # no live bar redrawn in a log
    for name in (
        "generator.keras",
        "unet.keras",
        "metrics.json",
        "loss_curves.png",
        "miou_curves.png",
        "examples.png",
    ):
        assert (run / name).stat().st_size > 0, name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["run"]["config"] == {**SEED_LOSS, **TINY_SPEC["baseline"]}
    assert metrics["run"]["data_source"].startswith("synthetic(n=24")  # the study's data: synthetic
    (epoch,) = metrics["pix2pix"]["epochs"]
    assert epoch["epoch"] == 1 and all(
        math.isfinite(epoch[k]) and math.isfinite(epoch[f"val_{k}"]) for k in LOSSES
    )
    for model in ("pix2pix", "unet"):
        assert 0.0 <= metrics[model]["val_miou"] <= 1.0
        assert set(metrics[model]["val_per_class_iou"]) == {
            "background",
            "soil",
            "bedrock",
            "sand",
            "big_rock",
        }
    assert metrics["better"] in ("Pix2Pix", "U-Net") and metrics["ship"] in ("generator.keras", "unet.keras")

    test = generate(n_train=4, n_test=10, seed=5)
    save_npz(cwd / "test.npz", test.training_set, test.test_set)
    result = run_tune(
        "predict",
        "--model",
        str(out / "generator.keras"),
        "--data",
        "test.npz",
        "--out",
        "sub.csv",
        "--png",
        "pred",
        "--batch-size",
        "4",
        cwd=cwd,
    )
    assert _ok(result) == "sub.csv" and "images/s" in result.stderr
    lines = (cwd / "sub.csv").read_text().splitlines()
    assert lines[0] == "id," + ",".join(str(i) for i in range(64 * 128))
    rows = np.array([[int(v) for v in line.split(",")] for line in lines[1:]])
    assert rows.shape == (10, 1 + 64 * 128)
    assert rows[:, 0].tolist() == list(range(10)) and rows[:, 1:].min() >= 0 and rows[:, 1:].max() <= 4
    assert len(list((cwd / "pred").glob("*.png"))) == 10

    import keras

    generator = keras.saving.load_model(run / "generator.keras", safe_mode=True)
    probs = generator.predict(test.test_set[..., None].astype("float32") / 255, verbose=0)
    assert probs.shape == (10, 64, 128, 5)
    np.testing.assert_array_equal(rows[:, 1:], probs.argmax(-1).reshape(10, -1))  # row-major, same order


def test_resume_continues_epochs_and_optimizer_state(exported: Path) -> None:
    cwd = exported.parent
    args = ("pix2pix", "--config", exported.name, "--max-items", "24", "--out", "runs/resumed", "-q")
    _ok(run_tune(*args, "--epochs", "1", cwd=cwd))
    run = cwd / "runs" / "resumed"
    first = json.loads((run / "metrics.json").read_text())
    _refused(run_tune(*args, "--epochs", "2", cwd=cwd), "already holds a run", "--resume")
    _refused(run_tune(*args, "--epochs", "2", "--resume", "--batch-size", "4", cwd=cwd), "batch_size")

    resumed = run_tune(*args, "--epochs", "2", "--resume", "--json", cwd=cwd)
    _ok(resumed)
    metrics = json.loads((run / "metrics.json").read_text())
    # --json: one object on stdout with what a script needs, the same numbers as metrics.json.
    shown = json.loads(resumed.stdout)
    assert shown["run"] == "runs/resumed" and shown["epochs"] == 2
    assert shown["scores"] == {
        "Pix2Pix": metrics["pix2pix"]["val_miou"],
        "U-Net": metrics["unet"]["val_miou"],
    }
    assert shown["per_class_iou"]["U-Net"] == metrics["unet"]["val_per_class_iou"]
    assert shown["better"] == metrics["better"] and shown["ship"] == f"runs/resumed/{metrics['ship']}"
    assert all((cwd / path).is_file() for path in (*shown["files"].values(), shown["metrics"]))
    assert "epoch 2/2" not in resumed.stderr  # -q: no progress lines
    steps = math.ceil(metrics["run"]["train_items"] / 8)
    for model in ("pix2pix", "unet"):
        history = metrics[model]["epochs"]
        assert [h["epoch"] for h in history] == [1, 2]
        assert history[0] == first[model]["epochs"][0]  # the first epoch is kept, not re-run
        # The optimizers' step counters continue from the checkpoint instead of restarting at 0.
        assert [h["optimizer_steps"] for h in history] == [steps, 2 * steps]
    state = json.loads((run / "checkpoint" / "pix2pix" / "state.json").read_text())
    assert state["epoch"] == 2
    _refused(run_tune(*args, "--epochs", "1", "--resume", cwd=cwd), "already trained 2 epochs")


def test_wrong_config_files_are_refused(exported: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(TINY_SPEC))
    with pytest.raises(SpecError, match="not a best-config export.*study spec"):
        read_export(spec)
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text(exported.read_text() + "evil: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(SpecError, match="not plain YAML"):
        read_export(tagged)
    assert not (tmp_path / "pwned").exists()
    bad = yaml.safe_load(exported.read_text())
    bad["config"]["levels"] = 9
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(bad))
    with pytest.raises(ModelError, match="levels"):
        read_export(broken)
    assert read_export(exported).config == {**SEED_LOSS, **TINY_SPEC["baseline"]}
    # Through the CLI: one line, exit 1, and no run folder made.
    _refused(run_tune("pix2pix", "--config", str(spec), cwd=tmp_path), "tune export-best")
    _refused(run_tune("pix2pix", "--config", "missing.yaml", cwd=tmp_path), "does not exist")
    _refused(run_tune("pix2pix", "--config", str(exported), "--resume", cwd=tmp_path), "no run of study 'x'")
    assert not (tmp_path / "runs").exists()


def test_predict_json_tells_scripts_the_csv_and_the_rate(tmp_path: Path) -> None:
    import keras

    image = keras.Input((64, 128, 1))
    keras.Model(image, keras.layers.Conv2D(5, 1, activation="softmax")(image)).save(tmp_path / "m.keras")
    np.save(tmp_path / "test.npy", np.random.default_rng(0).uniform(0, 255, (6, 64, 128)))
    args = ("predict", "--model", "m.keras", "--data", "test.npy", "--out", "s.csv", "--batch-size", "4")
    result = run_tune(*args, "--json", cwd=tmp_path)
    shown = json.loads(result.stdout)  # the whole of stdout is one JSON object
    assert result.returncode == 0, result.stderr
    assert shown["csv"] == "s.csv" and shown["model"] == "m.keras" and shown["overlays"] is None
    assert shown["images"] == 6 and shown["batch_size"] == 4 and shown["images_per_second"] > 0
    assert shown["seconds"] > 0 and shown["cpu_seconds"] >= 0 and shown["device"].startswith(("cpu", "gpu:"))
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 7
    assert "images/s" in result.stderr  # the person's line stays on stderr


def test_resume_without_out_picks_the_newest_run_of_the_study(tmp_path: Path) -> None:
    for name in ("x-20260101-000000", "x-20260102-000000", "x-b-20260103-000000", "x-20260104-000000"):
        (tmp_path / name).mkdir()
        if name != "x-20260104-000000":  # no run.json: not a run
            (tmp_path / name / "run.json").write_text("{}")
    assert latest_run(tmp_path, "x") == tmp_path / "x-20260102-000000"
    assert latest_run(tmp_path, "y") is None


def test_predict_refuses_unsafe_models_and_wrong_inputs(tmp_path: Path) -> None:
    import keras

    from marstune.tuning.final.predict import load_images, load_model

    image = keras.Input((64, 128, 1))
    scaled = keras.layers.Lambda(lambda t: t * 2.0)(image)  # Python code inside the model file
    lam = keras.Model(image, keras.layers.Conv2D(5, 1, activation="softmax")(scaled))
    lam.save(tmp_path / "lambda.keras")
    with pytest.raises(ModelError, match="Lambda layer.*safe_mode=True"):
        load_model(tmp_path / "lambda.keras")
    lam.save_weights(tmp_path / "model.weights.h5")
    with pytest.raises(ModelError, match="not a .keras file"):
        load_model(tmp_path / "model.weights.h5")
    (tmp_path / "fake.keras").write_text("not a zip")
    with pytest.raises(ModelError, match="not a Keras archive"):
        load_model(tmp_path / "fake.keras")
    wrong = keras.Model(image, keras.layers.Conv2D(5, 1)(keras.layers.MaxPooling2D(2)(image)))
    wrong.save(tmp_path / "wrong.keras")
    with pytest.raises(ModelError, match=r"expected \(None, 64, 128, 1\)"):
        load_model(tmp_path / "wrong.keras")

    np.save(tmp_path / "pairs.npy", np.zeros((3, 2, 64, 128)))
    with pytest.raises(DataError, match=r"\(3, 2, 64, 128\)"):
        load_images(tmp_path / "pairs.npy")
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 64, 128)), b=np.zeros((2, 64, 128)))
    with pytest.raises(DataError, match="no test_set"):
        load_images(tmp_path / "two.npz")
    np.save(tmp_path / "objects.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="cannot be read"):
        load_images(tmp_path / "objects.npy")
    np.save(tmp_path / "ok.npy", np.full((2, 64, 128), 7.0))
    assert load_images(tmp_path / "ok.npy").shape == (2, 64, 128)
    # The CLI checks the input before loading TensorFlow and writes nothing.
    _refused(
        run_tune("predict", "--model", "lambda.keras", "--data", "pairs.npy", "--out", "s.csv", cwd=tmp_path),
        "(3, 2, 64, 128)",
    )
    assert not (tmp_path / "s.csv").exists()


def test_the_default_lambda_is_the_seed_reports_and_loads_no_keras() -> None:
    code = "import sys; from marstune.tuning.final import run; print(run.SEG_WEIGHT, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["100.0", "False"]  # the seed report: G 2.85 = Adv 1.02 + lambda x Seg 0.018


def test_submission_csv_format(tmp_path: Path) -> None:
    from marstune.tuning.final.predict import write_submission

    labels = np.random.default_rng(0).integers(0, 5, (3, 64, 128)).astype(np.uint8)
    write_submission(tmp_path / "s.csv", labels)
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert len(lines) == 4 and lines[0].startswith("id,0,1,2,") and lines[0].endswith(",8191")
    for i, line in enumerate(lines[1:]):
        values = [int(v) for v in line.split(",")]
        assert values[0] == i and values[1:] == labels[i].ravel().tolist()
    wide = np.full((1, 64, 128), 12, dtype=np.uint8)  # more than 10 classes: the savetxt path
    write_submission(tmp_path / "w.csv", wide)
    assert (tmp_path / "w.csv").read_text().splitlines()[1] == "0," + ",".join(["12"] * 8192)


def test_checkpoints_swap_whole_and_skip_nan_epochs(tmp_path: Path) -> None:
    import keras

    from marstune.tuning.final.callbacks import EpochCheckpoint
    from marstune.tuning.final.files import Checkpoint

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    ck = Checkpoint(tmp_path, "m")
    assert ck.state() == {"epoch": 0, "history": []}
    history: list[dict] = []
    cb = EpochCheckpoint(ck, history, lambda folder: (folder / "weights").write_text("w"))
    cb.set_model(model)
    for epoch in (0, 1):
        cb.on_epoch_begin(epoch)
        cb.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
    assert ck.state()["epoch"] == 2 and [h["loss"] for h in ck.state()["history"]] == [1.0, 0.5]
    assert (ck.dir / "weights").read_text() == "w" and sorted(p.name for p in ck.dir.parent.iterdir()) == [
        "m"
    ]
    cb.on_epoch_begin(2)
    cb.on_epoch_end(2, {"loss": float("nan")})
    assert cb.failed_at == 3 and model.stop_training
    assert ck.state()["epoch"] == 2 and len(history) == 2  # the NaN epoch is neither saved nor logged
    ck.dir.rename(ck.dir.with_name("m.old"))  # a swap interrupted between its two renames
    assert ck.state()["epoch"] == 2


def test_a_taken_out_folder_is_refused_before_the_data_is_read(exported: Path) -> None:
    cwd = exported.parent
    taken = cwd / "taken"
    taken.mkdir(exist_ok=True)
    (taken / "notes.txt").write_text("mine")
    # --data names a file that does not exist: the --out line comes first, and nothing is touched.
    result = run_tune("pix2pix", "--config", exported.name, "--out", "taken", "--data", "absent.npz", cwd=cwd)
    _refused(result, "--out taken exists and is not an empty folder")
    under_a_file = ("--out", "taken/notes.txt/run", "--data", "absent.npz")
    refused = run_tune("pix2pix", "--config", exported.name, *under_a_file, cwd=cwd)
    _refused(refused, "is a file, not a folder")
    for out, message in (("-", "give a folder name"), ("/proc/run", "nothing can be created in /proc")):
        _refused(run_tune("pix2pix", "--config", exported.name, "--out", out, cwd=cwd), message)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"] and not (cwd / "-").exists()


def test_a_folder_another_pix2pix_is_writing_is_refused(exported: Path) -> None:
    import fcntl
    import os

    cwd = exported.parent
    busy = cwd / "busy"
    busy.mkdir(exist_ok=True)  # empty: it passes every other check, as it did for both of two terminals
    fd = os.open(busy, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a running `tune pix2pix --out busy` holds
    try:
        result = run_tune("pix2pix", "--config", exported.name, "--out", "busy", "--max-items", "24", cwd=cwd)
    finally:
        os.close(fd)
    _refused(result, "busy is in use by another `tune pix2pix`")
    assert list(busy.iterdir()) == []


# Bad values and unknown keys in an export (edited by hand, or a typo): one line naming the key, the file
# and the allowed values or keys, exit 1, and no run folder, which would block the corrected run.
BAD_EXPORTS = {
    "nan-gamma": ({"focal_gamma": math.nan}, {}, ("`config.focal_gamma`", "finite number >= 0")),
    "inf-exponent": ({"class_weight_exponent": math.inf}, {}, ("`config.class_weight_exponent`", "inf")),
    "text-gamma": ({"focal_gamma": "abc"}, {}, ("`config.focal_gamma`", "'abc'")),
    "text-lambda": ({"lambda": "abc"}, {}, ("`config.lambda`", "'abc'")),
    "unknown-loss": ({"loss": "bogus"}, {}, ("`config.loss` must be one of crossentropy", "'bogus'")),
    "negative-exponent": ({"class_weight_exponent": -1}, {}, ("`config.class_weight_exponent`", "-1")),
    "loss-list": ({"loss": ["focal"]}, {}, ("`config.loss`", "['focal']")),
    "unknown-config-key": ({"lossy": 1}, {}, ("`lossy` under `config:`", "allowed there: ", "lambda")),
    "top-level-typo": ({}, {"lamda": 5}, ("`lamda` at the top level", "did you mean `config.lambda`?")),
    "nan-value": ({}, {"value": math.nan}, ("`value` (an mIoU) must be in [0, 1]", "nan")),
    "text-value": ({}, {"value": "high"}, ("`value` (an mIoU) must be in [0, 1]", "'high'")),
    "value-above-one": ({}, {"value": 1.7}, ("`value` (an mIoU) must be in [0, 1]", "1.7")),
    "params-not-config": ({"loss": "dice_crossentropy"}, {"params": {"loss": "focal"}}, ("config.loss =",)),
    "unknown-param": ({}, {"params": {"lamda": 3}}, ("`lamda` under `params:`", "allowed there: ")),
    "nan-param": ({}, {"params": {"focal_gamma": math.nan}}, ("`params.focal_gamma`", "nan")),
    "params-list": ({}, {"params": [1]}, ("`params` must be a mapping", "[1]")),
    "nan-class-iou": ({}, {"per_class_iou": {"soil": math.nan}}, ("`per_class_iou.soil`", "[0, 1]", "nan")),
    "class-iou-above-one": ({}, {"per_class_iou": {"sand": 1.5}}, ("`per_class_iou.sand`", "1.5")),
    "unknown-class": ({}, {"per_class_iou": {"rocks": 0.5}}, ("`rocks` under `per_class_iou:`", "big_rock")),
    "class-iou-list": ({}, {"per_class_iou": [0.5]}, ("`per_class_iou` must be a mapping", "[0.5]")),
    "data-not-here": ({}, {"data": {"path": "away/d.npz"}}, ("data.path in bad.yaml", "pass --data PATH")),
}


@pytest.mark.parametrize(("config", "top", "needles"), BAD_EXPORTS.values(), ids=list(BAD_EXPORTS))
def test_bad_export_values_and_unknown_keys_are_refused_before_the_run_folder(
    exported: Path, tmp_path: Path, config: dict, top: dict, needles: tuple[str, ...]
) -> None:
    raw = yaml.safe_load(exported.read_text())
    raw["config"].update(config)
    raw.update(top)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    smoke = ("--epochs", "1", "--max-items", "24", "--no-compare", "--out", "runs/b1")
    result = tune_in_process("pix2pix", "--config", "bad.yaml", *smoke, cwd=tmp_path)
    _refused(result, "bad.yaml", *needles)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # the corrected run may use the same --out


def test_an_interrupt_before_training_says_so_and_leaves_no_folder(exported: Path, tmp_path: Path) -> None:
    """Ctrl-C while TensorFlow starts (seconds, after the data loaded) used to exit 130 silently, leaving
    a folder; now every interrupt prints what to do next."""
    from rich.console import Console

    from marstune.tuning.final.run import FinalOptions, run_final
    from marstune.tuning.train import devices

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    shown = io.StringIO()
    opts = FinalOptions(config=exported, out=tmp_path / "int", epochs=1, max_items=24, compare=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(devices, "configure", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_final(opts, Console(file=shown, width=200))
    assert "Interrupted before the run started: nothing was trained; run the same command again" in (
        shown.getvalue()
    )
    assert not (tmp_path / "int").exists()


def test_an_interrupt_prints_a_resume_command_that_resumes(exported: Path) -> None:
    """The hint repeats the flags --resume compares with run.json, so it can be pasted as it is."""
    cwd = exported.parent
    flags = ("--epochs", "2", "--max-items", "24", "--no-compare", "--seed", "3", "-q")
    started = subprocess.Popen(
        [sys.executable, "-m", "marstune.tuning", "pix2pix", "--config", exported.name, "--out", "runs/int"]
        + list(flags),
        cwd=cwd,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while started.poll() is None and not (cwd / "runs/int/run.json").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    started.send_signal(signal.SIGINT)  # the run is recorded; training is starting
    _, stderr = started.communicate(timeout=300)
    assert started.returncode == 130, stderr
    assert "every finished epoch is checkpointed in runs/int; continue with" in stderr
    (hint,) = [line.strip() for line in stderr.splitlines() if line.startswith("  tune pix2pix ")]
    assert "--max-items 24" in hint and "--seed 3" in hint and "--no-compare" in hint, hint
    command = shlex.split(hint)
    assert command[:2] == ["tune", "pix2pix"] and "--resume" in command
    _ok(run_tune(*command[1:], cwd=cwd))
    metrics = json.loads((cwd / "runs/int/metrics.json").read_text())
    assert [h["epoch"] for h in metrics["pix2pix"]["epochs"]] == [1, 2] and "unet" not in metrics


def test_an_export_that_gives_a_key_twice_is_refused(exported: Path, tmp_path: Path) -> None:
    from marstune.tuning.final.files import read_export

    twice = tmp_path / "twice.yaml"  # a hand edit that appends a second `config:` (the last would win)
    twice.write_text(exported.read_text() + "config: {loss: focal}\n")
    with pytest.raises(SpecError, match=r"`config` is given twice; keep one"):
        read_export(twice)
