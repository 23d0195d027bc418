"""The final run: Pix2Pix with the exported best configuration, and the plain U-Net beside it.

read the export -> the study's data, cleaning and split -> train Pix2Pix (checkpoint every epoch) ->
train the plain U-Net with the same config, data, epochs and batch size (--compare) -> evaluate both on
the validation split -> generator.keras, unet.keras, metrics.json, curves and example panels.

Everything that can be wrong with the inputs (config file, data, run folder) is checked before the
first file is written. Adversarial training can help or hurt segmentation, so the comparison is part of
the run: the user sees which model to ship.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console

from marstune.models.settings import SEG_WEIGHT
from marstune.tuning.errors import TuneError
from marstune.tuning.final.files import (
    Checkpoint,
    Export,
    check_new_out,
    check_same_run,
    latest_run,
    make_out,
    read_export,
    run_spec,
    write_json,
)

if TYPE_CHECKING:
    from marstune.tuning.config.spec import Spec
    from marstune.tuning.train.data import Prepared
    from marstune.tuning.train.devices import DeviceSetup
    from marstune.tuning.train.recipe import Recipe

RUNS = Path("runs")
EXAMPLES = 4  # validation images in the example panels


@dataclass(frozen=True)
class FinalOptions:
    config: Path
    epochs: int | None = None  # None: the checkpoint's target on --resume, else the study's train.epochs
    data: str | None = None  # None: the data the study searched on
    out: Path | None = None  # None: runs/<study>-<YYYYmmdd-HHMMSS>/ (or the newest one on --resume)
    resume: bool = False
    compare: bool = True
    batch_size: int | None = None  # None: the config's batch_size, else the study's train.batch_size
    seed: int | None = None
    max_items: int | None = None
    threads: int = 0
    seg_weight: float | None = None  # lambda; None: config["lambda"], else SEG_WEIGHT
    quiet: bool = False
    warm_start: bool = False  # start both models from the best trial's kept model (export's `model`)


@dataclass(frozen=True)
class FinalResult:
    out: Path
    scores: dict[str, float]  # model -> validation mIoU of the saved model
    better: str
    metrics: dict[str, Any] = field(repr=False)
    summary: dict[str, Any] = field(default_factory=dict, repr=False)  # `tune pix2pix --json`


def run_final(opts: FinalOptions, console: Console | None = None) -> FinalResult:
    """Check everything, build what the run trains with, then make the run folder and train.

    Nothing is written until the config, the data, the folder, the loss and the kept model have all been
    accepted, so a refused run leaves no folder that would block the corrected one. An interrupt at any
    moment says what to do next: the exact resume command once the folder exists.
    """
    console = console or _console()
    made: Path | None = None  # the run folder, once this process has made or taken it
    try:
        plan = _plan(opts, console)
        out, epochs = _resolve_out(opts, plan.export.study, plan.spec.train.epochs, plan.settings)
        built = _build(opts, plan, epochs)
        make_out(out, opts.resume)
        made = out
        from marstune.tuning.train.devices import native_noise_filtered

        with native_noise_filtered():  # TensorFlow's native log lines (a grappler "remapper failed")
            return _train(opts, plan, built, out, console)
    except KeyboardInterrupt:
        console.print(_interrupted(opts, made), soft_wrap=True, markup=False, highlight=False)
        raise


def _console() -> Console:
    console = Console(stderr=True, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=True, highlight=False, width=120)  # logs: one line per epoch, no wraps
    return console


@dataclass(frozen=True)
class _Plan:
    """The checked inputs of a run: nothing written, no Keras loaded."""

    export: Export
    spec: Spec
    data: Prepared
    seg_weight: float
    batch_size: int
    settings: dict[str, Any]  # run.json's settings, compared on --resume (files.check_same_run)


@dataclass(frozen=True)
class _Built:
    recipe: Recipe
    setup: DeviceSetup
    initial: list[np.ndarray] | None  # --warm-start: the kept model's weights


def _plan(opts: FinalOptions, console: Console) -> _Plan:
    export = read_export(opts.config)  # checks every key and value of the file (final/checks.py)
    if opts.warm_start and (export.model is None or not export.model.is_file()):
        missing = "names no model" if export.model is None else f"names {export.model}, which is missing"
        raise TuneError(
            f"--warm-start: {opts.config} {missing}; export again with `tune export-best` from a study "
            "that keeps models (search.keep_models > 0), or drop --warm-start"
        )
    if opts.warm_start and export.model is not None and export.model_sha256 is not None:
        from marstune.tuning.study.artifacts import sha256_of

        if sha256_of(export.model) != export.model_sha256:
            raise TuneError(
                f"--warm-start: {export.model} is not the model `tune export-best` wrote beside "
                f"{opts.config} (its sha256 differs: replaced or changed since); export again"
            )
    if opts.out is not None and not opts.resume:
        check_new_out(opts.out)  # a wrong --out is said before minutes of loading data
    lam = opts.seg_weight if opts.seg_weight is not None else float(export.config.get("lambda", SEG_WEIGHT))
    if not (math.isfinite(lam) and lam >= 0):  # the config's was checked with the file: --lambda inf
        raise TuneError(f"--lambda (the segmentation loss weight) must be a number >= 0, got {lam!r}")
    if opts.data is None and export.data_path and not Path(export.data_path).exists():
        raise TuneError(
            f"the study's data {export.data_path} (data.path in {opts.config}) is not found from "
            f"{Path.cwd()}: run this where the study ran, or pass --data PATH"
        )
    spec = run_spec(export, data=opts.data, max_items=opts.max_items, seed=opts.seed)
    from marstune.tuning.train.data import prepare_data

    data = prepare_data(spec)  # loads and validates the data before anything is written
    _say_data(console, export, data, subset=opts.max_items is not None)
    batch = int(opts.batch_size or export.config.get("batch_size") or spec.train.batch_size)
    settings = {
        "study": export.study,
        "trial": export.trial,
        "config": export.config,
        "data_source": data.source,
        "data_fingerprint": data.fingerprint,
        "train_items": len(data.x_train),
        "val_items": len(data.x_val),
        "batch_size": batch,
        "seed": spec.train.seed,
        "lambda": lam,
        "warm_start": str(export.model) if opts.warm_start else None,
        "loss": {k: export.config.get(k, v) for k, v in spec.loss.as_params().items()},
    }
    return _Plan(export, spec, data, lam, batch, settings)


def _build(opts: FinalOptions, plan: _Plan, epochs: int) -> _Built:
    """What the phases train with, built before the run folder exists: a loss or a kept model that
    cannot be built is refused with nothing written."""
    from marstune.tuning.train.devices import configure

    setup = configure(opts.threads or plan.spec.train.threads, plan.spec.train.mixed_precision)
    from marstune.tuning.train.recipe import Recipe, make_loss  # Keras loads here

    recipe = Recipe.of(plan.spec, plan.export.config, setup)
    recipe = dataclasses.replace(recipe, epochs=epochs, batch_size=plan.batch_size)
    make_loss(recipe, plan.data)  # the phases build it again after clearing the session
    model = plan.export.model
    initial = _kept_weights(model, plan.export.config) if opts.warm_start and model is not None else None
    return _Built(recipe, setup, initial)


def _train(opts: FinalOptions, plan: _Plan, built: _Built, out: Path, console: Console) -> FinalResult:
    from marstune.tuning.final.phases import Phase, train_pix2pix, train_unet

    epochs, export = built.recipe.epochs, plan.export
    write_json(out / "run.json", {**plan.settings, "epochs": epochs, "config_file": str(opts.config)})
    console.print(
        f"final run -> {out}: config {export.config} (study {export.study} trial {export.trial}, "
        f"search mIoU {export.value:.4f}); {epochs} epochs, batch {plan.batch_size}, "
        f"lambda {plan.seg_weight:g}, {built.setup.device} {built.setup.precision}"
    )
    recipe, setup = built.recipe, built.setup
    phase = Phase(out, plan.data, plan.spec, export.config, recipe, setup, console, opts.quiet, built.initial)
    results = {"Pix2Pix": train_pix2pix(phase, plan.seg_weight)}
    if opts.compare:
        results["U-Net"] = train_unet(phase)
    return _finish(out, phase, results, plan.settings, console)


def _interrupted(opts: FinalOptions, out: Path | None) -> str:
    """The line an interrupt prints: the resume command once the run is recorded, else "run it again"."""
    if out is None or not (out / "run.json").is_file():
        return "Interrupted before the run started: nothing was trained; run the same command again."
    return (
        f"Interrupted: every finished epoch is checkpointed in {out}; continue with\n"
        f"  {resume_command(opts, out)}"
    )


def resume_command(opts: FinalOptions, out: Path) -> str:
    """`tune pix2pix ... --resume` with this run's flags: those --resume compares with run.json (data,
    subset, seed, batch size, lambda, warm start), and --no-compare, so the same run continues."""
    args = ["tune", "pix2pix", "--config", str(opts.config), "--out", str(out), "--resume"]
    flags = (
        ("--data", opts.data),
        ("--max-items", opts.max_items),
        ("--batch-size", opts.batch_size),
        ("--seed", opts.seed),
        ("--lambda", opts.seg_weight),
    )
    for flag, value in flags:
        if value is not None:
            args += [flag, repr(value) if isinstance(value, float) else str(value)]  # repr: exact lambda
    if opts.warm_start:
        args.append("--warm-start")
    if not opts.compare:
        args.append("--no-compare")
    return shlex.join(args)


def _kept_weights(model: Path, config: dict[str, Any]) -> list[np.ndarray]:
    """The kept model's weights (loaded with safe_mode=True) for both phases' first epoch, checked
    against the U-Net the export's config builds (another configuration's model cannot start it)."""
    from marstune.models.unet import build_unet
    from marstune.tuning.constants import MODEL_KEYS
    from marstune.tuning.train.saved import load_saved_model

    weights = load_saved_model(model, flag="--warm-start model", fix="export it again").get_weights()
    wanted = [w.shape for w in build_unet({k: config[k] for k in MODEL_KEYS}).get_weights()]
    if [w.shape for w in weights] != wanted:
        raise TuneError(
            f"--warm-start: {model} is a model of another configuration ({len(weights)} weight arrays, "
            f"the export's config builds {len(wanted)} of other shapes); export again with `tune export-best`"
        )
    return list(weights)


def _say_data(console: Console, export: Export, data: Prepared, *, subset: bool) -> None:
    """Say which data trains; `subset` (--max-items): its fingerprint is the subset's, not a sign of
    other data."""
    if data.synthetic:
        console.print(
            f"[bold yellow]NO DATA SET GIVEN: using the built-in SYNTHETIC Mars terrain "
            f"({len(data.x_train) + len(data.x_val)} pairs); pass --data FILE.npz for real data.[/]"
        )
    elif not subset and export.fingerprint not in (None, "none", data.fingerprint):
        console.print(
            f"[yellow]note: the data differs from the study's (fingerprint {data.fingerprint}, the study "
            f"searched on {export.fingerprint})[/]"
        )
    console.print(
        f"data: {data.source}; {len(data.x_train)} train / {len(data.x_val)} validation pairs; "
        f"{data.removed} contaminated pairs removed"
    )


def _resolve_out(
    opts: FinalOptions, study: str, default_epochs: int, settings: dict[str, Any]
) -> tuple[Path, int]:
    """The run folder and the target epochs; refuses to mix runs. Writes nothing (see _make_out)."""
    if opts.resume:
        out = opts.out or latest_run(RUNS, study)
        if out is None:
            raise TuneError(f"--resume: no run of study {study!r} under {RUNS}/ to continue; pass --out DIR")
        if not (out / "run.json").is_file():
            raise TuneError(
                f"--resume: {out} holds no run to continue (no run.json); drop --resume to start one"
            )
        stored = check_same_run(out, settings)
        epochs = opts.epochs or int(stored.get("epochs", default_epochs))
        done = Checkpoint(out, "pix2pix").state()["epoch"]
        if epochs < done:
            raise TuneError(f"--resume: {out} already trained {done} epochs; pass --epochs {done} or more")
        return out, epochs
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = opts.out or RUNS / f"{study}-{stamp}"
    check_new_out(out)
    return out, opts.epochs or default_epochs


def _finish(
    out: Path, phase: Any, results: dict[str, Any], settings: dict[str, Any], console: Console
) -> FinalResult:
    from marstune.tuning.constants import per_class_dict
    from marstune.tuning.final import figures
    from marstune.tuning.final.phases import evaluate_labels

    data = phase.data
    scores: dict[str, float] = {}
    report: dict[str, Any] = {
        "run": {**settings, "epochs": phase.recipe.epochs, "device": phase.setup.device}
    }
    for name, result in results.items():
        score, per_class = evaluate_labels(data.y_val, result.val_labels)
        scores[name] = score
        report[result.key] = {
            "file": result.file,
            "val_miou": score,
            "val_per_class_iou": per_class_dict(per_class),
            "train_seconds": round(result.seconds, 2),
            "epochs": result.history,
        }
    better = max(scores, key=lambda k: (scores[k], k == "Pix2Pix"))  # a tie ships the search's own model
    report["better"] = better
    report["ship"] = results[better].file
    write_json(out / "metrics.json", report)
    figures.loss_curves(results["Pix2Pix"].history, out / "loss_curves.png")
    figures.miou_curves({k: r.history for k, r in results.items()}, out / "miou_curves.png")
    k = min(EXAMPLES, len(data.x_val))
    figures.example_panels(
        data.x_val[:k],
        data.y_val[:k],
        {n: r.val_labels[:k] for n, r in results.items()},
        out / "examples.png",
    )
    _print_table(console, report, results, better)
    return FinalResult(out, scores, better, report, _summary(out, report, results, better))


def _summary(out: Path, report: dict[str, Any], results: dict[str, Any], better: str) -> dict[str, Any]:
    """What a script reads from `tune pix2pix --json`: the run folder, each saved model's validation mIoU
    and per-class IoU, the better one and the file to ship (paths as the user would open them)."""
    entries = {name: report[result.key] for name, result in results.items()}
    return {
        "run": str(out),
        "epochs": report["run"]["epochs"],
        "scores": {name: entry["val_miou"] for name, entry in entries.items()},
        "better": better,
        "ship": str(out / report["ship"]),
        "per_class_iou": {name: entry["val_per_class_iou"] for name, entry in entries.items()},
        "files": {name: str(out / entry["file"]) for name, entry in entries.items()},
        "metrics": str(out / "metrics.json"),
    }


def _print_table(console: Console, report: dict[str, Any], results: dict[str, Any], better: str) -> None:
    from rich.table import Table

    table = Table(title="validation mIoU (classes 1..4) of the saved models", title_justify="left")
    for column in ("model", "val mIoU", "soil", "bedrock", "sand", "big rock", "file"):
        table.add_column(column, justify="left" if column in ("model", "file") else "right", no_wrap=True)
    for name, result in results.items():
        entry = report[result.key]
        ious = entry["val_per_class_iou"]
        cells = [
            "-" if ious[c] is None else f"{ious[c]:.3f}" for c in ("soil", "bedrock", "sand", "big_rock")
        ]
        marked = name == better and len(results) > 1
        style = "bold green" if marked else None
        label = f"{name} (better)" if marked else name
        table.add_row(label, f"{entry['val_miou']:.4f}", *cells, result.file, style=style)
    console.print(table)
