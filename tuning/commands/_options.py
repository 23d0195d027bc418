"""Options shared by every command that touches a study, spelled the same way everywhere."""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from marstune.tuning.errors import redact, translate

StudyOpt = Annotated[str | None, typer.Option("--study", help="Study name (default: the spec's, unet-mars).")]
StorageOpt = Annotated[
    str | None,
    typer.Option("--storage", help="Storage URL (default: $TUNE_STORAGE, else sqlite:///studies/tune.db)."),
]
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="An .npz in the challenge layout (default: data/mars_for_students.npz if present, "
        "else the built-in synthetic terrain).",
    ),
]
SpecOpt = Annotated[Path | None, typer.Option("--spec", help="Study spec YAML (default: studies/unet.yaml).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a spec key, repeatable: --set train.batch_size=16."),
]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", min=1, help="Training epochs per trial.")]
SeedOpt = Annotated[
    int | None, typer.Option("--seed", help="Seed for the split, the sampler and the weights.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

F = TypeVar("F", bound=Callable[..., Any])


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def handle_errors(func: F) -> F:
    """The boundary: TuneError -> `Error: ...`, exit 1; Ctrl-C or SIGTERM -> 130; TUNE_DEBUG=1 re-raises."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM stops like Ctrl-C: trial failed, clean exit
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            typer.echo(
                "Interrupted: the running trial is marked failed (Ray and Keras Tuner re-run it on resume); "
                "run the same command again to continue.",
                err=True,
            )
            raise typer.Exit(130) from None
        except Exception as exc:
            ours = translate(exc)
            if ours is None or os.environ.get("TUNE_DEBUG") == "1":
                raise
            typer.echo(f"Error: {redact(str(ours))}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def default_data_path() -> Path | None:
    """The real challenge file where DESIGN.md puts it, if the user has it."""
    path = Path("data/mars_for_students.npz")
    return path if path.exists() else None


def load_run_spec(
    spec: Path | None,
    sets: list[str] | None,
    *,
    study: str | None = None,
    data: Path | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    **search: Any,
) -> Any:
    from marstune.tuning.spec import load_spec

    flags = {
        "study": study,
        "data.path": str(data) if data else None,
        "train.epochs": epochs,
        "train.seed": seed,
    }
    flags.update({f"search.{k}": v for k, v in search.items()})
    resolved = load_spec(spec, sets or [], flags)
    if resolved.data.path is None and data is None and (real := default_data_path()) is not None:
        resolved = load_spec(spec, sets or [], {**flags, "data.path": str(real)})
    return resolved


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
