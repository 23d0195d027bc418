"""`tune report` on real studies (analytic objective: fast): every plot, no network, PNGs with content.

The U-Net parts (per-class IoU, example predictions) are tested with a real tiny trial in
test_report_training.py; the offline rendering in a real browser in test_dashboard_browser.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import optuna
import pytest

from marstune.tuning.config.spec import load_spec
from marstune.tuning.report.data import best_so_far, load_study_data
from marstune.tuning.search.engines import OptunaOptions
from marstune.tuning.search.engines import optuna_engine as engine
from marstune.tuning.study.lifecycle import DataInfo
from marstune.tuning.study.storage import open_storage
from tests.conftest import REPO, run_tune

PLOTS = {  # plot key -> the title its figure carries
    "optimization-history": "Optimization history",
    "parallel-coordinates": "Parallel coordinates",
    "param-importances": "Parameter importances",
    "intermediate-values": "Intermediate values",
    "sampler-comparison": "Sampler comparison",
}
NETWORK = re.compile(
    r"""<(?:script|img|iframe|source)\b[^>]*\bsrc\s*=\s*["']?\s*(?:https?:)?//"""
    r"""|<link\b[^>]*\bhref\s*=\s*["']?\s*(?:https?:)?//|@import\s+(?:url\()?["']?(?:https?:)?//""",
    re.IGNORECASE,
)
ANALYTIC_INFO = DataInfo(source="none (analytic objective)", fingerprint="none")


def _run(url: str, study: str, sampler: str, trials: int, pruner: str = "median") -> None:
    spec = load_spec(
        REPO / "studies/unet.yaml",
        [
            f"study={study}",
            "objective.kind=analytic",
            f"search.sampler={sampler}",
            f"search.trials={trials}",
            f"search.pruner={pruner}",
            "train.epochs=5",
        ],
    )
    engine.run(spec, url, OptunaOptions(quiet=True, data=ANALYTIC_INFO))


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two samplers on the same data, a one-trial study, and a study on other data."""
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'tune.db'}"
    _run(url, "a-tpe", "tpe", 14)
    _run(url, "a-random", "random", 14)
    _run(url, "one", "random", 1)
    _run(url, "elsewhere", "qmc", 3, pruner="none")
    optuna.load_study(study_name="elsewhere", storage=open_storage(url)).set_user_attr(
        "data_fingerprint", "0123456789abcdef"
    )
    return url


def _pixels(path: Path) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(path)


def test_report_has_every_plot_and_no_network_reference(storage: str, tmp_path: Path) -> None:
    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()  # an explicit --out names an existing folder (tuning/outputs.py)
    result = run_tune(
        "report", "--storage", storage, "--study", "a-tpe", "--out", str(out), "--no-examples", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"report: {out}"
    text = out.read_text()
    for key, title in PLOTS.items():
        assert f'id="section-{key}"' in text and f'<div id="plot-{key}"' in text, key
        assert title in text, title
    # the U-Net-only sections are there, saying why they are empty for an analytic study
    assert 'id="section-per-class-iou"' in text and "has no per-class IoU" in text
    assert 'id="section-example-predictions"' in text and "skipped (--no-examples)" in text
    # plotly.js inlined exactly once; nothing is fetched from the network
    assert text.count("plotly.js v") == 1
    scripts = re.findall(r"<script\b[^>]*>", text)
    assert scripts and not [tag for tag in scripts if "src" in tag], scripts  # every script is inline
    assert NETWORK.search(text) is None, NETWORK.search(text)
    # pruned trials are visible in the learning curves and the history
    data = load_study_data(open_storage(storage), "a-tpe")
    assert data.count("pruned") >= 1
    assert '"name":"pruned"' in text and '"name":"pruned (last epoch)"' in text
    # the comparison holds the studies on the same data, not the one on other data
    assert "a-random (random)" in text and "a-tpe (tpe)" in text
    assert "elsewhere (qmc)" not in text
    # the top-trials table lists the best trial first
    best = data.best
    assert best is not None and f"<td>{best.number}</td><td>{best.value:.4f}</td>" in text


def test_pngs_are_written_next_to_the_report_and_have_content(storage: str, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = run_tune(
        "report",
        "--storage",
        storage,
        "--study",
        "a-random",
        "--out",
        str(out),
        "--no-examples",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    pngs = sorted(tmp_path.glob("report-*.png"))
    assert [p.name for p in pngs] == sorted(f"report-{key}.png" for key in PLOTS)
    for png in pngs:
        assert png.stat().st_size > 15_000, png
        pixels = _pixels(png)
        assert pixels.shape[0] >= 400 and pixels.shape[1] >= 800, (png, pixels.shape)
        gray = pixels[..., :3].mean(axis=-1)
        assert gray.std() > 0.05, f"{png.name} looks blank (std {gray.std():.3f})"
        assert (gray < 0.5).mean() > 0.005, f"{png.name} has almost no ink"
        colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
        assert len(colours) > 20, f"{png.name} has only {len(colours)} colours"


def test_json_names_every_file_written_and_keeps_stdout_for_it(storage: str, tmp_path: Path) -> None:
    out = tmp_path / "r" / "report.html"
    out.parent.mkdir()
    args = ("report", "--storage", storage, "--study", "a-tpe", "--out", str(out), "--no-examples")
    result = run_tune(*args, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)  # the whole of stdout is one JSON object
    assert shown["study"] == "a-tpe" and shown["html"] == str(out) and out.is_file()
    assert sorted(shown["pngs"]) == sorted(str(p) for p in out.parent.glob("report-*.png"))
    assert len(shown["pngs"]) == len(PLOTS)
    assert "Example predictions of the best configuration: skipped (--no-examples)" in shown["notes"]
    assert all(f"note: {note}" in result.stderr for note in shown["notes"])
    assert "PNGs:" in result.stderr and "report:" not in result.stdout  # people's lines go to stderr


def test_one_trial_study_explains_the_missing_importances(storage: str, tmp_path: Path) -> None:
    result = run_tune("report", "--storage", storage, "--study", "one", "--no-examples", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "studies" / "one" / "report.html"  # the default place
    assert result.stdout.strip() == "report: studies/one/report.html"
    text = out.read_text()
    assert "parameter importances need at least 2 complete trials; this study has 1" in text
    assert "need at least 2 complete trials" in result.stderr
    assert 'id="plot-param-importances"' not in text and 'id="plot-optimization-history"' in text
    assert not (out.parent / "report-param-importances.png").exists()
    assert (out.parent / "report-optimization-history.png").exists()


def test_best_so_far_against_trials_and_epochs(storage: str) -> None:
    data = load_study_data(open_storage(storage), "a-tpe")
    xs, ys, cost, label = best_so_far(data)
    finished = [t for t in data.trials if t.finished]
    assert xs == list(range(1, len(finished) + 1))
    assert all(a <= b for a, b in zip(ys, ys[1:], strict=False)) and ys[-1] == data.best.value
    assert label == "epochs trained (cumulative)"  # the analytic objective records no training seconds
    pruned = [t for t in finished if t.state == "pruned"]
    assert all(t.epochs < 5 for t in pruned)  # a pruned trial costs only the epochs it ran
    assert cost[-1] == sum(t.epochs for t in finished) < 5 * len(finished)


def test_four_figures_are_optunas_own_with_our_traces_added(storage: str) -> None:
    """History, parallel coordinates, importances and learning curves are optuna.visualization's
    figures of the study (same traces, same numbers), restyled, with what Optuna does not draw added."""
    from optuna import visualization as vis

    from marstune.tuning.report import data as rd
    from marstune.tuning.report import plotly_figures as rp

    opened = open_storage(storage)
    loaded = optuna.load_study(study_name="a-tpe", storage=opened)
    data = load_study_data(opened, "a-tpe")

    fig, stock = rp.history(loaded, data), vis.plot_optimization_history(loaded)
    (complete,) = fig.select_traces(selector={"name": "complete"})
    assert list(complete.x) == list(stock.data[0].x) and list(complete.y) == list(stock.data[0].y)
    (best,) = fig.select_traces(selector={"name": "best so far"})
    assert list(best.y) == list(stock.data[1].y)
    (pruned,) = fig.select_traces(selector={"name": "pruned (last epoch)"})
    assert sorted(pruned.x) == [t.number for t in data.trials if t.state == "pruned"]
    (star,) = fig.select_traces(selector={"name": "baseline"})
    assert list(star.x) == [0] and star.marker.symbol == "star"  # trial 0 is the baseline
    # the compute axis above: cumulative epochs at trial numbers, ending with the study's total
    finished = [t for t in data.trials if t.finished]
    assert (
        fig.layout.xaxis2.overlaying == "x" and fig.layout.xaxis2.title.text == "epochs trained (cumulative)"
    )
    assert fig.layout.xaxis2.tickvals[-1] == finished[-1].number
    assert fig.layout.xaxis2.ticktext[-1] == str(sum(t.epochs for t in finished))

    fig, stock = rp.parallel(loaded, data), vis.plot_parallel_coordinate(loaded)
    assert [list(t.y) for t in fig.data] == [list(t.y) for t in stock.data]
    assert fig.layout.title.text.startswith("Parallel coordinates")

    values, _ = rd.importances(data)
    assert values is not None
    fig = rp.importances(loaded, list(values))
    (bars,) = fig.data
    assert dict(zip(bars.y, bars.x, strict=True)) == pytest.approx(values)  # the PNG's numbers
    assert fig.layout.title.text == "Parameter importances (fANOVA)"

    fig, stock = rp.intermediate(loaded, data), vis.plot_intermediate_values(loaded)
    assert len(fig.data) == len(stock.data) == sum(bool(t.curve) for t in data.trials)
    for ours, theirs in zip(fig.data, stock.data, strict=True):
        assert list(ours.y) == list(theirs.y) and list(ours.x) == [step + 1 for step in theirs.x]
    styles = {(t.name, t.line.dash, t.line.color) for t in fig.data}
    assert ("pruned", "dot", rp.PRUNED) in styles and ("complete", None, rp.COMPLETE) in styles
    assert f"best (trial {data.best.number})" in {t.name for t in fig.data}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--study", "nope"], "Error: no study named 'nope' in this storage (studies: "),
        (["--study", "a-tpe", "--out", "report.txt"], "Error: --out report.txt must name an .html file"),
        ([], "Error: which study? pass --study NAME (studies: "),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    storage: str, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_tune("report", "--storage", storage, "--no-examples", *args, cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(message) and len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["r-optimization-history.png", "r.html"])
def test_no_file_of_the_report_may_replace_its_own_database(storage: str, tmp_path: Path, name: str) -> None:
    """The PNGs beside --out are outputs too: a database named like one is refused before any write."""
    import shutil

    database = tmp_path / name
    shutil.copy(storage.removeprefix("sqlite:///"), database)
    before = database.read_bytes()
    args = ("report", "--storage", f"sqlite:///{database}", "--study", "a-tpe", "--no-examples")
    result = run_tune(*args, "--out", str(tmp_path / "r.html"), cwd=tmp_path, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: --out ") and str(database) in lines[0], lines[0]
    assert "study database" in lines[0] and "pass another --out" in lines[0], lines[0]
    assert database.read_bytes() == before
    assert {p.name for p in tmp_path.iterdir()} <= {name, f"{name}-wal", f"{name}-shm"}


def test_every_png_a_report_writes_was_checked_first(storage: str, tmp_path: Path) -> None:
    from marstune.tuning.report.build import build, check_outputs

    files = build(open_storage(storage), "a-tpe", tmp_path / "r.html", storage, examples=False)
    assert set(files.pngs) <= set(check_outputs(tmp_path / "r.html"))


def test_studies_made_elsewhere_and_studies_without_results(tmp_path: Path) -> None:
    """A plain Optuna study (no stored spec) gets its space from the trials; an empty one gets notes."""
    from marstune.tuning.report.build import build

    url = f"sqlite:///{tmp_path / 'other.db'}"
    storage = open_storage(url, create=True)
    plain = optuna.create_study(study_name="plain", storage=storage, direction="maximize")
    x = optuna.distributions.FloatDistribution(0.0, 1.0)
    for v in (0.1, 0.4, 0.3):
        plain.add_trial(optuna.trial.create_trial(params={"x": v}, distributions={"x": x}, value=v))
    failed = optuna.create_study(study_name="failed", storage=storage, direction="maximize")
    failed.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))

    files = build(storage, "plain", tmp_path / "plain.html", url, examples=False)
    text = files.html.read_text()
    assert '<div id="plot-param-importances"' in text and '<div id="plot-parallel-coordinates"' in text
    assert {p.name for p in files.pngs} >= {"plain-param-importances.png", "plain-parallel-coordinates.png"}

    files = build(storage, "failed", tmp_path / "failed.html", url, examples=False)
    assert [p.name for p in files.pngs] == ["failed-optimization-history.png"]
    notes = "\n".join(files.notes)
    assert "Parallel coordinates: no complete trial yet" in notes
    assert "this study has 0" in notes and "Intermediate values: no trial reported an epoch yet" in notes
