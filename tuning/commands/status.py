"""`tune status`: one table of studies with trial counts by state, best so far and its trend."""

from __future__ import annotations

from typing import Any

import typer

from tuning.commands._options import JsonOpt, StorageOpt, StudyOpt, handle_errors

HELP = """Studies in the storage: trials by state, target, best validation mIoU, and a best-so-far trend.

Examples:

  tune status

  tune status --storage postgresql+psycopg://tune@head/tune --json
"""

_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 20) -> str:
    """Best-so-far over finished trials, squeezed to `width` characters: is it still improving?"""
    if not values:
        return ""
    best, running = [], float("-inf")
    for v in values:
        running = max(running, v)
        best.append(running)
    if len(best) > width:
        best = [best[round(i * (len(best) - 1) / (width - 1))] for i in range(width)]
    low, high = min(best), max(best)
    span = (high - low) or 1.0
    return "".join(_BARS[min(len(_BARS) - 1, int((b - low) / span * (len(_BARS) - 1)))] for b in best)


def _aggregate(storage: Any, sid: int) -> tuple[dict[Any, int], list[tuple[int, float]]]:
    """Trial counts by state and the completed trials' (number, value) in order, for one study.

    On an RDB storage these are two SQL queries (a GROUP BY and one indexed column join), so a study of
    10,000 trials answers in milliseconds; loading every trial with its params, attributes and per-epoch
    values took tens of seconds. Optuna's table models are private API: checked against optuna==5.0.0.
    """
    from optuna.trial import TrialState

    if not hasattr(storage, "engine"):  # not an RDB storage: load the trials
        trials = storage.get_all_trials(sid, deepcopy=False, states=None)
        by_state = {s: sum(t.state == s for t in trials) for s in TrialState}
        done = [(t.number, t.value) for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        return by_state, sorted(done)
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    trial, value = models.TrialModel, models.TrialValueModel
    with storage.engine.connect() as conn:
        states = conn.execute(
            sa.select(trial.state, sa.func.count()).where(trial.study_id == sid).group_by(trial.state)
        ).all()
        rows = conn.execute(
            sa.select(trial.number, value.value, value.value_type)
            .join(value, value.trial_id == trial.trial_id)
            .where(trial.study_id == sid, trial.state == TrialState.COMPLETE, value.objective == 0)
            .order_by(trial.number)
        ).all()
    done = [(n, value.stored_repr_to_value(v, kind)) for n, v, kind in rows]
    return {state: n for state, n in states}, done


def study_rows(storage: Any, only: str | None) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    from tuning.storage import load_study

    rows = []
    summaries = storage.get_all_studies()
    if only is not None:
        load_study(storage, only)  # a clear error for an unknown name
        summaries = [s for s in summaries if s.study_name == only]
    for summary in summaries:
        sid = storage.get_study_id_from_name(summary.study_name)
        counts = {s.name.lower(): 0 for s in TrialState}
        by_state, completed = _aggregate(storage, sid)
        for state, n in by_state.items():
            counts[state.name.lower()] += n
        values = [value for _, value in completed]
        attrs = storage.get_study_user_attrs(sid)
        best = max(((value, number) for number, value in completed), default=(None, None))
        rows.append(
            {
                "study": summary.study_name,
                "sampler": (attrs.get("spec") or {}).get("search", {}).get("sampler"),
                "target": attrs.get("target_trials"),
                **counts,
                "best_value": best[0],
                "best_trial": best[1],
                "trend": sparkline(values),
            }
        )
    return rows


def register(app: typer.Typer) -> None:
    @app.command(help=HELP)
    @handle_errors
    def status(study: StudyOpt = None, storage: StorageOpt = None, json_: JsonOpt = False) -> None:
        import json

        from rich.console import Console
        from rich.table import Table

        from tuning.storage import display_url, open_storage, resolve_url

        url = resolve_url(storage)
        rows = study_rows(open_storage(url), study)
        if json_:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table(title=f"studies in {display_url(url)}")
        for column in (
            "study",
            "sampler",
            "complete",
            "pruned",
            "fail",
            "running",
            "waiting",
            "target",
            "best mIoU",
            "best #",
            "best so far",
        ):
            table.add_column(
                column,
                justify="left" if column in ("study", "sampler", "best so far") else "right",
                no_wrap=True,
            )
        for r in rows:
            best = "-" if r["best_value"] is None else f"{r['best_value']:.4f}"
            table.add_row(
                r["study"],
                str(r["sampler"] or "-"),
                *(str(r[k]) for k in ("complete", "pruned", "fail", "running", "waiting")),
                str(r["target"] or "-"),
                best,
                "-" if r["best_trial"] is None else str(r["best_trial"]),
                r["trend"],
            )
        if not rows:
            typer.echo("no studies yet; start one with `tune run`")
            return
        console = Console()
        if not console.is_terminal:
            console.width = max(console.width, 130)  # pipes and CI logs: no truncated columns
        console.print(table)
