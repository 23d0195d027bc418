"""`tune pix2pix`: the final run with the exported best configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from marstune.tuning.cli.options import JsonOpt, handle_errors
from marstune.tuning.errors import exit_code

HELP = (
    "The final run: Pix2Pix with the best configuration, compared with the plain U-Net.\n\n"
    "Trains Pix2Pix (the tuned U-Net as generator, a PatchGAN discriminator) with the configuration "
    "`tune export-best` wrote, and the plain U-Net beside it with the same budget (--compare, on by "
    "default): both validation mIoUs are printed side by side, the better one marked. Each epoch prints "
    "one progress line, as `tune run` does.\n\n"
    "Writes a run folder: generator.keras (and unet.keras), metrics.json, loss_curves.png, "
    "miou_curves.png, examples.png, and a checkpoint after every epoch so --resume continues an "
    "interrupted run. stdout gets the run folder, or with --json one JSON object: the folder, each "
    "model's score and per-class IoU, and the better one.\n\n"
    "Examples:\n\n"
    "  tune pix2pix --config studies/unet-mars.best.yaml --epochs 200\n\n"
    "  tune pix2pix --config studies/unet-mars.best.yaml --data other.npz \\\n"
    "      --out runs/final-1\n\n"
    "  tune pix2pix --config studies/unet-mars.best.yaml --epochs 200 \\\n"
    "      --resume --out runs/final-1\n\n"
    "  # a smoke test:\n"
    "  tune pix2pix --config best.yaml --epochs 1 --max-items 24 --no-compare\n"
)


@handle_errors
def pix2pix(
    config: Annotated[
        Path,
        typer.Option("--config", help="The YAML that `tune export-best` wrote (in studies/)."),
    ],
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs",
            min=1,
            help="Training epochs of each model (default: the study's train.epochs; with --resume, "
            "the run's).",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="An .npz in the challenge layout (default: the data the study searched on; the "
            "built-in synthetic terrain if it used that).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Run folder (default: a new one named <study>-<time> in runs/; with --resume the newest)."
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")
    ] = False,
    compare: Annotated[
        bool, typer.Option("--compare/--no-compare", help="Also train the plain U-Net and compare.")
    ] = True,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Batch size (default: the config's, else the study's).")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="Seed for the validation split, the weights, the shuffling and the flips (default: the "
            "study's; another seed splits the data differently from the search).",
        ),
    ] = None,
    max_items: Annotated[
        int | None, typer.Option(min=4, help="Use only the first N pairs (quick runs and tests).")
    ] = None,
    lambda_: Annotated[
        float | None,
        typer.Option(
            "--lambda", min=0, help="Weight of the segmentation loss (default: the config's, else 100)."
        ),
    ] = None,
    threads: Annotated[
        int, typer.Option(min=0, help="TensorFlow threads (0: the study's train.threads).")
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-epoch progress lines.")] = False,
    warm_start: Annotated[
        bool,
        typer.Option(
            "--warm-start", help="Start both models from the best trial's kept model (the export's .keras)."
        ),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    from marstune.tuning.final.run import FinalOptions, run_final

    try:
        result = run_final(
            FinalOptions(
                config=config,
                epochs=epochs,
                data=str(data) if data is not None else None,
                out=out,
                resume=resume,
                compare=compare,
                batch_size=batch_size,
                seed=seed,
                max_items=max_items,
                threads=threads,
                seg_weight=lambda_,
                quiet=quiet,
                warm_start=warm_start,
            )
        )
    except KeyboardInterrupt as exc:  # run_final printed what to do next (the resume command)
        raise typer.Exit(exit_code(exc)) from None  # 130 for Ctrl-C, 143 for SIGTERM
    if json_:
        import json

        typer.echo(json.dumps(result.summary))
    else:
        typer.echo(str(result.out))
