"""`tune run` (create or continue a study and work on it) and `tune worker` (join a running study)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from marstune.tuning.commands._options import (
    DataOpt,
    EpochsOpt,
    SeedOpt,
    SetOpt,
    SpecOpt,
    StorageOpt,
    StudyOpt,
    handle_errors,
    load_run_spec,
    stderr,
)

if TYPE_CHECKING:
    from marstune.tuning.spec import Spec

RUN_HELP = """Search the space: every trial trains a U-Net and lands in the study storage.

--trials N is the study's target of finished trials: running the same command again after an
interruption continues to N. The baseline (the seed report's best) is always trial 0.

Examples:

  tune run                                   # the spec's defaults (studies/unet.yaml)

  tune run --sampler tpe --trials 100

  tune run --sampler random --trials 30 --epochs 5 --data data/mars_for_students.npz

  tune run --sampler grid                    # every grid point exactly once, then stop

  tune run --engine keras-tuner --sampler bayes --trials 20   # Keras Tuner's oracle, same space

  tune run --sampler tpe --trials 8 --workers 2   # 2 worker processes x 1 thread on this machine

  tune run --set train.max_items=200 --set train.batch_size=16

  tune run --tensorboard                     # then: tensorboard --logdir studies/unet-mars/tensorboard

  tune run --engine ray --sampler tpe --trials 20          # Ray Tune on a local Ray cluster

  tune run --engine ray --address auto --gpus-per-trial 0.5   # on a running cluster (`ray start`)
"""

WORKER_HELP = """Join a running study and work on it until it reaches its target, then exit 0.

The spec comes from the study itself, so a worker needs no spec file.

Ctrl-C or SIGTERM stops it cleanly (its trial is marked failed, exit 130); run it again to continue.

Examples:

  tune worker --study unet-mars --storage postgresql+psycopg://tune@head/tune

  tune worker --study unet-mars --data /mnt/mars_for_students.npz   # this node's copy of the data

  tune worker --study unet-mars --workers 4    # 4 processes here (default on a 4-GPU node: one per GPU)
"""


def _summary(summary: object) -> None:
    s = summary
    best = (
        "none yet" if s.best_value is None else f"{s.best_value:.4f} (trial {s.best_number}) {s.best_params}"
    )
    stderr(
        f"study {s.study}: {s.finished}/{s.target} finished; ran {s.ran_here} here "
        f"({s.failed_here} failed) in {s.seconds:.0f}s; best {best}"
    )


def register(app: typer.Typer) -> None:
    @app.command(help=RUN_HELP)
    @handle_errors
    def run(
        sampler: Annotated[
            str | None,
            typer.Option(
                help="optuna: random, grid, tpe, gp, cmaes, qmc; ray: the same but grid; "
                "keras-tuner: random, grid, bayes, hyperband."
            ),
        ] = None,
        trials: Annotated[int | None, typer.Option(min=1, help="Target number of finished trials.")] = None,
        pruner: Annotated[str | None, typer.Option(help="median, hyperband or none.")] = None,
        engine: Annotated[str | None, typer.Option(help="optuna (default), ray or keras-tuner.")] = None,
        study: StudyOpt = None,
        storage: StorageOpt = None,
        data: DataOpt = None,
        epochs: EpochsOpt = None,
        seed: SeedOpt = None,
        spec: SpecOpt = None,
        set_: SetOpt = None,
        threads: Annotated[int, typer.Option(min=0, help="TF threads in this process (0: all cores).")] = 0,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-epoch progress lines.")] = False,
        workers: WorkersOpt = None,
        tensorboard: TensorBoardOpt = False,
        address: Annotated[
            str | None,
            typer.Option(help="Ray engine: join this cluster (host:port or auto); default: a local one."),
        ] = None,
        cpus_per_trial: Annotated[float, typer.Option(help="Ray engine: CPUs each trial reserves.")] = 1.0,
        gpus_per_trial: Annotated[
            float, typer.Option(help="Ray engine: GPUs per trial (0.5: two share one).")
        ] = 0.0,
    ) -> None:
        from marstune.tuning.engines import RunOptions, check_pair, load_engine
        from marstune.tuning.samplers import check_pruner, check_sampler
        from marstune.tuning.storage import display_url, preflight, resolve_url

        resolved = load_run_spec(
            spec,
            set_,
            study=study,
            data=data,
            epochs=epochs,
            seed=seed,
            sampler=sampler,
            trials=trials,
            pruner=pruner,
            engine=engine,
        )
        check_pair(resolved.search.engine, resolved.search.sampler)
        ray_extra = _ray_extra(resolved.search.engine, address, cpus_per_trial, gpus_per_trial)
        if resolved.search.engine != "keras-tuner":  # its samplers are Keras Tuner oracles, not Optuna's
            check_sampler(resolved.search.sampler)
        check_pruner(resolved.search.pruner)
        url = resolve_url(storage)
        preflight(url, create=True)
        data_info = _data_info(resolved)  # loads and validates the data before anything is written
        stderr(f"resolved spec ({display_url(url)}):\n" + _indent(resolved.to_yaml()))
        from marstune.tuning.local_workers import local_plan, run_local_workers

        every = trials_per_process(resolved)
        threads = threads or resolved.train.threads  # the flag, else the spec: children get it as --threads
        if (plans := local_plan(workers, threads, resolved.search.engine, recycle=every > 0)) is not None:
            if tensorboard:
                os.environ[TENSORBOARD_ENV] = "1"  # the `tune worker` children read it (TensorBoardOpt)
            code = run_local_workers(
                resolved.study,
                url,
                plans,
                quiet,
                spec=resolved,
                data_info=data_info,
                trials_per_process=every,
                timeout=resolved.search.timeout,
            )
            raise typer.Exit(code)
        extra = (("data_info", data_info), *_tensorboard_extra(tensorboard, resolved.study), *ray_extra)
        options = RunOptions(threads=threads, quiet=quiet, create=True, extra=extra)
        _summary(load_engine(resolved.search.engine).run(resolved, url, options))

    @app.command(help=WORKER_HELP)
    @handle_errors
    def worker(
        study: StudyOpt = None,
        storage: StorageOpt = None,
        threads: Annotated[int, typer.Option(min=0, help="TF threads in this process (0: all cores).")] = 0,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-epoch progress lines.")] = False,
        data: Annotated[
            Path | None,
            typer.Option("--data", help="This node's copy of the study's data (same fingerprint)."),
        ] = None,
        summary: Annotated[bool, typer.Option("--summary/--no-summary", hidden=True)] = True,
        tensorboard: TensorBoardOpt = False,
        workers: WorkersOpt = None,
        max_trials: Annotated[
            int | None,
            typer.Option(min=0, hidden=True, help="Run at most N trials here, then exit 75 (0: no limit)."),
        ] = None,
    ) -> None:
        from marstune.tuning.engines import RunOptions
        from marstune.tuning.engines import _optuna as engine
        from marstune.tuning.local_workers import RECYCLE_EXIT, die_with_parent, local_plan, run_local_workers
        from marstune.tuning.spec import DEFAULTS, spec_from_stored
        from marstune.tuning.storage import resolve_url

        name, url = study or DEFAULTS["study"], resolve_url(storage)
        if max_trials is None:  # started by a user: recycle per the study's spec
            stored = _stored_spec(url, name)
            every = trials_per_process(stored)
            threads = threads or stored.train.threads
            if (plans := local_plan(workers, threads, "optuna", recycle=every > 0)) is not None:
                if tensorboard:
                    os.environ[TENSORBOARD_ENV] = "1"
                path = str(data) if data else None
                code = run_local_workers(
                    name,
                    url,
                    plans,
                    quiet,
                    data_path=path,
                    trials_per_process=every,
                    timeout=stored.search.timeout,
                )
                raise typer.Exit(code)
        die_with_parent()
        placeholder = spec_from_stored({"study": name})  # the real spec is read from the study
        extra = ((("data_path", str(data)),) if data else ()) + _tensorboard_extra(tensorboard, name)
        extra += (("max_trials", max_trials or 0),)
        options = RunOptions(threads=threads, quiet=quiet, create=False, extra=extra)
        result = engine.run(placeholder, url, options)
        if summary:  # `tune run --workers K` prints one summary for all its workers instead
            _summary(result)
        if result.recycle:
            raise typer.Exit(RECYCLE_EXIT)


def trials_per_process(spec: Spec) -> int:
    """Trials a worker process runs before a fresh one replaces it; 0 (never) when no Keras model trains."""
    return spec.search.trials_per_process if spec.objective.kind == "unet" else 0


def _stored_spec(url: str, name: str) -> Spec:
    """The spec a study was created with, read without importing Optuna; one clear error for a study that
    does not exist, was not made by `tune run`, or belongs to another engine."""
    from marstune.tuning import study_tables
    from marstune.tuning.spec import study_spec

    with study_tables.reading(url) as conn:
        return study_spec(name, study_tables.study_user_attrs(conn, study_tables.study_id(conn, name)))


WorkersOpt = Annotated[
    int | None,
    typer.Option(min=1, help="Worker processes on this machine (default: 1, or one per GPU)."),
]
TENSORBOARD_ENV = "TUNE_TENSORBOARD"
TensorBoardOpt = Annotated[
    bool,
    typer.Option(
        "--tensorboard",
        envvar=TENSORBOARD_ENV,
        help="TensorBoard logs per trial under studies/<study>/tensorboard/trial-<n>/.",
    ),
]


def _tensorboard_extra(enabled: bool, study: str) -> tuple[tuple[str, str], ...]:
    return (("tensorboard_dir", str(Path("studies") / study / "tensorboard")),) if enabled else ()


def _ray_extra(engine: str, address: str | None, cpus: float, gpus: float) -> tuple[tuple[str, object], ...]:
    from marstune.tuning.errors import SpecError

    if engine != "ray":
        if address is not None or cpus != 1.0 or gpus != 0.0:
            raise SpecError("--address, --cpus-per-trial and --gpus-per-trial need --engine ray")
        return ()
    if cpus <= 0 or gpus < 0:
        raise SpecError(f"--cpus-per-trial must be > 0 and --gpus-per-trial >= 0, got {cpus:g} and {gpus:g}")
    return (("address", address), ("cpus_per_trial", cpus), ("gpus_per_trial", gpus))


def _indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())


def _data_info(spec: object) -> dict[str, object]:
    """Validate and describe the data up front; say loudly when it is the synthetic stand-in."""
    if spec.objective.kind != "unet":
        return {"data_source": "none (analytic objective)", "data_fingerprint": "none"}
    from marstune.tuning.objective import prepare_data

    prepared = prepare_data(spec)
    if prepared.synthetic:
        stderr(
            "=" * 78 + "\nNO DATA SET GIVEN: using the built-in SYNTHETIC Mars terrain "
            f"({len(prepared.x_train) + len(prepared.x_val)} pairs).\n"
            "Pass --data data/mars_for_students.npz to search on the real challenge data.\n" + "=" * 78
        )
    stderr(
        f"data: {prepared.source} (fingerprint {prepared.fingerprint}); {len(prepared.x_train)} train / "
        f"{len(prepared.x_val)} validation pairs; {prepared.removed} contaminated pairs removed"
    )
    return {
        "data_source": prepared.source,
        "data_fingerprint": prepared.fingerprint,
        "data_path": spec.data.path,
        "data_synthetic": prepared.synthetic,
    }
