"""A picture of the surrogate against the recording (`python -m bench surrogate --plot PATH`): recorded
curves, the surrogate's smooth mean and replayed curves for a spread of configurations, and the
distribution of epoch-to-epoch differences, recorded against replayed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.curves_data import Curves
from marstune.tuning.search.replay import Replay

PANELS = 11  # configurations shown; the twelfth panel is the histogram


def plot(curves: Curves, replay: Replay, path: Path, held_out: np.ndarray | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a benchmark machine
    import matplotlib.pyplot as plt

    order = np.argsort(curves.miou[:, -1])
    shown = order[np.unique(np.linspace(0, curves.n - 1, min(PANELS, curves.n)).round().astype(int))]
    fig, axes = plt.subplots(3, 4, figsize=(16, 10))
    epochs = np.arange(1, curves.epochs + 1)
    for ax, i in zip(axes.flat, shown, strict=False):
        p = curves.params[i]
        ax.plot(epochs, curves.miou[i], "ko-", ms=3, lw=1, label="recorded")
        ax.plot(epochs, replay.mean_curve(p), "C0-", lw=2, label="surrogate mean (fitted on all)")
        if held_out is not None:
            ax.plot(epochs, held_out[i], "C3:", lw=2, label="mean, config held out")
        for seed in range(3):
            ax.plot(epochs, [m for m, _ in replay.curve(p, seed)], "C0--", lw=0.7, alpha=0.6)
        ax.set_title(
            f"{p.get('base_filters')}f {p.get('levels')}lv k{p.get('kernel')} "
            f"d{p.get('dropout')} {p.get('activation')}",
            fontsize=9,
        )
        ax.set_ylim(0, max(0.6, float(curves.miou.max()) + 0.05))
    axes.flat[0].legend(fontsize=7, loc="upper left")
    hist = axes.flat[-1]
    recorded = np.diff(curves.miou, axis=1).ravel()
    replayed = np.concatenate(
        [np.diff([m for m, _ in replay.curve(p, s)]) for p in curves.params for s in range(20)]
    )
    bins = np.linspace(-0.25, 0.25, 41)
    hist.hist(recorded, bins=bins, density=True, alpha=0.5, color="k", label="recorded")
    hist.hist(replayed, bins=bins, density=True, histtype="step", color="C0", lw=2, label="replayed")
    hist.set_title("epoch-to-epoch change of val mIoU", fontsize=9)
    hist.legend(fontsize=7)
    for ax in axes[-1][:-1]:
        ax.set_xlabel("epoch")
    hist.set_xlabel("val mIoU[t + 1] - val mIoU[t]")
    fig.suptitle(f"replay surrogate vs {curves.n} recorded curves (val mIoU, classes 1..4)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
