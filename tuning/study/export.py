"""export-best: everything `tune pix2pix` needs to reproduce the best trial, as a plain dict (YAML).

Read-only SQL on Optuna's tables (study/tables.py), so exporting never waits for Optuna's import and
schema check. The storage is written as `display_url`: an export never carries a password.
"""

from __future__ import annotations

import datetime
import importlib.metadata as md
from typing import Any

from marstune.tuning.constants import METRIC_NAME
from marstune.tuning.errors import StorageError
from marstune.tuning.study import tables
from marstune.tuning.study.trial_attrs import per_class_iou, trial_config
from marstune.tuning.study.urls import display_url

EXPORT_KIND = "tune/best-config"  # what `tune pix2pix --config` accepts, and nothing else
EXPORT_FORMAT = 1
PACKAGES = ("marstune", "tensorflow", "keras", "optuna", "numpy")


def best_export(url: str, name: str, *, trial: int | None = None) -> dict[str, Any]:
    """The best completed trial of study `name` (or completed trial `trial`: a re-check's winner) with its
    config, data fingerprint, spec and versions."""
    with tables.reading(url) as conn:
        sid = tables.study_id(conn, name)
        best = tables.best_trial_id(conn, sid)
        if best is None:
            raise StorageError(
                f"study {name!r} has no completed trial yet; run `tune run --study {name}` first"
            )
        if trial is not None:
            values = dict(tables.completed_values(conn, sid))
            best = (tables.trial_ids_by_number(conn, sid)[trial], trial, values[trial])
        trial_id, number, value = best
        study_attrs = tables.study_user_attrs(conn, sid)
        spec = tables.study_spec_raw(conn, sid)
        params = tables.trial_params(conn, trial_id)
        trial_attrs = tables.trial_user_attrs(conn, trial_id)
        trial_system = tables.trial_system_attrs(conn, trial_id)
    return {
        "kind": EXPORT_KIND,
        "format": EXPORT_FORMAT,
        "study": name,
        "trial": number,
        "value": float(value),
        "metric": f"{METRIC_NAME}: validation mean IoU over classes 1..4",
        "config": trial_config(trial_system, trial_attrs) or params,
        "params": params,
        "per_class_iou": per_class_iou(trial_attrs),
        "data": {
            "path": study_attrs.get("data_path"),
            "source": study_attrs.get("data_source"),
            "fingerprint": study_attrs.get("data_fingerprint"),
            "synthetic": study_attrs.get("data_synthetic"),
        },
        "spec": spec or {},
        "storage": display_url(url),
        "packages": {package: _version(package) for package in PACKAGES},
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _version(package: str) -> str | None:
    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return None
