"""`tune report`: one self-contained HTML file of a study (plotly.js inlined: opens without network),
plus every plot as a PNG next to it for people who paste pictures into their own reports.

Data comes from report/data.py; the same data is drawn twice, by plotly_figures.py (HTML; four figures
are Optuna's own, with our additions) and png_figures.py (matplotlib), so both show the same thing.
"""

from __future__ import annotations

import base64
import datetime
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marstune.tuning.errors import OutputError, ReportError
from marstune.tuning.outputs import check_folder_output, check_output, same_path, write_atomically
from marstune.tuning.report import EXAMPLE_EPOCHS, EXAMPLE_ITEMS
from marstune.tuning.report.data import StudyData
from marstune.tuning.study.hints import SPEC_FILE_ATTR, repeated_flags

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
# Every section's key, in page order. Each may write a PNG `<stem>-<key>.png` beside the HTML; listed once
# so that every file a report can write is known, and checked, before any is written.
PNG_KEYS = (
    "optimization-history",
    "parallel-coordinates",
    "param-importances",
    "intermediate-values",
    "sampler-comparison",
    "per-class-iou",
    "example-predictions",
)


@dataclass
class Section:
    key: str  # the plot's div id is f"plot-{key}", its PNG f"<stem>-{key}.png"
    title: str
    about: str
    figure: Any = None  # a plotly figure, or None with `note` saying why
    png: Any = None  # callable(path) -> path drawing the same data with matplotlib
    note: str = ""
    image: Path | None = None  # a PNG shown as is (example predictions)


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    pngs: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def default_out(study: str) -> Path:
    return Path("studies") / study / "report.html"


def check_out(out: Path) -> None:
    if out.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"--out {out} must name an .html file, e.g. --out studies/unet-mars/report.html")
    if out.exists() and out.is_dir():
        raise ReportError(f"--out {out} is a folder; name a file inside it, e.g. {out / 'report.html'}")


def png_path(out: Path, key: str) -> Path:
    """Where the section `key` of the report `out` writes its PNG."""
    return out.parent / f"{out.stem}-{key}.png"


def check_outputs(out: Path, database: Sequence[Path] = ()) -> list[Path]:
    """Refuse, before anything is written, every file the report may write (the HTML and each PNG) that
    is the study database or one of its files (`database`), or that outputs.check_output refuses.
    Returns those files. The PNGs are named after --out, so --out is what the user changes. A folder
    that does not exist yet is made when the report is written (as `tune pix2pix --out` does), if
    anything can be made there."""
    check_out(out)
    planned = [out, *(png_path(out, key) for key in PNG_KEYS)]
    for path in planned:
        _refuse_database_file(out, path, database)
    if not out.parent.exists():  # a folder not made yet holds nothing to protect
        check_folder_output(out.parent, flag=f"--out {out}: its folder")
    else:
        for path in planned:
            check_output(path, flag="--out" if path == out else f"--out {out}: its plot")
    return planned


def _refuse_database_file(out: Path, path: Path, database: Sequence[Path]) -> None:
    clash = next((db for db in database if same_path(path, db)), None)
    if clash is None:
        return
    what = "the study database" if clash == database[0] else f"a file of the study database {database[0]}"
    where = f"--out {out} is" if path == out else f"--out {out} would also write its plot {path}, which is"
    raise OutputError(f"{where} {what}; nothing was written: pass another --out")


def sections(storage: BaseStorage, study: StudyData, storage_flag: str | None = None) -> list[Section]:
    """The report's sections. `storage_flag`: the --storage the user gave, repeated (masked) in the
    commands the report suggests, with the study's spec file and data."""
    from marstune.tuning.report import data as rd
    from marstune.tuning.report import plotly_figures as rp
    from marstune.tuning.report import png_figures as png

    loaded = rd.snapshot(study)  # Optuna's own figures draw the trials the report's rows were read from
    complete = len(study.complete)
    none_yet = "no complete trial yet: run `tune run` until one finishes"
    out = [
        Section(
            "optimization-history",
            "Optimization history",
            "Each trial's validation mIoU (pruned trials at their last epoch), the best so far, and above "
            "it the compute spent by then.",
            rp.history(loaded, study),
            lambda p: png.history(study, p),
        )
    ]
    par = Section(
        "parallel-coordinates",
        "Parallel coordinates",
        "One line per complete trial through its parameter values, coloured by mIoU.",
    )
    if complete:
        par.figure, par.png = rp.parallel(loaded, study), lambda p: png.parallel(study, p)
    else:
        par.note = none_yet
    out.append(par)
    values, why = rd.importances(study)
    imp = Section(
        "param-importances",
        "Parameter importances",
        "Which parameters explain the differences in mIoU between complete trials (fANOVA).",
        note=why,
    )
    if values is not None:
        imp.figure = rp.importances(loaded, list(values))
        imp.png = lambda p: png.importances(values, study, p)
    out.append(imp)
    curves = Section(
        "intermediate-values",
        "Intermediate values",
        "Validation mIoU after each epoch: the learning curves; dotted red lines are pruned trials.",
    )
    if any(t.curve for t in study.trials):
        curves.figure, curves.png = rp.intermediate(loaded, study), lambda p: png.intermediate(study, p)
    else:
        curves.note = "no trial reported an epoch yet"
    out.append(curves)
    peers = rd.comparable_studies(storage, study) if complete else []
    rerun = repeated_flags(
        storage=storage_flag,
        spec=study.attrs.get(SPEC_FILE_ATTR),
        data=study.spec.get("data", {}).get("path"),
    )
    cmp_ = Section(
        "sampler-comparison",
        "Sampler comparison",
        "Best mIoU so far of every study in this storage on the same data (fingerprint "
        f"{study.fingerprint}), against trials and against compute.",
    )
    if peers:
        cmp_.figure, cmp_.png = rp.comparison(peers), lambda p: png.comparison(peers, p)
        if len(peers) == 1:
            cmp_.note = (
                "no other study on the same data yet; compare samplers with e.g. "
                f"`tune run --study {study.name}-random --sampler random{rerun}`"
            )
    else:
        cmp_.note = none_yet
    out.append(cmp_)
    per, why = rd.per_class(study)
    pc = Section(
        "per-class-iou",
        "Per-class IoU of the best trial",
        "IoU of each class at the best trial's best epoch; the score is the mean over the 4 terrain classes.",
        note=why,
    )
    if per is not None and study.best is not None:
        number = study.best.number
        pc.figure, pc.png = rp.per_class_bar(per, number), lambda p: png.per_class_bar(per, number, p)
    out.append(pc)
    return out


def examples_section(study: StudyData, enabled: bool, epochs: int, items: int, threads: int) -> Section:
    sec = Section(
        "example-predictions",
        "Example predictions of the best configuration",
        "Held-out images, their true masks and the masks predicted by the best configuration.",
    )
    best = study.best
    if not enabled:
        sec.note = "skipped (--no-examples)"
    elif best is None:
        sec.note = "no complete trial yet"
    else:
        from marstune.tuning.report import examples as rx

        config = best.attrs.get("config") or {**study.spec.get("baseline", {}), **best.params}
        if study.best_model is not None:  # the trial's own model: no retraining
            made = rx.from_kept_model(study.spec, config, study.best_model, threads=threads)
        else:
            made = rx.example_predictions(
                study.spec, config, epochs=epochs, items=items, trial=best.number, threads=threads
            )
        if isinstance(made, str):
            sec.note = made
        else:
            sec.png = lambda p: rx.render(made, p)
            sec.about += " " + rx.caption(made)
    return sec


def build(
    storage: BaseStorage,
    study_name: str,
    out: Path,
    storage_label: str,
    *,
    storage_flag: str | None = None,
    examples: bool = True,
    example_epochs: int = EXAMPLE_EPOCHS,
    example_items: int = EXAMPLE_ITEMS,
    threads: int = 0,
    database: Sequence[Path] = (),
) -> ReportFiles:
    """Render everything in memory first, then write: a failure leaves no half-written report.
    `database`: the study database's files (urls.sqlite_files), which no file of the report may replace.
    `storage_flag`: the --storage the user gave (the report's suggested commands repeat it, masked)."""
    from marstune.tuning.report.data import load_study_data

    check_outputs(out, database)
    study = load_study_data(storage, study_name)
    parts = sections(storage, study, storage_flag)
    parts.append(examples_section(study, examples, example_epochs, example_items, threads))
    out.parent.mkdir(parents=True, exist_ok=True)
    pngs = []
    for sec in parts:
        if sec.png is not None:
            if sec.key not in PNG_KEYS:  # a new section must be listed there, or its PNG goes unchecked
                raise AssertionError(f"section {sec.key!r} is missing from PNG_KEYS")
            path = sec.png(png_path(out, sec.key))
            pngs.append(path)
            if sec.figure is None:
                sec.image = path
    text = page(study, parts, storage_label)
    write_atomically(out, text)
    return ReportFiles(out, pngs, [f"{s.title}: {s.note}" for s in parts if s.note])


def _section_html(sec: Section, first_plot: bool) -> tuple[str, bool]:
    body = f'<p class="about">{html.escape(sec.about)}</p>'
    if sec.note:
        body += f'<p class="note">{html.escape(sec.note)}</p>'
    if sec.figure is not None:
        body += sec.figure.to_html(
            full_html=False,
            include_plotlyjs=first_plot,  # the whole plotly.js once, inline: no CDN, works offline
            div_id=f"plot-{sec.key}",
            config=PLOT_CONFIG,
        )
        first_plot = False
    elif sec.image is not None:
        data = base64.b64encode(sec.image.read_bytes()).decode("ascii")
        body += f'<img id="plot-{sec.key}" alt="{html.escape(sec.title)}" src="data:image/png;base64,{data}">'
    return f'<section id="section-{sec.key}"><h2>{html.escape(sec.title)}</h2>{body}</section>\n', first_plot


def _summary(study: StudyData, storage_label: str) -> str:
    best = study.best
    rows = [
        ("storage", storage_label),
        ("engine / sampler / pruner", f"{study.engine} / {study.sampler} / {study.pruner}"),
        ("objective", study.kind),
        ("data", f"{study.source} (fingerprint {study.fingerprint})"),
        (
            "trials",
            ", ".join(
                f"{study.count(s)} {s}"
                for s in ("complete", "pruned", "fail", "running", "waiting")
                if study.count(s)
            )
            or "none",
        ),
        ("best", "none yet" if best is None else f"{best.value:.4f} (trial {best.number}) {best.params}"),
    ]
    checked = study.attrs.get("recheck")
    if checked:  # `tune export-best --recheck`: both scores of every candidate, and what was exported
        shown = "; ".join(
            f"trial {c['trial']}: {c['search_value']:.4f} -> {c['recheck_value']:.4f}"
            for c in checked["candidates"]
        )
        rows.append(
            (f"re-check at {checked['epochs']} epochs", f"{shown}; exported trial {checked['winner']}")
        )
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<table class="summary">{cells}</table>'


def _top_trials(study: StudyData, n: int = 10) -> str:
    top = sorted(study.complete, key=lambda t: -(t.value or 0.0))[:n]
    if not top:
        return ""
    names = list(study.space)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("trial", "mIoU", *names, "epochs", "seconds"))
    body = ""
    for t in top:
        seconds = t.train_seconds if t.train_seconds is not None else t.wall_seconds
        cells = [str(t.number), f"{t.value:.4f}", *(str(t.params.get(p, "")) for p in names), str(t.epochs)]
        cells.append("" if seconds is None else f"{seconds:.1f}")
        body += "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
    return (
        f'<section id="section-top-trials"><h2>Top {len(top)} trials</h2>'
        f'<table class="trials"><tr>{head}</tr>{body}</table></section>'
    )


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:1.5rem;color:#222}h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd}
.about{color:#444}.note{background:#fff7e0;border-left:4px solid #f0b400;padding:.4rem .8rem}
table{border-collapse:collapse;font-size:.92rem}th,td{padding:.25rem .7rem;text-align:left;
border-bottom:1px solid #eee}.summary th{color:#555;font-weight:600}img{max-width:100%}
nav a{margin-right:1rem}pre{background:#f6f6f6;padding:1rem;overflow:auto}
"""


def page(study: StudyData, parts: list[Section], storage_label: str) -> str:
    import yaml

    first, body = True, ""
    for sec in parts:
        chunk, first = _section_html(sec, first)
        body += chunk
    nav = "".join(f'<a href="#section-{s.key}">{html.escape(s.title)}</a>' for s in parts)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    spec = html.escape(yaml.safe_dump(study.spec, sort_keys=False, width=100))
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>tune report: {html.escape(study.name)}</title><style>{STYLE}</style></head><body>\n"
        f"<h1>Study {html.escape(study.name)}</h1>"
        f"<p>Report generated {when} by <code>tune report</code>.</p>\n"
        f"{_summary(study, storage_label)}<nav>{nav}</nav>\n{body}{_top_trials(study)}\n"
        f"<details><summary>Resolved spec stored with the study</summary><pre>{spec}</pre></details>\n"
        "</body></html>\n"
    )
