"""`tune pix2pix`: the final run with the exported best configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from marstune.tuning.cli.options import EpochsOpt, SeedOpt, handle_errors

HELP = """The final run: Pix2Pix with the best configuration, compared with the plain U-Net.

Trains Pix2Pix (the tuned U-Net as generator, a PatchGAN discriminator) with the configuration
`tune export-best` wrote, and the plain U-Net beside it with the same budget (--compare, on by
default): both validation mIoUs are printed side by side, the better one marked.

Writes a run folder: generator.keras (and unet.keras), metrics.json, loss_curves.png,
miou_curves.png, examples.png, and a checkpoint after every epoch so --resume continues an
interrupted run.

Examples:

  tune pix2pix --config studies/unet-mars.best.yaml --epochs 200

  tune pix2pix --config studies/unet-mars.best.yaml --data other.npz --out runs/final-1

  tune pix2pix --config studies/unet-mars.best.yaml --epochs 200 --resume --out runs/final-1

  tune pix2pix --config best.yaml --epochs 1 --max-items 24 --no-compare     # a smoke test
"""


@handle_errors
def pix2pix(
    config: Annotated[
        Path,
        typer.Option("--config", help="The YAML `tune export-best` wrote (studies/<study>.best.yaml)."),
    ],
    epochs: EpochsOpt = None,
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
        typer.Option(help="Run folder (default: runs/<study>-<YYYYmmdd-HHMMSS>/; with --resume the newest)."),
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
    seed: SeedOpt = None,
    max_items: Annotated[
        int | None, typer.Option(min=4, help="Use only the first N pairs (quick runs and tests).")
    ] = None,
    lambda_: Annotated[
        float | None,
        typer.Option("--lambda", min=0, help="Weight of the segmentation loss (default: 100, pix2pix's)."),
    ] = None,
    threads: Annotated[int, typer.Option(min=0, help="TF threads (0: the study's setting).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-epoch progress lines.")] = False,
    warm_start: Annotated[
        bool,
        typer.Option(
            "--warm-start", help="Start both models from the best trial's kept model (the export's .keras)."
        ),
    ] = False,
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
    except KeyboardInterrupt:
        raise typer.Exit(130) from None  # run_final said how to resume; not a failed trial
    typer.echo(str(result.out))
