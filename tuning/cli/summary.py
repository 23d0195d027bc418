"""The end of `tune run` / `tune worker`: a small table on stdout (or one JSON object with --json).

Read from the storage, so it is the same whichever engine ran and however many processes took part.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import typer

from marstune.tuning.constants import METRIC_NAME

if TYPE_CHECKING:
    from marstune.tuning.workers.pool import Slot


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"
        if seconds >= 3600
        else (f"{seconds // 60}m{seconds % 60:02d}s")
    )


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_result(url: str, study: str, seconds: float) -> dict[str, Any]:
    """The study's state after a run: target, trials by state, the best trial and its params."""
    from marstune.tuning.search.failures import trial_counts
    from marstune.tuning.study import tables
    from marstune.tuning.study.lifecycle import TARGET_ATTR
    from marstune.tuning.study.trial_attrs import per_class_iou

    with tables.reading(url, wait=True) as conn:
        sid = tables.study_id(conn, study)
        states = trial_counts(conn, sid)
        best = tables.best_trial_id(conn, sid)
        attrs = tables.study_user_attrs(conn, sid)
        params = tables.trial_params(conn, best[0]) if best else {}
        per_class = per_class_iou(tables.trial_user_attrs(conn, best[0])) if best else None
    return {
        "study": study,
        "target": attrs.get(TARGET_ATTR),
        "finished": states["complete"] + states["pruned"],
        "states": states,
        "best_trial": best[1] if best else None,
        "best_value": best[2] if best else None,
        "best_params": params,
        "best_per_class_iou": per_class,
        "wall_seconds": round(seconds, 1),
    }


def print_summary(url: str, study: str, seconds: float, *, json_: bool = False) -> dict[str, Any]:
    result = run_result(url, study, seconds)
    if json_:
        typer.echo(json.dumps(result))
        return result
    from rich.console import Console
    from rich.table import Table

    states = ", ".join(f"{n} {s}" for s, n in result["states"].items() if n)
    finished, target = result["finished"], result["target"]
    # a target lowered below what an earlier run finished reads "12 (target 6) finished", not "12/6"
    lowered = target is not None and finished > target
    progress = f"{finished} (target {target})" if lowered else f"{finished}/{target}"
    # two unnamed columns (what, value): a header would be an empty row
    table = Table(title=f"study {study}: {progress} finished", title_justify="left", show_header=False)
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("", no_wrap=False)
    best = result["best_value"]
    table.add_row(
        f"best {METRIC_NAME}", "-" if best is None else f"{best:.4f} (trial {result['best_trial']})"
    )
    for key, value in result["best_params"].items():
        table.add_row(f"  {key}", _shown(value))
    if result["best_per_class_iou"]:
        ious = result["best_per_class_iou"]
        table.add_row(
            "  per-class IoU", "  ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in ious.items())
        )
    table.add_row("trials", states or "none")
    table.add_row("wall time", _clock(seconds))
    console = Console(file=sys.stdout, highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 100)
    console.print(table)
    return result


def print_workers(url: str, study: str, slots: Sequence[Slot]) -> None:
    """One stderr line per local worker place: its processes, the trials they ran, the ones that died of
    a signal, how the last ended."""
    import socket

    from marstune.tuning.study import tables

    with tables.reading(url, wait=True) as conn:
        by_worker = tables.trials_by_worker(conn, tables.study_id(conn, study))
    host = socket.gethostname()
    for slot in slots:
        mine = [by_worker.get(f"{host}:{pid}", {}) for pid in slot.pids]
        ran, failed = sum(sum(m.values()) for m in mine), sum(m.get("fail", 0) for m in mine)
        pids = ", ".join(map(str, slot.pids))
        died = f", died: {', '.join(slot.deaths)}" if slot.deaths else ""
        print(
            f"  w{slot.plan.index} (pid {pids}): ran {ran} trials ({failed} failed){died}, exit {slot.code}",
            file=sys.stderr,
            flush=True,
        )
