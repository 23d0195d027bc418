"""The report's interactive figures (plotly).

Four are Optuna's own (`optuna.visualization.plot_*` on the loaded study): the optimization history,
parallel coordinates, parameter importances and intermediate values. We restyle them and add what
Optuna does not draw: the pruned trials at their last epoch and the baseline star on the history, with
a compute axis above it; the best, complete and pruned trials told apart in the learning curves (pruned
dotted). The sampler comparison and the per-class IoU bar have no Optuna equivalent and stay ours. The
PNGs (png_figures.py) draw the same data with matplotlib.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from marstune.tuning.constants import CLASS_NAMES, METRIC_NAME
from marstune.tuning.report.data import (
    StudyData,
    best_so_far,
    compute_ticks,
    importance_evaluator,
    last_value,
    scored_mean,
)

if TYPE_CHECKING:
    import optuna

COMPLETE, PRUNED, BEST, BASELINE = "#4c78a8", "#e45756", "#f58518", "#54a24b"
LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "height": 430,
    "margin": {"l": 60, "r": 30, "t": 60, "b": 50},
    "legend": {"orientation": "h", "y": -0.18},
}


def _fig(title: str, **layout: Any) -> Any:
    import plotly.graph_objects as go

    return _styled(go.Figure(), title, **layout)


def _styled(fig: Any, title: str, **layout: Any) -> Any:
    """Our title, template, size and legend on a figure (ours or Optuna's)."""
    fig.update_layout(title={"text": title, "x": 0.01}, **{**LAYOUT, **layout})
    return fig


@contextlib.contextmanager
def _optuna_quiet() -> Iterator[None]:
    """Optuna logs a warning for an empty plot ("There are no complete trials"); the report's notes
    already say what is missing, in one place, so its logger stays at errors while it draws."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _whole_numbers(fig: Any, top: int) -> None:
    """Trials and epochs are counts: no 2.5 on the axis while there are few of them."""
    if top <= 20:
        fig.update_xaxes(dtick=1)


def _hover(t: Any) -> str:
    return "<br>".join(f"{k}={v}" for k, v in t.params.items())


def history(loaded: optuna.Study, study: StudyData) -> Any:
    """Optuna's optimization history (complete trials, best value), plus the pruned trials at their
    last reported epoch, the baseline as a star and, above, the compute spent by each trial number."""
    import plotly.graph_objects as go
    from optuna.visualization import plot_optimization_history

    with _optuna_quiet():
        fig = plot_optimization_history(loaded, target_name=METRIC_NAME)
    _styled(fig, "Optimization history", xaxis_title="trial", yaxis_title="validation mIoU")
    rows = {t.number: t for t in study.trials}
    fig.update_traces(
        selector={"name": METRIC_NAME},
        name="complete",
        marker={"color": COMPLETE, "size": 8},
    )
    for trace in fig.select_traces(selector={"name": "complete"}):
        trace.text = [_hover(rows[n]) for n in trace.x]
    best = {"color": BEST, "shape": "hv"}
    fig.update_traces(selector={"name": "Best Value"}, name="best so far", line=best)
    pruned = [t for t in study.trials if t.state == "pruned" and last_value(t) is not None]
    if pruned:
        fig.add_trace(
            go.Scatter(
                x=[t.number for t in pruned],
                y=[last_value(t) for t in pruned],
                mode="markers",
                name="pruned (last epoch)",
                marker={"color": PRUNED, "symbol": "x", "size": 8},
                text=[_hover(t) for t in pruned],
            )
        )
    base = next((t for t in study.complete if t.attrs.get("enqueued_as") == "baseline"), None)
    if base is not None:
        fig.add_trace(
            go.Scatter(
                x=[base.number],
                y=[base.value],
                mode="markers",
                name="baseline",
                marker={"color": BASELINE, "symbol": "star", "size": 14},
            )
        )
    ticks = compute_ticks(study)
    if ticks is not None:
        numbers, labels, title = ticks
        # An axis shows only with a trace on it: an invisible one, its range tied to the trial axis.
        fig.add_trace(
            go.Scatter(x=numbers, y=[None] * len(numbers), xaxis="x2", showlegend=False, hoverinfo="skip")
        )
        fig.update_layout(
            xaxis2={
                "overlaying": "x",
                "matches": "x",
                "side": "top",
                "tickmode": "array",
                "tickvals": numbers,
                "ticktext": labels,
                "title": {"text": title, "standoff": 4},
                "showgrid": False,
            },
            margin={**LAYOUT["margin"], "t": 100},
        )
    _whole_numbers(fig, max((t.number for t in study.trials), default=0))
    return fig


def parallel(loaded: optuna.Study, study: StudyData) -> Any:
    """Optuna's parallel coordinates of the complete trials, coloured by validation mIoU."""
    from optuna.visualization import plot_parallel_coordinate

    with _optuna_quiet():
        fig = plot_parallel_coordinate(loaded, target_name=METRIC_NAME)
    return _styled(fig, "Parallel coordinates (complete trials)", margin={"l": 60, "r": 60, "t": 60, "b": 40})


def importances(loaded: optuna.Study, params: list[str]) -> Any:
    """Optuna's parameter importances, with the evaluator (seeded fANOVA) that computed the PNG's
    numbers in data.importances: both show the same values."""
    from optuna.visualization import plot_param_importances

    with _optuna_quiet():
        fig = plot_param_importances(
            loaded, evaluator=importance_evaluator(), params=params, target_name=METRIC_NAME
        )
    fig.update_traces(marker={"color": COMPLETE})
    return _styled(
        fig,
        "Parameter importances (fANOVA)",
        xaxis_title="share of the value's variance",
        yaxis_title=None,
        showlegend=False,
    )


def intermediate(loaded: optuna.Study, study: StudyData) -> Any:
    """Optuna's intermediate values (one line per trial), told apart: the best trial thick, complete
    ones plain, pruned ones dotted; epochs counted from 1 as the progress lines count them."""
    from optuna.visualization import plot_intermediate_values

    with _optuna_quiet():
        fig = plot_intermediate_values(loaded)
    _styled(
        fig,
        "Intermediate values: validation mIoU per epoch",
        xaxis_title="epoch",
        yaxis_title="mIoU",
        showlegend=True,
    )
    rows = {t.number: t for t in study.trials}
    best = study.best
    styles = {
        "best": {"color": BEST, "width": 3},
        "pruned": {"color": PRUNED, "width": 1.5, "dash": "dot"},
        "complete": {"color": COMPLETE, "width": 1.5},
    }
    shown: set[str] = set()
    for trace in fig.data:  # Optuna names each line "Trial<number>"
        t = rows[int(str(trace.name).removeprefix("Trial"))]
        group = "pruned" if t.state == "pruned" else "complete"
        group = "best" if best and t.number == best.number else group
        trace.update(
            x=[step + 1 for step in trace.x],
            name=f"best (trial {t.number})" if group == "best" else group,
            legendgroup=group,
            showlegend=group not in shown,
            line=styles[group],
            marker={"size": 5, "symbol": "x" if group == "pruned" else "circle"},
            hovertext=f"trial {t.number} ({t.state})<br>{_hover(t)}",
            hoverinfo="text+y",
            opacity=1.0 if group == "best" else 0.7,
        )
        shown.add(group)
    _whole_numbers(fig, max((len(t.curve) for t in study.trials), default=0))
    return fig


def comparison(studies: list[StudyData]) -> Any:
    """Ours: Optuna's plot_optimization_history takes several studies but draws them against trial
    number only. This draws each study's best so far against finished trials and against compute
    (training seconds, else epochs), where pruning and samplers differ; Optuna has no such plot."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    curves = [(s, best_so_far(s)) for s in studies]
    cost_label = curves[0][1][3] if curves else "compute"
    fig = make_subplots(rows=1, cols=2, subplot_titles=("vs finished trials", f"vs {cost_label}"))
    fig.update_layout(title={"text": "Sampler comparison: best mIoU so far, same data", "x": 0.01}, **LAYOUT)
    palette = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d", "#bab0ac"]
    for k, (study, (xs, ys, cost, _)) in enumerate(curves):
        color = palette[k % len(palette)]
        for col, x in ((1, xs), (2, cost)):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=ys,
                    mode="lines",
                    name=study.label,
                    legendgroup=study.name,
                    showlegend=col == 1,
                    line={"color": color, "shape": "hv", "width": 3 if k == 0 else 2},
                ),
                row=1,
                col=col,
            )
    fig.update_yaxes(title_text="best validation mIoU", row=1, col=1)
    fig.update_xaxes(title_text="trials", row=1, col=1)
    fig.update_xaxes(title_text=cost_label, row=1, col=2)
    return fig


def per_class_bar(values: dict[str, float | None], trial: int) -> Any:
    """Ours: the per-class IoU is a user attribute of the trial, which no Optuna plot reads."""
    import plotly.graph_objects as go

    names = list(CLASS_NAMES)
    ys = [values.get(n) or 0.0 for n in names]
    colors = ["#bab0ac"] + [COMPLETE] * (len(names) - 1)
    fig = _fig(f"Per-class IoU of the best trial ({trial})", yaxis_title="IoU", yaxis_range=[0, 1])
    fig.add_trace(
        go.Bar(
            x=[n.replace("_", " ") for n in names],
            y=ys,
            marker={"color": colors},
            text=["n/a" if values.get(n) is None else f"{values[n]:.3f}" for n in names],
            textposition="outside",
        )
    )
    fig.add_annotation(
        text="background is not part of the score", x=0, y=1.0, xref="x", yref="paper", showarrow=False
    )
    if (score := scored_mean(values)) is not None:
        fig.add_hline(
            y=score, line_dash="dash", line_color=BEST, annotation_text=f"mean of 4 classes {score:.3f}"
        )
    return fig
