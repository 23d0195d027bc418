"""`tune data clean` and `tune data synth`: inspect and make data sets in the challenge layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from marstune.tuning.cli.options import JsonOpt, handle_errors, stderr

CLEAN_HELP = (
    "Find the contamination (unrelated pictures that all share one identical mask), print what would be "
    "removed and why, and write the removed indices.\n\n"
    "Example:\n\n"
    "  tune data clean --data data/mars_for_students.npz \\\n"
    "      --out studies/contamination.txt\n"
)

SYNTH_HELP = (
    "Write the built-in synthetic Mars terrain as an .npz in the challenge layout.\n\n"
    "An existing file at --out (a data set, perhaps the real challenge file) is kept unless --force "
    "says to replace it.\n\n"
    "Example:\n\n"
    "  tune data synth --out synthetic.npz --n-train 600 --n-test 60 --seed 0\n"
)


group = typer.Typer(help="Data sets: find contamination, generate synthetic terrain.", no_args_is_help=True)


@group.command(help=CLEAN_HELP)
@handle_errors
def clean(
    data: Annotated[Path, typer.Option("--data", help="An .npz in the challenge layout.")],
    out: Annotated[Path | None, typer.Option(help="Where to write removed indices, one per line.")] = None,
    json_: JsonOpt = False,
) -> None:
    import json

    from marstune.data.clean import find_contamination
    from marstune.data.mars import load_npz
    from marstune.tuning.outputs import check_output, write_atomically

    if out is not None:
        check_output(out, inputs=[data])  # before the work: never over the data set itself
    loaded = load_npz(data)
    report = find_contamination(loaded.images, loaded.labels)
    if out is not None:
        write_atomically(out, "".join(f"{i}\n" for i in report.removed.tolist()), inputs=[data])
    if json_:
        typer.echo(
            json.dumps(
                {
                    "pairs": len(loaded.images),
                    "removed": report.removed.tolist(),
                    "kept": report.kept,
                    "reason": report.reason,
                }
            )
        )
    else:
        typer.echo(report.summary())
        if out is not None:
            stderr(f"removed indices written to {out}")


@group.command(help=SYNTH_HELP)
@handle_errors
def synth(
    out: Annotated[Path, typer.Option(help="Output .npz path.")],
    n_train: Annotated[int, typer.Option(min=8, help="Training pairs.")] = 600,
    n_test: Annotated[int, typer.Option(min=0, help="Test images.")] = 60,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file at --out.")] = False,
) -> None:
    from marstune.data.layout import IMAGE_SHAPE
    from marstune.data.mars import save_npz
    from marstune.data.synthetic import generate
    from marstune.tuning.errors import TuneError
    from marstune.tuning.outputs import check_output, replace_atomically

    check_output(out)
    if out.suffix != ".npz":  # numpy would append .npz to another name, or an existing file would change kind
        raise TuneError(f"--out {out}: the data is written as an .npz; give a name ending in .npz")
    if out.exists() and not force:  # a typo must not replace the real data set (every command's --data)
        raise TuneError(
            f"--out {out}: a file is already there and was kept; pass --force to replace it, or another --out"
        )
    try:
        result = generate(n_train, n_test, seed)
    except MemoryError:
        pixels = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
        size = (n_train * 2 + n_test) * pixels * 4 / 2**30  # float32 images, and a mask per training pair
        raise TuneError(
            f"--n-train {n_train} --n-test {n_test} needs {size:,.1f} GiB of memory, more than this machine "
            "can give; ask for fewer images"
        ) from None
    replace_atomically(out, lambda tmp: save_npz(tmp, result.training_set, result.test_set))
    typer.echo(
        f"{out}: {len(result.training_set)} pairs ({len(result.contaminated)} planted contamination), "
        f"{len(result.test_set)} test images"
    )
