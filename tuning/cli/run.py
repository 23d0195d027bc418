"""`tune run`: create or continue a study and work on it until it reaches its target."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from marstune.tuning.cli.options import (
    INTERRUPTED_RUN,
    DataOpt,
    EngineName,
    EpochsOpt,
    JsonOpt,
    MlflowOpt,
    PrunerName,
    ResumeFailedOpt,
    SamplerName,
    SeedOpt,
    SetOpt,
    SpecOpt,
    StorageOpt,
    StudyOpt,
    TensorBoardOpt,
    ThreadsOpt,
    VerboseOpt,
    WorkersOpt,
    handle_errors,
    load_run_spec,
    show_everything,
    stderr,
)

if TYPE_CHECKING:
    from marstune.tuning.config.spec import Spec
    from marstune.tuning.search.engines import RunOptions
    from marstune.tuning.study.lifecycle import DataInfo
    from marstune.tuning.workers.pool import Slot

HELP = (
    "Search the space: every trial trains a U-Net and lands in the study storage.\n\n"
    "--trials N is the study's target of finished trials: running the same command again after an "
    "interruption continues to N. The baseline (the seed report's best) is always trial 0. At the end a "
    "table of the best trial goes to stdout (--json: one JSON object); everything else to stderr.\n\n"
    "Examples:\n\n"
    "  tune run                  # the spec's defaults (studies/unet.yaml)\n\n"
    "  tune run --sampler tpe --trials 100\n\n"
    "  tune run --sampler random --trials 30 --epochs 5 \\\n"
    "      --data data/mars_for_students.npz\n\n"
    "  tune run --sampler grid   # every grid point exactly once, then stop\n\n"
    "  # Keras Tuner's oracle on the same space:\n"
    "  tune run --engine keras-tuner --sampler bayes --trials 20\n\n"
    "  # 2 worker processes x 1 thread on this machine:\n"
    "  tune run --sampler tpe --trials 8 --workers 2\n\n"
    "  tune run --set train.max_items=200 --set train.batch_size=16\n\n"
    "  tune run --tensorboard\n"
    "  tensorboard --logdir studies/unet-mars/tensorboard\n\n"
    "  tune run --engine ray --sampler tpe --trials 20   # a local Ray cluster\n\n"
    "  # on a running cluster (`ray start`):\n"
    "  tune run --engine ray --address auto --gpus-per-trial 0.5\n"
)


@handle_errors(interrupted=INTERRUPTED_RUN)
def run(
    sampler: Annotated[SamplerName | None, typer.Option(help="How configurations are chosen.")] = None,
    trials: Annotated[int | None, typer.Option(min=1, help="Target number of finished trials.")] = None,
    pruner: Annotated[PrunerName | None, typer.Option(help="How bad trials are stopped early.")] = None,
    engine: Annotated[EngineName | None, typer.Option(help="Which framework runs the trials.")] = None,
    study: StudyOpt = None,
    storage: StorageOpt = None,
    data: DataOpt = None,
    epochs: EpochsOpt = None,
    seed: SeedOpt = None,
    spec: SpecOpt = None,
    set_: SetOpt = None,
    threads: ThreadsOpt = 0,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No resolved spec, no per-trial or per-epoch lines.")
    ] = False,
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
    resume_failed: ResumeFailedOpt = None,
    warm_start_from: Annotated[
        str | None,
        typer.Option(
            "--warm-start-from",
            metavar="STUDY",
            help="Make a new study (--study) whose first trials, after the baseline, are STUDY's best "
            "configurations that lie in the new space: a narrower space or another learning rate.",
        ),
    ] = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
    mlflow: MlflowOpt = None,
) -> None:
    import time

    from marstune.tuning.cli.summary import print_summary
    from marstune.tuning.config.summary import spec_summary
    from marstune.tuning.errors import UsageError
    from marstune.tuning.search.engines import ENGINES, check_pair, check_space_for, load_engine
    from marstune.tuning.search.samplers import check_pruner, check_sampler
    from marstune.tuning.study.artifacts import check_folder, default_folder
    from marstune.tuning.study.disk import full_disk_named
    from marstune.tuning.study.hints import repeated_flags
    from marstune.tuning.study.lifecycle import check_joinable
    from marstune.tuning.study.settings import check_all
    from marstune.tuning.study.storage import probe
    from marstune.tuning.study.urls import display_url, preflight, resolve_url

    started = time.time()
    show_everything(verbose)
    resolved = load_run_spec(
        spec,
        set_,
        study=study,
        data=data,
        epochs=epochs,
        seed=seed,
        sampler=sampler.value if sampler else None,
        trials=trials,
        pruner=pruner.value if pruner else None,
        engine=engine.value if engine else None,
    )
    name = resolved.search.engine
    check_pair(name, resolved.search.sampler)
    check_space_for(name, resolved.search.sampler, resolved.space)
    if name != "ray" and (address is not None or cpus_per_trial != 1.0 or gpus_per_trial != 0.0):
        raise UsageError("--address, --cpus-per-trial and --gpus-per-trial need --engine ray")
    ray = ray_options(address, cpus_per_trial, gpus_per_trial) if name == "ray" else {}
    if mlflow and name == "ray":
        raise UsageError("--mlflow tracks the optuna and keras-tuner engines, whose trials train in-process")
    if name != "keras-tuner":  # its samplers are Keras Tuner oracles, not Optuna's
        check_sampler(resolved.search.sampler)
    check_pruner(resolved.search.pruner)
    url = resolve_url(storage)
    _refuse_an_input_as_storage(url, {"--spec": spec, "--data": resolved.data.path})
    preflight(url, create=True)  # the storage first: a bad URL is told before the data loads
    check_all()  # $TUNE_DB_* and heartbeat settings: a typo is told here, not by every worker
    probe(url)
    check_joinable(resolved, url)  # a refused join prints only the refusal: before the data and the spec
    if resolved.objective.kind == "unet":  # the others train no model to keep
        kept_in = resolved.search.artifacts or default_folder(resolved.study)
        check_folder(kept_in, resolved.search.keep_models)
    if mlflow:  # likewise the tracking server
        from marstune.tuning.search.tracking import MlflowTracker

        MlflowTracker(mlflow, resolved.study, url, quiet=quiet)
    info = ENGINES[name]
    explicit = trials is not None or any(s.strip().startswith("search.trials") for s in set_ or [])
    common = {
        "threads": threads or resolved.train.threads,
        "quiet": quiet,
        "tensorboard_dir": str(Path("studies") / resolved.study / "tensorboard") if tensorboard else None,
        "data": data_info(resolved),  # loads and validates the data before anything is written
        "explicit_target": explicit,
        "mlflow": mlflow,
    }
    options = info.options(**common, **ray)
    if warm_start_from is not None:
        _warm_start(resolved, url, options, warm_start_from)
    if resume_failed is not None:
        resume_stopped(url, resolved.study, resume_failed, spec=resolved)
    if verbose:
        stderr(f"resolved spec ({display_url(url)}):\n" + _indent(resolved.to_yaml()))
    elif not quiet:
        stderr(spec_summary(resolved, where=display_url(url)))
    with full_disk_named(url):  # the head's own writes (the study, the summary's reads) too
        code = _run_local_pool(resolved, url, options, workers)
        if code is None:
            load_engine(name).run(resolved, url, options)
            code = 0
        print_summary(url, resolved.study, time.time() - started, json_=json_)
    if code == 0 and not (quiet or json_):
        stderr(
            f"next: tune export-best --study {resolved.study}{repeated_flags(storage=storage)}   "
            "(--recheck 3 re-trains the 3 best configurations at a longer budget first and exports "
            "the winner)"
        )
    raise typer.Exit(code)


def _warm_start(spec: Spec, url: str, options: RunOptions, old: str) -> None:
    from marstune.tuning.config.spec import check_study_name
    from marstune.tuning.errors import UsageError
    from marstune.tuning.study.storage import open_storage
    from marstune.tuning.study.warm_start import continues, warm_start

    if spec.search.engine == "keras-tuner":
        raise UsageError(
            "--warm-start-from needs the optuna or ray engine: Keras Tuner's oracle picks every trial"
        )
    old = check_study_name(old, "--warm-start-from")
    if continues(spec, url, old):
        return
    storage = open_storage(url, create=True)
    try:
        for note in warm_start(spec, storage, url, old, options.data):
            stderr(note)
    finally:
        storage.engine.dispose()


def resume_stopped(url: str, study: str, last_failed: int, spec: Spec | None = None) -> None:
    """`--resume-failed N` (run and worker): a new failure streak for the study, if N names its stop.
    `spec`: the run's own, checked against the study's first, so a refused run resumes nothing."""
    from marstune.tuning.search.failures import resume
    from marstune.tuning.study.lifecycle import refuse_another_spec, stored_spec_raw
    from marstune.tuning.study.storage import load_study, open_storage, study_names

    storage = open_storage(url, create=True)
    try:
        if study not in study_names(storage):
            stderr(f"--resume-failed {last_failed}: study {study!r} does not exist yet; nothing to resume")
            return
        loaded = load_study(storage, study)
        stored = stored_spec_raw(storage, loaded._study_id)  # noqa: SLF001
        if spec is not None and stored is not None:
            refuse_another_spec(spec, stored)
        stderr(resume(loaded, last_failed))
    finally:
        storage.engine.dispose()


def _run_local_pool(spec: Spec, url: str, options: RunOptions, workers: int | None) -> int | None:
    """Optuna trials run in worker processes (recycled every few trials, or several at once); None when
    this process runs the engine itself."""
    import os
    from dataclasses import replace

    from marstune.tuning.search.engines import OptunaOptions
    from marstune.tuning.study.lifecycle import prepare_study
    from marstune.tuning.workers.child import ChildTask
    from marstune.tuning.workers.local import run_local
    from marstune.tuning.workers.plan import local_plan
    from marstune.tuning.workers.pool import deadline_of

    every = trials_per_process(spec)
    plans = local_plan(workers, options.threads, spec.search.engine, recycle=every > 0)
    if plans is None:
        return None
    for note in prepare_study(spec, url, options.data, explicit_target=options.explicit_target):
        stderr(note)
    assert isinstance(options, OptunaOptions)  # local_plan plans workers for the optuna engine only
    # The children join the study this process prepared, with its stored spec.
    joining = replace(
        options, create=False, data=None, max_trials=every, deadline=deadline_of(spec.search.timeout)
    )
    task = ChildTask(spec.study, joining, parent_pid=os.getpid())
    code, slots = run_local(url, plans, task, epochs=spec.train.epochs)
    return pool_ended(url, spec.study, code, slots)


def pool_ended(url: str, study: str, code: int, slots: list[Slot]) -> int:
    """After a local pool: the workers' table, and how to go on when a signal stopped them (once)."""
    from marstune.tuning.cli.summary import print_workers
    from marstune.tuning.workers.pool import INTERRUPTED_CODES

    print_workers(url, study, slots)
    if code in INTERRUPTED_CODES:  # the workers stopped cleanly; say how to go on, once
        stderr(INTERRUPTED_RUN)
    return code


def trials_per_process(spec: Spec) -> int:
    """Trials a worker process runs before a fresh one replaces it; 0 (never) when no Keras model trains."""
    return spec.search.trials_per_process if spec.objective.kind == "unet" else 0


def ray_options(address: str | None, cpus: float, gpus: float) -> dict[str, object]:
    from marstune.tuning.search.engines import check_trial_resources

    check_trial_resources(cpus, gpus)
    return {"address": address, "cpus_per_trial": cpus, "gpus_per_trial": gpus}


def _indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())


def data_info(spec: Spec) -> DataInfo:
    """Validate and describe the data up front; say loudly when it is the synthetic stand-in."""
    from marstune.tuning.study.lifecycle import DataInfo

    if spec.objective.kind == "replay":
        from marstune.tuning.search.objective import check_replay

        check_replay(spec)  # before the study exists: a bad surrogate or space writes nothing
    if spec.objective.kind != "unet":
        return DataInfo(source=f"none ({spec.objective.kind} objective)", fingerprint="none")
    from marstune.tuning.train.data import prepare_data

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
    return DataInfo(prepared.source, prepared.fingerprint, spec.data.path, prepared.synthetic)


def _refuse_an_input_as_storage(url: str, inputs: dict[str, Path | str | None]) -> None:
    """An empty spec or data file would pass as a new SQLite database and be turned into one."""
    from marstune.tuning.errors import UsageError
    from marstune.tuning.outputs import same_path
    from marstune.tuning.study.urls import DEFAULT_STORAGE, sqlite_path

    database = sqlite_path(url)
    for flag, given in inputs.items():
        if database is not None and given and same_path(database, given):
            raise UsageError(
                f"--storage names the {flag} file {given}; a study database needs its own file, "
                f"e.g. {DEFAULT_STORAGE}"
            )
