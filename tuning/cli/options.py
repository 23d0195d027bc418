"""Options shared by every command that touches a study, spelled the same way everywhere."""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from marstune.tuning.errors import Interrupted, describe, exit_code
from marstune.tuning.search.engines import ALL_SAMPLERS, ENGINES
from marstune.tuning.search.samplers import PRUNER_NAMES


def complete_study(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of --study: the studies in the storage named so far on the line (--storage, else
    $TUNE_STORAGE, else the default). A completion must never print: any problem completes nothing."""
    try:
        from marstune.tuning.study import tables
        from marstune.tuning.study.urls import resolve_url

        with tables.reading(resolve_url(ctx.params.get("storage"))) as conn:
            names = tables.study_ids(conn)
    except Exception:  # noqa: BLE001 - no storage yet, a typo in --storage, a server down: no candidates
        return []
    return sorted(name for name in names if name.startswith(incomplete))


# Help texts are single logical lines: rich reflows them to the terminal (a hard break stays a break).
# Each says only what holds for every command that uses it; a command where it would not holds its own.
StudyOpt = Annotated[
    str | None,
    typer.Option(
        "--study", help="Study name (default: the spec's study, unet-mars).", autocompletion=complete_study
    ),
]
StoredStudyOpt = Annotated[
    str | None,
    typer.Option("--study", help="Study name (default: unet-mars).", autocompletion=complete_study),
]
StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage", help="Storage URL (default: $TUNE_STORAGE, else the SQLite file studies/tune.db)."
    ),
]
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="An .npz in the challenge layout (default: mars_for_students.npz in data/ if there, "
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
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout, for scripts.")]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", help="Show everything, TensorFlow's native start-up lines too.")
]
MlflowOpt = Annotated[
    str | None,
    typer.Option("--mlflow", metavar="URI", help="Also log every trial to this MLflow tracking server."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No per-trial or per-epoch progress lines.")]
ThreadsOpt = Annotated[
    int,
    typer.Option(
        min=0,
        help="TensorFlow threads per worker process (0: the study's train.threads; its default 0 shares "
        "all cores among the workers).",
    ),
]
WorkersOpt = Annotated[
    int | None, typer.Option(min=1, help="Worker processes on this machine (default: 1, or one per GPU).")
]
ResumeFailedOpt = Annotated[
    int | None,
    typer.Option(
        "--resume-failed",
        metavar="TRIAL",
        min=0,
        help="Continue a study that stopped because its last trials failed, once the cause is fixed: "
        "TRIAL is a failed trial of that stop, as the stop message names it. A new failure streak starts; "
        "the same flag does not resume a later stop, so a restarted worker cannot loop.",
    ),
]
TensorBoardOpt = Annotated[
    bool,
    typer.Option(
        "--tensorboard", help="TensorBoard logs of each trial, in tensorboard/ under studies/<study>/."
    ),
]
# Choices shown in --help; a value outside them is a usage error (exit 2). The registries own the names.
SamplerName = StrEnum("SamplerName", {name: name for name in ALL_SAMPLERS})  # type: ignore[misc]
PrunerName = StrEnum("PrunerName", {name: name for name in PRUNER_NAMES})  # type: ignore[misc]
EngineName = StrEnum("EngineName", {name: name for name in ENGINES})  # type: ignore[misc]

if TYPE_CHECKING:
    from marstune.tuning.config.spec import Spec

F = TypeVar("F", bound=Callable[..., Any])


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


INTERRUPTED_RUN = (
    "Interrupted: the running trial is marked failed (the baseline and grid points are queued again; Ray and "
    "Keras Tuner re-run it on resume); run the same command again to continue."
)


# Commands that only read the storage (`status`, `export-best`): no trial runs in them, nothing is half
# written, and the next run is the same command.
INTERRUPTED_READ = "Interrupted: nothing was written; run the same command again."


def handle_errors(func: F | None = None, *, interrupted: str = "Interrupted.") -> Any:
    """The boundary: TuneError -> `Error: ...` on one line, exit 1 (2 for a usage error); Ctrl-C 130,
    SIGTERM 143 after the line `interrupted`; TUNE_DEBUG=1 re-raises with the traceback. Every line is
    redacted. Use as @handle_errors or @handle_errors(interrupted="...")."""
    if func is None:
        return functools.partial(handle_errors, interrupted=interrupted)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        signal.signal(signal.SIGTERM, _raise_interrupted)  # SIGTERM stops like Ctrl-C: a clean exit
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt as exc:
            stderr(interrupted)
            raise typer.Exit(exit_code(exc)) from None
        except Exception as exc:
            line = describe(exc)
            if line is None or os.environ.get("TUNE_DEBUG") == "1":
                raise
            stderr(line)
            raise typer.Exit(exit_code(exc)) from None

    return wrapper  # type: ignore[return-value]


def show_everything(verbose: bool) -> None:
    """--verbose: nothing is filtered from this process's output, nor its worker processes' (they
    inherit the environment)."""
    if verbose:
        from marstune.tuning.train.devices import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"


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
) -> Spec:
    from marstune.tuning.config.spec import load_spec

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
