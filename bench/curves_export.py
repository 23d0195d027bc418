"""`python -m bench curves`: the recorded learning curves, from the recording's Optuna database to the
compact file kept in the repository (bench/curves/unet-synthetic.json).

The database is opened read-only (a recording may still be writing to it) and read with plain SQL, so a
partial recording exports what is complete so far and says how much of the design that is. The file
holds the recipe (design, spec, data, machine, dates, load) and, per completed configuration, its
params, model size and one row per epoch; every row is one line, so a re-export diffs by configuration.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench._common import REPO, refuse_same_file
from marstune.tuning.study.trial_attrs import epoch_log

DB = REPO / "bench" / "curves" / "record.db"
OUT = REPO / "bench" / "curves" / "unet-synthetic.json"
STUDY = "curves"
REGENERATE = "python -m bench record-design && python -m bench curves"
# Rounding of the per-epoch rows: scores keep the 5 decimals the objective stores, times their
# millisecond resolution; more digits would only be noise in every diff.
ROUND = {"val_miou": 5, "seconds": 3, "cpu_seconds": 3, "train_seconds": 3, "images_per_second": 2}
ROW_KEYS = ("val_miou", "per_class_iou", "seconds", "cpu_seconds", "train_seconds", "images_per_second")


def connect_readonly(db: Path) -> sqlite3.Connection:
    """A read-only connection: `mode=ro` never creates, migrates or checkpoints the recording's file."""
    if re.match(r"^[a-z][\w+.-]*:/", str(db)):  # a URL (argparse's Path made its // one /)
        raise SystemExit("error: --db takes the path of the recording's SQLite file, not a URL")
    if not db.is_file():
        raise SystemExit(
            f"error: no recording at {db}; run `python -m bench record-design` or pass --db PATH"
        )
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def _external(value: float, distribution_json: str) -> Any:
    """Optuna stores a categorical as the index of its choice; ints as floats."""
    dist = json.loads(distribution_json)
    name, attrs = dist["name"], dist["attributes"]
    if name == "CategoricalDistribution":
        return attrs["choices"][int(value)]
    if name.startswith("Int"):
        return int(value)
    return float(value)


def _attrs(conn: sqlite3.Connection, table: str, key_col: str, key: int) -> dict[str, Any]:
    rows = conn.execute(f"SELECT key, value_json FROM {table} WHERE {key_col} = ?", (key,)).fetchall()
    return {k: json.loads(v) for k, v in rows}


def _row(raw: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key in ROW_KEYS:
        value = raw.get(key)
        if key == "per_class_iou":
            row[key] = None if value is None else [None if v is None else round(float(v), 5) for v in value]
        else:
            row[key] = None if value is None else round(float(value), ROUND[key])
    return row


def _time(text: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(text) if text else None


def _max_concurrent(spans: list[tuple[datetime.datetime, datetime.datetime]]) -> int:
    """How many trials ran at once at most: the recording's worker count, measured."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def _data_sizes(spec: dict[str, Any] | None, fingerprint: str | None) -> dict[str, Any]:
    """Train/validation pairs of the recording, recomputed from its spec by the product's own data
    preparation (about a second) and trusted only when the data fingerprint matches the stored one."""
    if spec is None or not fingerprint:  # not a study `tune run` recorded: nothing to check against
        return {}
    try:
        from marstune.tuning.config.spec import spec_from_stored
        from marstune.tuning.train.data import prepare_data

        prepared = prepare_data(spec_from_stored(spec))
    except Exception as exc:  # the product may be restructured under us: the curves matter more
        return {"note": f"pair counts not recomputed ({type(exc).__name__})"}
    if fingerprint and prepared.fingerprint != fingerprint:
        return {"note": f"data fingerprint {prepared.fingerprint} differs from the recording's {fingerprint}"}
    n_train, n_val = len(prepared.x_train), len(prepared.x_val)
    return {"pairs": n_train + n_val, "train": n_train, "validation": n_val, "removed": prepared.removed}


def read_recording(db: Path, study: str = STUDY) -> dict[str, Any]:
    """Everything the curves file holds, read from the database at `db` (never written)."""
    conn = connect_readonly(db)
    try:
        found = conn.execute("SELECT study_id FROM studies WHERE study_name = ?", (study,)).fetchone()
        if found is None:
            names = [r[0] for r in conn.execute("SELECT study_name FROM studies")]
            raise SystemExit(f"error: no study {study!r} in {db}; it holds {names}")
        sid = found[0]
        # The spec: a study system attribute now (out of `optuna studies`), a user attribute before.
        study_attrs = {
            **_attrs(conn, "study_user_attributes", "study_id", sid),
            **{
                k: v
                for k, v in _attrs(conn, "study_system_attributes", "study_id", sid).items()
                if k == "spec"
            },
        }
        trials = conn.execute(
            "SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials "
            "WHERE study_id = ? ORDER BY number",
            (sid,),
        ).fetchall()
        counts: dict[str, int] = {}
        design: list[dict[str, Any]] = []
        configs: list[dict[str, Any]] = []
        spans = []
        now = datetime.datetime.now()  # Optuna's timestamps are the recorder's local, naive times
        for trial_id, number, state, start, end in trials:
            counts[state.lower()] = counts.get(state.lower(), 0) + 1
            if start and (end or state == "RUNNING"):
                spans.append((_time(start), _time(end) or now))
            params = {
                name: _external(value, dist)
                for name, value, dist in conn.execute(
                    "SELECT param_name, param_value, distribution_json FROM trial_params WHERE trial_id = ?",
                    (trial_id,),
                )
            }
            fixed = _attrs(conn, "trial_system_attributes", "trial_id", trial_id).get("fixed_params")
            point = dict(sorted((params or fixed or {}).items()))
            if point and point not in design:
                design.append(point)
            if state != "COMPLETE":
                continue
            user = _attrs(conn, "trial_user_attributes", "trial_id", trial_id)
            log = epoch_log(_attrs(conn, "trial_system_attributes", "trial_id", trial_id), user)
            if not log:
                continue  # completed before epoch logs existed: nothing to replay
            configs.append(
                {
                    "number": number,
                    "params": point,
                    "model_params": user.get("params"),
                    "worker": user.get("worker"),
                    "start": _time(start).isoformat(timespec="seconds") if start else None,
                    "end": _time(end).isoformat(timespec="seconds") if end else None,
                    "epochs": [_row(r) for r in log],
                }
            )
    finally:
        conn.close()
    return {
        "study": study,
        "study_attrs": study_attrs,
        "counts": counts,
        "design": design,
        "configs": configs,
        "spans": spans,
    }


def recipe(recording: dict[str, Any], db: Path) -> dict[str, Any]:
    attrs, configs, spans = recording["study_attrs"], recording["configs"], recording["spans"]
    spec = attrs.get("spec")
    ratios = [
        row["seconds"] / row["cpu_seconds"]
        for c in configs
        for row in c["epochs"]
        if row["seconds"] and row["cpu_seconds"]
    ]
    hosts = sorted({str(c["worker"]).rsplit(":", 1)[0] for c in configs if c.get("worker")})
    done = [(c["start"], c["end"]) for c in configs if c.get("start") and c.get("end")]
    when = {  # of the exported trials only, so that exporting again later changes nothing
        "first_start": min(s for s, _ in done) if done else None,
        "last_complete": max(e for _, e in done) if done else None,
        "clock": "the recorder's local time, as Optuna stores it",
    }
    return {
        "regenerate": REGENERATE,
        "study": recording["study"],
        "design": {
            "size": len(recording["design"]),
            "complete": len(configs),
            "trial_states": dict(sorted(recording["counts"].items())),
            "how": "baseline + 16 grid corners + 32 scrambled-Sobol points (bench/record_curves.py)",
        },
        "spec": spec,
        "data": {
            "source": attrs.get("data_source"),
            "fingerprint": attrs.get("data_fingerprint"),
            **_data_sizes(spec, attrs.get("data_fingerprint")),
        },
        "machine": {
            "recorded_on": hosts,
            "exported_on": socket.gethostname(),
            "cores": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "threads_per_worker": (spec or {}).get("train", {}).get("threads"),
            "workers_at_once": _max_concurrent(spans) if spans else 0,
            "note": "cores and CPU model are read at export time, on the host named in exported_on",
        },
        "dates": when,
        "load": {
            "why": "wall / CPU seconds per epoch: with one thread, above 1 means it waited for a core",
            "wall_over_cpu_median": round(statistics.median(ratios), 3) if ratios else None,
            "wall_over_cpu_p90": round(statistics.quantiles(ratios, n=10)[-1], 3)
            if len(ratios) > 1
            else None,
        },
        "recorder_commit": _commit(db.parent),
    }


def dump_json(obj: Any, indent: int = 0) -> str:
    """JSON with nesting indented but every epoch row (a dict of scalars and one short list) on one line."""
    pad, inner = " " * indent, " " * (indent + 1)
    flat = isinstance(obj, dict) and all(
        not isinstance(v, dict) and not (isinstance(v, list) and any(isinstance(x, dict) for x in v))
        for v in obj.values()
    )
    if flat and len(line := json.dumps(obj)) <= 200:
        return line
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {dump_json(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list) and any(isinstance(x, dict | list) for x in obj):
        return "[\n" + ",\n".join(f"{inner}{dump_json(x, indent + 1)}" for x in obj) + f"\n{pad}]"
    return json.dumps(obj)


def export(db: Path, out: Path, study: str = STUDY) -> dict[str, Any]:
    recording = read_recording(db, study)
    doc = {
        "format": "tune learning curves v1",
        "recipe": recipe(recording, db),
        "configs": recording["configs"],
    }
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(dump_json(doc) + "\n")
    tmp.replace(out)  # never a half-written file where the surrogate reads
    return doc


def _refuse_other_recording(out: Path, db: Path, study: str, force: bool) -> None:
    """The kept curves file is replaced only by a later export of the same recording (same spec and
    data, at least as many configurations): never by another study's curves, by mistake."""
    if force or not out.is_file():
        return
    kept = json.loads(out.read_text())
    new = read_recording(db, study)
    spec = new["study_attrs"].get("spec") or {}
    old_recipe = kept.get("recipe", {})
    same = (
        (old_recipe.get("spec") or {}).get("space") == spec.get("space")
        and old_recipe.get("data", {}).get("fingerprint") == new["study_attrs"].get("data_fingerprint")
        and len(new["configs"]) >= len(kept.get("configs", []))
    )
    if not same:
        raise SystemExit(
            f"error: {out} holds {len(kept.get('configs', []))} curves of another recording (space, data or "
            f"more configurations than {db} has: {len(new['configs'])}); pass another --out, or --force"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench curves", description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=DB, help=f"the recording (default {DB})")
    parser.add_argument("--out", type=Path, default=OUT, help=f"the curves file (default {OUT})")
    parser.add_argument("--study", default=STUDY, help="the study name in the database")
    parser.add_argument("--force", action="store_true", help="replace a curves file of another recording")
    args = parser.parse_args(argv)
    refuse_same_file(args.out, "--out", (args.db, "recording (--db)"))
    _refuse_other_recording(args.out, args.db, args.study, args.force)
    doc = export(args.db, args.out, args.study)
    design = doc["recipe"]["design"]
    print(
        f"{args.out}: {design['complete']} of {design['size']} design configurations complete "
        f"(trial states {design['trial_states']}), {sum(len(c['epochs']) for c in doc['configs'])} epochs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
