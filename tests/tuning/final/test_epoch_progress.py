"""`tune pix2pix` prints the same kind of line per epoch as `tune run`, from epoch hooks only."""

from __future__ import annotations

import io
import re

import keras
import numpy as np
import pytest
from rich.console import Console

from marstune.tuning.final import callbacks
from marstune.tuning.final.callbacks import EpochProgress
from marstune.tuning.search.progress import Progress

# label, epoch k/N, "name value" fields, elapsed, ETA: the line both commands print.
LINE = re.compile(
    r"^  (?P<label>.+?) epoch (?P<k>\d+)/(?P<n>\d+)  (?P<fields>.+)  elapsed (\d+m\d\ds)  ETA (?P<eta>\S+)$"
)
KEYS = ("d_loss", "g_loss", "seg_loss", "adv_loss")


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=80, highlight=False), out


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _epochs(cb: keras.callbacks.Callback, clock: _Clock, epochs: range, seconds: float = 10.0) -> None:
    cb.on_train_begin()
    for epoch in epochs:
        cb.on_epoch_begin(epoch)
        clock.now += seconds
        logs = {"d_loss": 1.5, "g_loss": 3.25, "seg_loss": 0.02125, "adv_loss": 0.75, "val_miou": 0.4}
        cb.on_epoch_end(epoch, {**logs, "val_d_loss": 9.0})


def test_one_line_per_epoch_with_losses_val_miou_elapsed_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(callbacks.time, "monotonic", clock)
    console, out = _console()
    _epochs(EpochProgress(console, "pix2pix", 3, KEYS), clock, range(3))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m["label"], m["k"], m["n"]) for m in parsed] == [("pix2pix", str(k), "3") for k in (1, 2, 3)]
    assert parsed[0]["fields"] == "d_loss 1.5  g_loss 3.25  seg_loss 0.02125  adv_loss 0.75  val mIoU 0.4000"
    assert "val_d_loss" not in out.getvalue()  # the training losses, not every log key
    assert [m["eta"] for m in parsed] == ["0m20s", "0m10s", "0m00s"]  # 10 s an epoch
    assert lines[1].split("  elapsed ")[1].startswith("0m20s")


def test_a_resumed_run_counts_and_times_only_its_own_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(callbacks.time, "monotonic", clock)
    console, out = _console()
    _epochs(EpochProgress(console, "u-net", 5, ("loss", "miou")), clock, range(3, 5), seconds=30.0)
    parsed = [LINE.match(line) for line in out.getvalue().splitlines()]
    assert [(m["k"], m["eta"]) for m in parsed] == [("4", "0m30s"), ("5", "0m00s")]


def test_quiet_prints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(callbacks.time, "monotonic", clock)
    console, out = _console()
    _epochs(EpochProgress(console, "pix2pix", 2, KEYS, quiet=True), clock, range(2))
    assert out.getvalue() == ""


def test_the_search_prints_the_same_kind_of_line() -> None:
    progress = Progress("s", 4, epochs=3)
    out = io.StringIO()
    progress.console = Console(file=out, width=120, highlight=False)
    progress.trial_started(7, 0, {"levels": 3}, None)
    progress.epoch(7, 0, 0.25)
    line = out.getvalue().splitlines()[-1]
    match = LINE.match(line)
    assert match, line
    # an ETA from the first epoch on (epochs left at the pace so far), not "?" for the whole first trial
    assert (match["label"], match["k"], match["n"]) == ("trial 7", "1", "3")
    assert re.fullmatch(r"\d+m\d\ds", match["eta"]), match["eta"]
    assert match["fields"] == "val mIoU 0.2500  best so far 0.2500"


def test_no_per_batch_hook_so_keras_keeps_batch_logs_on_the_device() -> None:
    """Keras dispatches batches asynchronously only while no callback overrides a batch hook."""
    base = keras.callbacks.Callback
    for hook in ("on_batch_end", "on_train_batch_begin", "on_train_batch_end", "on_test_batch_end"):
        assert getattr(EpochProgress, hook) is getattr(base, hook), hook


def test_it_runs_inside_a_real_fit() -> None:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    console, out = _console()
    x = np.zeros((8, 2), dtype="float32")
    model.fit(x, x[:, :1], epochs=2, verbose=0, callbacks=[EpochProgress(console, "tiny", 2, ("loss",))])
    lines = out.getvalue().splitlines()
    assert [LINE.match(line)["k"] for line in lines] == ["1", "2"], lines  # type: ignore[index]
    assert all("loss 0" in line for line in lines)
