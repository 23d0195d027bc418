"""`python -m bench record-design` on a machine without the recording's database: it rebuilds the study from
the kept curves file, so only the design points not yet recorded are trained, and a re-export gives
the kept curves back unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import record_curves
from bench.curves_export import export
from tests.conftest import REPO

KEPT = REPO / "bench/curves/unet-synthetic.json"


def _fingerprint_made_here() -> str:
    from marstune.tuning.config.spec import load_spec
    from marstune.tuning.train.data import prepare_data

    return prepare_data(load_spec(record_curves.SPEC)).fingerprint


@pytest.fixture
def small_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    doc = json.loads(KEPT.read_text())
    doc["configs"] = doc["configs"][:3]
    # The synthetic terrain is float32 arithmetic (a matmul in data/synthetic.py): another CPU or NumPy
    # build can round a few pixels otherwise, and so make another fingerprint than the recording's. Resuming
    # is tested on the data this machine makes; the refusal of other data is the test below.
    doc["recipe"]["data"]["fingerprint"] = _fingerprint_made_here()
    kept = tmp_path / "kept.json"
    kept.write_text(json.dumps(doc))
    db = tmp_path / "record.db"
    monkeypatch.setattr(record_curves, "KEPT", kept)
    monkeypatch.setattr(record_curves, "DB", db)
    monkeypatch.setattr(record_curves, "URL", f"sqlite:///{db}")
    return doc


def test_the_kept_curves_come_back_whole_and_only_the_rest_is_enqueued(
    small_kept: dict, tmp_path: Path
) -> None:
    assert record_curves._rebuild_from_kept() == 3
    design = record_curves.design()
    assert record_curves._enqueue_missing(design) == len(design) - 3
    assert record_curves._completed() == 3
    again = export(tmp_path / "record.db", tmp_path / "out.json")
    for kept, back in zip(small_kept["configs"], again["configs"], strict=True):
        assert back["params"] == kept["params"] and back["epochs"] == kept["epochs"]
        assert (back["model_params"], back["worker"], back["start"]) == (
            kept["model_params"],
            kept["worker"],
            kept["start"],
        )
    assert again["recipe"]["data"]["fingerprint"] == small_kept["recipe"]["data"]["fingerprint"]
    assert again["recipe"]["spec"]["space"] == small_kept["recipe"]["spec"]["space"]


def test_curves_recorded_on_other_data_are_refused(small_kept: dict, tmp_path: Path) -> None:
    small_kept["recipe"]["data"]["fingerprint"] = "0000000000000000"
    record_curves.KEPT.write_text(json.dumps(small_kept))
    with pytest.raises(SystemExit, match="recorded on data 0000000000000000"):
        record_curves._rebuild_from_kept()
    assert not (tmp_path / "record.db").exists()
