"""The report's interactive figures (plotly), one function per plot, drawn from report/data.py."""

from __future__ import annotations

from typing import Any

from marstune.tuning.constants import CLASS_NAMES
from marstune.tuning.report.data import (
    StudyData,
    axis_values,
    best_so_far,
    last_value,
    scored_mean,
)

COMPLETE, PRUNED, BEST, BASELINE = "#4c78a8", "#e45756", "#f58518", "#54a24b"
LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "height": 430,
    "margin": {"l": 60, "r": 30, "t": 60, "b": 50},
    "legend": {"orientation": "h", "y": -0.18},
}


def _fig(title: str, **layout: Any) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.update_layout(title={"text": title, "x": 0.01}, **{**LAYOUT, **layout})
    return fig


def _whole_numbers(fig: Any, top: int) -> None:
    """Trials and epochs are counts: no 2.5 on the axis while there are few of them."""
    if top <= 20:
        fig.update_xaxes(dtick=1)


def _hover(t: Any) -> str:
    return "<br>".join(f"{k}={v}" for k, v in t.params.items())


def history(study: StudyData) -> Any:
    import plotly.graph_objects as go

    fig = _fig("Optimization history", xaxis_title="trial", yaxis_title="validation mIoU")
    done = study.complete
    fig.add_trace(
        go.Scatter(
            x=[t.number for t in done],
            y=[t.value for t in done],
            mode="markers",
            name="complete",
            marker={"color": COMPLETE, "size": 8},
            text=[_hover(t) for t in done],
        )
    )
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
    best, xs, ys = float("-inf"), [], []
    for t in study.trials:  # through every finished trial, so the line runs to the last one
        if t.state == "complete" and t.value is not None:
            best = max(best, t.value)
        if t.finished and best > float("-inf"):
            xs.append(t.number)
            ys.append(best)
    fig.add_trace(
        go.Scatter(x=xs, y=ys, mode="lines", name="best so far", line={"color": BEST, "shape": "hv"})
    )
    base = next((t for t in done if t.attrs.get("enqueued_as") == "baseline"), None)
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
    _whole_numbers(fig, max((t.number for t in study.trials), default=0))
    return fig


def parallel(study: StudyData) -> Any:
    import plotly.graph_objects as go

    done = study.complete
    dims = []
    for name in study.space:
        choices, values = axis_values(study, name)
        dim: dict[str, Any] = {"label": name, "values": values}
        bounds = study.space[name]
        if choices is not None:
            dim.update(tickvals=list(range(len(choices))), ticktext=[str(c) for c in choices])
        elif "low" in bounds and "high" in bounds:  # the whole searched range, not just what was tried
            dim["range"] = [min([bounds["low"], *values]), max([bounds["high"], *values])]
        dims.append(dim)
    values = [t.value for t in done]
    dims.append({"label": "mIoU", "values": values})
    fig = _fig("Parallel coordinates (complete trials)", margin={"l": 60, "r": 60, "t": 90, "b": 40})
    fig.add_trace(
        go.Parcoords(
            dimensions=dims,
            line={"color": values, "colorscale": "Viridis", "showscale": True, "colorbar": {"title": "mIoU"}},
        )
    )
    return fig


def importances(values: dict[str, float]) -> Any:
    import plotly.graph_objects as go

    ordered = sorted(values.items(), key=lambda kv: kv[1])
    fig = _fig("Parameter importances (fANOVA)", xaxis_title="share of the value's variance")
    fig.add_trace(
        go.Bar(
            x=[v for _, v in ordered],
            y=[k for k, _ in ordered],
            orientation="h",
            marker={"color": COMPLETE},
            text=[f"{v:.2f}" for _, v in ordered],
            textposition="auto",
        )
    )
    return fig


def intermediate(study: StudyData) -> Any:
    import plotly.graph_objects as go

    fig = _fig("Intermediate values: validation mIoU per epoch", xaxis_title="epoch", yaxis_title="mIoU")
    best = study.best
    shown: set[str] = set()
    for t in study.trials:
        if not t.curve or t.state not in ("complete", "pruned", "running"):
            continue
        group = (
            "best" if best and t.number == best.number else ("pruned" if t.state == "pruned" else "complete")
        )
        style = {
            "best": {"color": BEST, "width": 3},
            "pruned": {"color": PRUNED, "width": 1.5, "dash": "dot"},
            "complete": {"color": COMPLETE, "width": 1.5},
        }[group]
        fig.add_trace(
            go.Scatter(
                x=[e + 1 for e, _ in t.curve],
                y=[v for _, v in t.curve],
                mode="lines+markers",
                name=f"best (trial {t.number})" if group == "best" else group,
                legendgroup=group,
                showlegend=group not in shown,
                line=style,
                marker={"size": 5, "symbol": "x" if group == "pruned" else "circle"},
                hovertext=f"trial {t.number} ({t.state})<br>{_hover(t)}",
                hoverinfo="text+y",
                opacity=1.0 if group == "best" else 0.7,
            )
        )
        shown.add(group)
    _whole_numbers(fig, max((len(t.curve) for t in study.trials), default=0))
    return fig


def comparison(studies: list[StudyData]) -> Any:
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
