"""`tune predict`: segment test images with a saved model and write the submission CSV."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from marstune.tuning.cli.options import JsonOpt, StorageOpt, complete_study, handle_errors, stderr

HELP = (
    "Segment test images with a saved model and write the submission CSV.\n\n"
    "The CSV has the header id,0,1,...,8191, then one row per image (its index and the predicted mask "
    "flattened row-major). Prints images per second; --json prints the CSV path, the image count and "
    "the rate as one JSON object on stdout.\n\n"
    "--data is the challenge .npz (its test_set is used), an .npz holding one (N, 64, 128) array, or a "
    ".npy of shape (N, 64, 128). Only .keras models are read, with Keras safe_mode (no Lambda "
    "layers).\n\n"
    "--study NAME instead of --model predicts with the study's best kept model (the best trial's own "
    "best-epoch weights, see search.keep_models).\n\n"
    "Examples:\n\n"
    "  tune predict --study unet-mars --data data/mars_for_students.npz\n\n"
    "  tune predict --model runs/unet-mars-20260101-120000/generator.keras \\\n"
    "      --data data/mars_for_students.npz --out submission.csv\n\n"
    "  tune predict --model runs/final-1/generator.keras --data test.npy \\\n"
    "      --out sub.csv --png runs/final-1/pred\n"
)


@handle_errors
def predict(
    data: Annotated[
        Path, typer.Option("--data", help="The challenge .npz (test_set) or an (N, 64, 128) .npy.")
    ],
    model: Annotated[
        Path | None, typer.Option("--model", help="A .keras model (generator.keras of a run).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="The submission CSV to write.")] = Path("submission.csv"),
    png: Annotated[
        Path | None,
        typer.Option("--png", help="Also write <DIR>/<id>.png: image beside its colour overlay."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 64,
    threads: Annotated[int, typer.Option(min=0, help="TensorFlow threads (0: all cores).")] = 0,
    json_: JsonOpt = False,
    study: Annotated[
        str | None,
        typer.Option(
            "--study",
            help="Use this study's best kept model instead of --model.",
            autocompletion=complete_study,
        ),
    ] = None,
    storage: StorageOpt = None,
) -> None:
    import json
    from contextlib import ExitStack

    from marstune.tuning.errors import UsageError
    from marstune.tuning.final.predict import load_images, load_model
    from marstune.tuning.outputs import check_folder_output, check_output

    if (model is None) == (study is None):
        raise UsageError("give either --model FILE.keras or --study NAME (its best kept model)")
    kept = _kept_model(study, storage) if study is not None else None
    check_output(out, inputs=[model, data, kept])  # before any work: never over the model or the data
    if png is not None:
        check_folder_output(png, flag="--png")
    images = load_images(data)  # checked before TensorFlow loads: a wrong file fails in a second
    from marstune.tuning.train.devices import configure

    setup = configure(threads)
    stack = ExitStack()
    if kept is not None:
        from marstune.tuning.train.saved import kept_model

        segmenter = stack.enter_context(kept_model(kept))
    else:
        assert model is not None
        segmenter = load_model(model)
    from marstune.tuning.final.predict import predict_labels, write_submission

    predict_labels(segmenter, images[: min(len(images), batch_size)], batch_size)  # warm-up: trace once
    started, cpu = time.perf_counter(), time.process_time()
    labels = predict_labels(segmenter, images, batch_size)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    write_submission(out, labels, inputs=[model, data])
    rate = len(images) / seconds
    # CPU seconds too: on a shared machine the wall-clock rate says as much about the neighbours.
    stderr(
        f"segmented {len(images)} images in {seconds:.2f}s: {rate:.1f} images/s "
        f"({cpu:.1f} CPU-seconds; batch {batch_size}, {setup.device}, {setup.threads or 'all'} threads)"
    )
    if png is not None:
        from marstune.tuning.final.figures import write_overlays

        png.mkdir(parents=True, exist_ok=True)
        write_overlays(images, labels, png)
        stderr(f"wrote {len(images)} overlays to {png}/")
    if not json_:
        typer.echo(str(out))
        return
    shown = {
        "csv": str(out),
        "model": str(model) if model is not None else f"best kept model of {study}",
        "images": len(images),
        "seconds": round(seconds, 3),
        "images_per_second": round(rate, 2),
        "cpu_seconds": round(cpu, 2),
        "batch_size": batch_size,
        "device": setup.device,
        "threads": setup.threads,
        "overlays": None if png is None else str(png),
    }
    typer.echo(json.dumps(shown))


def _kept_model(study: str, storage: str | None) -> Path:
    from marstune.tuning.config.spec import check_study_name
    from marstune.tuning.errors import StorageError
    from marstune.tuning.study.artifacts import best_kept
    from marstune.tuning.study.urls import resolve_url

    found = best_kept(resolve_url(storage), check_study_name(study))
    if found is None:
        raise StorageError(
            f"study {study!r} kept no model of its best trial (search.keep_models=0, or older than kept "
            "models); pass --model FILE.keras"
        )
    return found.path
