"""The report's plots as PNG files, drawn with matplotlib from the same data as the plotly figures.

Kept ours: plotly's own PNG export needs kaleido, which downloads a browser, and matplotlib needs
nothing. Optuna's `optuna.visualization.matplotlib` is experimental and would lack what we add to its
plotly figures (pruned trials, the baseline, the compute axis), so the two would show different things.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from marstune.tuning.constants import CLASS_NAMES
from marstune.tuning.report.data import (
    StudyData,
    axis_values,
    best_so_far,
    compute_ticks,
    last_value,
    scored_mean,
)
from marstune.tuning.report.plotly_figures import BASELINE, BEST, COMPLETE, PRUNED

DPI = 130


def _figure(width: float = 8.0, height: float = 4.2, ncols: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "font.size": 10,
            "axes.titleweight": "bold",
            "axes.titlesize": 11,
            "axes.titlelocation": "left",
        }
    )
    return plt.subplots(1, ncols, figsize=(width, height), sharey=ncols > 1)


def _integer_x(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _legend_below(ax: Any, ncol: int = 4) -> None:
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=ncol, frameon=False)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=DPI, facecolor="white")
    plt.close(fig)
    return path


def history(study: StudyData, path: Path) -> Path:
    fig, ax = _figure()
    done = study.complete
    ax.scatter(
        [t.number for t in done], [t.value for t in done], s=28, color=COMPLETE, label="complete", zorder=3
    )
    pruned = [t for t in study.trials if t.state == "pruned" and last_value(t) is not None]
    if pruned:
        ax.scatter(
            [t.number for t in pruned],
            [last_value(t) for t in pruned],
            s=30,
            marker="x",
            color=PRUNED,
            label="pruned (last epoch)",
            zorder=3,
        )
    best, xs, ys = float("-inf"), [], []
    for t in study.trials:  # through every finished trial, so the line runs to the last one
        if t.state == "complete" and t.value is not None:
            best = max(best, t.value)
        if t.finished and best > float("-inf"):
            xs.append(t.number)
            ys.append(best)
    ax.step(xs, ys, where="post", color=BEST, lw=2, label="best so far")
    base = next((t for t in done if t.attrs.get("enqueued_as") == "baseline"), None)
    if base is not None:
        ax.scatter([base.number], [base.value], s=160, marker="*", color=BASELINE, label="baseline", zorder=4)
    ax.set(xlabel="trial", ylabel="validation mIoU", title=f"Optimization history: {study.label}")
    _integer_x(ax)
    _legend_below(ax)
    ticks = compute_ticks(study)
    if ticks is not None:  # the compute spent by a trial number, on an axis above (as in the HTML)
        numbers, labels, label = ticks
        top = ax.twiny()
        top.set_xlim(ax.get_xlim())
        top.set_xticks(numbers, labels, fontsize=8)
        top.set_xlabel(label, fontsize=9)
        top.grid(False)
        top.spines["top"].set_visible(True)
        top.spines["right"].set_visible(False)
    return _save(fig, path)


def parallel(study: StudyData, path: Path) -> Path:
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = _figure(9.0, 4.4)
    names = list(study.space)
    axes: list[tuple[str, list[Any] | None, np.ndarray]] = []
    for name in names:
        choices, values = axis_values(study, name)
        axes.append((name, choices, np.asarray(values, dtype=float)))
    values = np.asarray([t.value for t in study.complete], dtype=float)
    axes.append(("mIoU", None, values))
    scaled, ticks = [], []
    for name, choices, v in axes:
        bounds = study.space.get(name, {})
        if choices is not None:
            low, high = -0.5, len(choices) - 0.5
        elif "low" in bounds and "high" in bounds:  # the whole searched range, not just what was tried
            low, high = float(min(bounds["low"], np.nanmin(v))), float(max(bounds["high"], np.nanmax(v)))
        else:
            low, high = float(np.nanmin(v)), float(np.nanmax(v))
        if high == low:
            low, high = low - 0.5, high + 0.5
        scaled.append((v - low) / (high - low))
        ticks.append((low, high, choices, bounds.get("type")))
    cmap = plt.get_cmap("viridis")
    vmin, vmax = float(values.min()), float(values.max())
    norm = plt.Normalize(vmin, vmax if vmax > vmin else vmin + 1e-9)
    for i in np.argsort(values):  # best drawn last, on top
        ax.plot(range(len(axes)), [s[i] for s in scaled], color=cmap(norm(values[i])), lw=1.6, alpha=0.85)
    for k, (low, high, choices, kind) in enumerate(ticks):
        ax.axvline(k, color="#444", lw=1)
        if choices is not None:
            marks = [((j + 0.5) / len(choices), str(c)) for j, c in enumerate(choices)]
        elif kind == "int" and high - low <= 10:
            marks = [((i - low) / (high - low), str(i)) for i in range(int(low), int(high) + 1)]
        else:
            marks = [(y, f"{low + y * (high - low):.3g}") for y in (0.0, 0.25, 0.5, 0.75, 1.0)]
        for y, text in marks:  # on a white box above the lines, so crossings never hide a label
            box = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85}
            ax.text(k + 0.04, y, text, fontsize=8, va="center", zorder=5, bbox=box)
    ax.set_xticks(range(len(axes)), [a[0] for a in axes])
    ax.set_yticks([])
    ax.grid(False)
    ax.spines["left"].set_visible(False)
    ax.set_xlim(-0.2, len(axes) - 0.6)
    ax.set_title(f"Parallel coordinates: {len(values)} complete trials of {study.label}")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="validation mIoU", pad=0.02)
    return _save(fig, path)


def importances(values: dict[str, float], study: StudyData, path: Path) -> Path:
    fig, ax = _figure(7.0, 3.4)
    ordered = sorted(values.items(), key=lambda kv: kv[1])
    bars = ax.barh([k for k, _ in ordered], [v for _, v in ordered], color=COMPLETE)
    ax.bar_label(bars, fmt="%.2f", padding=3)
    ax.set(xlabel="share of the value's variance (fANOVA)", title=f"Parameter importances: {study.label}")
    ax.grid(axis="y", visible=False)
    return _save(fig, path)


def intermediate(study: StudyData, path: Path) -> Path:
    fig, ax = _figure()
    best = study.best
    seen: set[str] = set()
    for t in study.trials:
        if not t.curve or t.state not in ("complete", "pruned", "running"):
            continue
        x = [e + 1 for e, _ in t.curve]
        y = [v for _, v in t.curve]
        if best and t.number == best.number:
            label, style = f"best (trial {t.number})", {"color": BEST, "lw": 3, "zorder": 4, "marker": "o"}
        elif t.state == "pruned":
            label, style = "pruned", {"color": PRUNED, "lw": 1.3, "ls": ":", "marker": "x", "alpha": 0.8}
        else:
            label, style = "complete", {"color": COMPLETE, "lw": 1.3, "alpha": 0.6, "marker": "."}
        ax.plot(x, y, label=None if label in seen else label, ms=5, **style)
        seen.add(label)
    ax.set(xlabel="epoch", ylabel="validation mIoU", title=f"Learning curves: {study.label}")
    _integer_x(ax)
    _legend_below(ax)
    return _save(fig, path)


def comparison(studies: list[StudyData], path: Path) -> Path:
    fig, (left, right) = _figure(10.0, 4.2, ncols=2)
    label = "compute"
    for k, study in enumerate(studies):
        xs, ys, cost, label = best_so_far(study)
        lw = 2.6 if k == 0 else 1.8
        left.step(xs, ys, where="post", lw=lw, label=study.label)
        right.step(cost, ys, where="post", lw=lw, label=study.label)
    left.set(xlabel="finished trials", ylabel="best validation mIoU", title="Best so far vs trials")
    right.set(xlabel=label, title="Best so far vs compute")
    _integer_x(left)
    left.legend(loc="lower right", frameon=False)
    fig.suptitle("Sampler comparison on the same data", x=0.01, ha="left", fontweight="bold")
    return _save(fig, path)


def per_class_bar(values: dict[str, float | None], trial: int, path: Path) -> Path:
    fig, ax = _figure(7.0, 3.6)
    names = list(CLASS_NAMES)
    ys = [values.get(n) or 0.0 for n in names]
    colors = ["#bab0ac"] + [COMPLETE] * (len(names) - 1)
    bars = ax.bar([n.replace("_", " ") for n in names], ys, color=colors)
    ax.bar_label(
        bars, labels=["n/a" if values.get(n) is None else f"{values[n]:.3f}" for n in names], padding=2
    )
    ax.set(ylim=(0, 1.05), ylabel="IoU", title=f"Per-class IoU of the best trial ({trial})")
    ax.text(0, 1.0, "not scored", ha="center", fontsize=8, color="#666")
    if (score := scored_mean(values)) is not None:
        ax.axhline(score, color=BEST, ls="--", lw=1.5)
        ax.text(
            len(names) - 0.5,
            score + 0.02,
            f"mean of 4 classes {score:.3f}",
            ha="right",
            color=BEST,
            fontsize=9,
        )
    ax.grid(axis="x", visible=False)
    return _save(fig, path)
