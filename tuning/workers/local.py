"""Starting the local pool, for `tune run --workers K` and `tune worker --workers K` alike: say which
workers start, give each child the run's start (its progress counts from the study's finished trials
then), and run them to the study's target (workers/pool.py)."""

from __future__ import annotations

import dataclasses
import sys
import time

from marstune.tuning.study import tables
from marstune.tuning.study.lifecycle import TARGET_ATTR
from marstune.tuning.study.urls import display_url
from marstune.tuning.workers.child import ChildTask
from marstune.tuning.workers.plan import WorkerPlan
from marstune.tuning.workers.pool import Slot, run_pool


def study_progress(url: str, study: str) -> tuple[int, int]:
    """The study's complete + pruned trials now, and its target (the live bar's total)."""
    with tables.reading(url) as conn:
        sid = tables.study_id(conn, study)
        states = tables.state_counts(conn, sid)
        target = tables.study_user_attrs(conn, sid).get(TARGET_ATTR, 0)
    return states["complete"] + states["pruned"], int(target)


def describe(url: str, plans: list[WorkerPlan], every: int) -> str:
    """`[tune] 2 workers x 1 threads on <storage> (GPUs, recycling)`: what starts, without a password."""
    gpus = ", ".join(f"w{p.index}: GPU {p.gpus}" for p in plans if p.gpus is not None) or "no GPU"
    recycling = f", a fresh process every {every} trials" if every else ""
    many = "s" if len(plans) > 1 else ""
    where = f"{display_url(url)} ({gpus}{recycling})"
    return f"[tune] {len(plans)} worker{many} x {plans[0].threads} threads on {where}"


def run_local(
    url: str, plans: list[WorkerPlan], task: ChildTask, *, epochs: int, started: float | None = None
) -> tuple[int, list[Slot]]:
    """Run `task` in the planned worker processes until the study reaches its target (or they stop):
    the exit code and the places, as run_pool returns them. `started`: the command's start (now)."""
    print(describe(url, plans, task.options.max_trials), file=sys.stderr, flush=True)
    done, target = study_progress(url, task.study)
    begun = started if started is not None else time.time()
    options = dataclasses.replace(task.options, run_started=begun, done_at_start=done)
    task = dataclasses.replace(task, options=options)
    return run_pool(task.study, url, plans, task, target=target, epochs=epochs)
