"""`tune predict`: segment test images with a saved model and write the submission CSV."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from marstune.tuning.cli.options import JsonOpt, handle_errors, stderr

HELP = (
    "Segment test images with a saved model and write the submission CSV.\n\n"
    "The CSV has the header id,0,1,...,8191, then one row per image (its index and the predicted mask "
    "flattened row-major). Prints images per second; --json prints the CSV path, the image count and "
    "the rate as one JSON object on stdout.\n\n"
    "--data is the challenge .npz (its test_set is used), an .npz holding one (N, 64, 128) array, or a "
    ".npy of shape (N, 64, 128). Only .keras models are read, with Keras safe_mode (no Lambda "
    "layers).\n\n"
    "Examples:\n\n"
    "  tune predict --model runs/unet-mars-20260101-120000/generator.keras \\\n"
    "      --data data/mars_for_students.npz --out submission.csv\n\n"
    "  tune predict --model runs/final-1/generator.keras --data test.npy \\\n"
    "      --out sub.csv --png runs/final-1/pred\n"
)


@handle_errors
def predict(
    model: Annotated[Path, typer.Option("--model", help="A .keras model (generator.keras of a run).")],
    data: Annotated[
        Path, typer.Option("--data", help="The challenge .npz (test_set) or an (N, 64, 128) .npy.")
    ],
    out: Annotated[Path, typer.Option("--out", help="The submission CSV to write.")] = Path("submission.csv"),
    png: Annotated[
        Path | None,
        typer.Option("--png", help="Also write <DIR>/<id>.png: image beside its colour overlay."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 64,
    threads: Annotated[int, typer.Option(min=0, help="TensorFlow threads (0: all cores).")] = 0,
    json_: JsonOpt = False,
) -> None:
    import json

    from marstune.tuning.final.predict import load_images, load_model
    from marstune.tuning.outputs import check_output

    check_output(out, inputs=[model, data])  # before any work: never over the model or the data
    if png is not None and (png.exists() and not png.is_dir()):
        from marstune.tuning.errors import OutputError

        raise OutputError(f"--png {png} is a file; give a folder for the overlay images")
    images = load_images(data)  # checked before TensorFlow loads: a wrong file fails in a second
    from marstune.tuning.train.devices import configure

    setup = configure(threads)
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
        "model": str(model),
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
