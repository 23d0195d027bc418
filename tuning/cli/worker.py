"""`tune worker`: join a running study and work on it until it reaches its target."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from marstune.tuning.cli.options import (
    INTERRUPTED_RUN,
    JsonOpt,
    MlflowOpt,
    QuietOpt,
    ResumeFailedOpt,
    StorageOpt,
    StoredStudyOpt,
    TensorBoardOpt,
    ThreadsOpt,
    VerboseOpt,
    WorkersOpt,
    handle_errors,
    show_everything,
    stderr,
)

HELP = (
    "Join a running study and work on it until it reaches its target, then exit 0.\n\n"
    "The spec comes from the study itself, so a worker needs no spec file.\n\n"
    "Ctrl-C or SIGTERM stops it cleanly (its trial is marked failed and queued again; exit 130 or 143); "
    "run it again to continue.\n\n"
    "Examples:\n\n"
    "  tune worker --study unet-mars \\\n"
    "      --storage postgresql+psycopg://tune@head/tune\n\n"
    "  # this node's copy of the data:\n"
    "  tune worker --study unet-mars --data /mnt/mars_for_students.npz\n\n"
    "  # 4 processes here (the default on a 4-GPU node: one per GPU):\n"
    "  tune worker --study unet-mars --workers 4\n"
)


@handle_errors(interrupted=INTERRUPTED_RUN)
def worker(
    study: StoredStudyOpt = None,
    storage: StorageOpt = None,
    threads: ThreadsOpt = 0,
    quiet: QuietOpt = False,
    data: Annotated[
        Path | None, typer.Option("--data", help="This node's copy of the study's data (same fingerprint).")
    ] = None,
    tensorboard: TensorBoardOpt = False,
    workers: WorkersOpt = None,
    resume_failed: ResumeFailedOpt = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
    mlflow: MlflowOpt = None,
) -> None:
    import os
    import time

    from marstune.tuning.cli.run import pool_ended, resume_stopped, trials_per_process
    from marstune.tuning.cli.summary import print_summary
    from marstune.tuning.config.spec import DEFAULTS, check_study_name, study_spec
    from marstune.tuning.search.engines import OptunaOptions
    from marstune.tuning.search.engines import optuna_engine as engine
    from marstune.tuning.study import tables
    from marstune.tuning.study.artifacts import ARTIFACTS_ATTR, check_folder
    from marstune.tuning.study.disk import full_disk_named
    from marstune.tuning.study.settings import check_all
    from marstune.tuning.study.urls import resolve_url
    from marstune.tuning.workers.child import ChildTask
    from marstune.tuning.workers.local import run_local
    from marstune.tuning.workers.plan import local_plan
    from marstune.tuning.workers.pool import deadline_of

    started = time.time()
    show_everything(verbose)
    # `--study ""` is a wrong name, as in `tune status`: only a missing --study means the default.
    name, url = check_study_name(DEFAULTS["study"] if study is None else study), resolve_url(storage)
    check_all()  # $TUNE_DB_* and heartbeat settings: a typo is told here, not by every worker
    with tables.reading(url) as conn:  # one clear error for a missing study, or one of another engine
        sid = tables.study_id(conn, name)
        stored = study_spec(name, tables.study_spec_raw(conn, sid))
        kept_in = tables.study_system_attrs(conn, sid).get(ARTIFACTS_ATTR)
    if kept_in and stored.objective.kind == "unet":  # this node must reach the study's shared folder
        check_folder(kept_in, stored.search.keep_models)
    if resume_failed is not None:
        resume_stopped(url, name, resume_failed)
    with full_disk_named(url):  # a full disk in this process (the pool's own reads): one line
        every = trials_per_process(stored)
        threads = threads or stored.train.threads
        board = str(Path("studies") / name / "tensorboard") if tensorboard else None
        plans = local_plan(workers, threads, "optuna", recycle=every > 0)
        options = OptunaOptions(
            threads=threads,
            quiet=quiet,
            tensorboard_dir=board,
            create=False,
            data_path=str(data) if data else None,
            mlflow=mlflow,
            max_trials=every if plans is not None else 0,
            deadline=deadline_of(stored.search.timeout) if plans is not None else None,
        )
        if plans is not None:
            task = ChildTask(name, options, parent_pid=os.getpid())
            code, slots = run_local(url, plans, task, epochs=stored.train.epochs, started=started)
            code = pool_ended(url, name, code, slots)
        else:
            engine.run(engine.placeholder_spec(name), url, options)
            code = 0
    if code and not quiet:
        stderr(f"worker stopped with exit code {code}")
    print_summary(url, name, time.time() - started, json_=json_)
    raise typer.Exit(code)
