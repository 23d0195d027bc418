"""Kept models: the top K trials' best-epoch weights in Optuna's artifact store, used by export, predict,
the report and the final run; every load with safe_mode=True."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from marstune.tuning.study import artifacts
from marstune.tuning.study.artifacts import AllStudiesStore, KeptModel, makes_the_cut
from marstune.tuning.study.storage import open_storage
from tests.conftest import SMALL_UNETS, run_tune

TINY = (
    "--epochs", "1", "--set", "train.max_items=24", "--set", "data.synthetic_items=24",
    "--set", "train.batch_size=8", "--set", "search.trials_per_process=0", "-q", *SMALL_UNETS,
)  # fmt: skip


def test_only_a_score_among_the_top_k_is_kept() -> None:
    kept = [KeptModel(t, v, f"id{t}", Path("x")) for t, v in ((0, 0.5), (1, 0.4))]
    assert makes_the_cut(0.1, kept[:1], 2)  # room left
    assert makes_the_cut(0.45, kept, 2) and not makes_the_cut(0.3, kept, 2)
    assert not makes_the_cut(0.99, [], 0)  # keep_models=0 keeps nothing


def test_one_store_serves_every_studys_folder(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (b / "id-1").write_bytes(b"model")
    store = AllStudiesStore([a, b])
    assert store.open_reader("id-1").read() == b"model"
    store.write("id-2", io.BytesIO(b"new"))
    assert (a / "id-2").read_bytes() == b"new"
    store.remove("id-1")
    assert not (b / "id-1").exists()
    with pytest.raises(optuna.artifacts.exceptions.ArtifactNotFound):
        store.open_reader("id-1")


def test_the_store_finds_a_folder_made_after_it(tmp_path: Path) -> None:
    """The dashboard's store is made at its start; a study made later has a folder of its own."""
    a, later = tmp_path / "a", tmp_path / "later"
    a.mkdir()
    found: list[Path] = [a]
    store = AllStudiesStore(list(found), refresh=lambda: list(found))
    later.mkdir()
    (later / "id-9").write_bytes(b"later model")
    with pytest.raises(optuna.artifacts.exceptions.ArtifactNotFound):
        store.open_reader("id-9")  # not among the folders the storage names yet
    found.append(later)  # the new study recorded its folder
    assert store.open_reader("id-9").read() == b"later model"
    assert AllStudiesStore([a]).folders == [a]  # without refresh: the folders it was given


def test_the_top_k_models_are_kept_linked_and_used(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    run = ("run", "--storage", url, "--sampler", "random", "--set", "search.keep_models=2", *TINY)
    assert run_tune(*run, "--trials", "4", cwd=tmp_path).returncode == 0
    study = optuna.load_study(study_name="unet-mars", storage=open_storage(url))
    complete = sorted(study.trials, key=lambda t: -t.value)
    linked = [t for t in complete if any(k.startswith("artifacts:") for k in t.system_attrs)]
    assert [t.number for t in linked] == [t.number for t in complete[:2]]  # the top 2, no more
    folder = tmp_path / "studies" / "unet-mars" / "artifacts"
    files = sorted(p.name for p in folder.iterdir())
    assert files == sorted(
        k.removeprefix("artifacts:") for t in linked for k in t.system_attrs if k.startswith("artifacts:")
    )  # nothing dangles (the trial's other system attributes: its config and epoch log)

    exported = run_tune("export-best", "--storage", url, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    best = yaml.safe_load((tmp_path / "studies" / "unet-mars.best.yaml").read_text())
    model_file = tmp_path / "studies" / best["model"]
    assert best["model"] == "unet-mars.best.keras" and model_file.is_file()

    import keras

    import marstune.models.metrics  # noqa: F401
    from marstune.tuning.config.spec import spec_from_stored
    from marstune.tuning.study.lifecycle import stored_spec_raw
    from marstune.tuning.train.data import prepare_data

    model = keras.saving.load_model(model_file, safe_mode=True)
    spec = spec_from_stored(stored_spec_raw(study._storage, study._study_id))
    data = prepare_data(spec)
    predicted = np.argmax(model.predict(data.x_val[..., None] / 255.0, verbose=0), axis=-1)
    from marstune.models.metrics import mean_iou

    # The kept model is the best trial's best epoch: it scores what the trial reported.
    assert mean_iou(data.y_val, predicted) == pytest.approx(complete[0].value, abs=1e-6)

    assert (
        run_tune(
            "data", "synth", "--n-train", "8", "--n-test", "6", "--out", "t.npz", cwd=tmp_path
        ).returncode
        == 0
    )
    predicted_csv = run_tune(
        "predict", "--study", "unet-mars", "--storage", url, "--data", "t.npz", cwd=tmp_path
    )
    assert predicted_csv.returncode == 0, predicted_csv.stderr
    assert len((tmp_path / "submission.csv").read_text().splitlines()) == 7  # header + 6 images

    # More trials: still the top 2 only; models that fell out are deleted with their links.
    assert run_tune(*run, "--trials", "7", cwd=tmp_path).returncode == 0
    trials = optuna.load_study(study_name="unet-mars", storage=open_storage(url)).trials
    linked = [t for t in trials if any(k.startswith("artifacts:") for k in t.system_attrs)]
    top = sorted((t for t in trials if t.value is not None), key=lambda t: -t.value)[:2]
    assert sorted(t.number for t in linked) == sorted(t.number for t in top)
    assert len(list(folder.iterdir())) == 2
    with artifacts_connection(url) as conn:
        assert [k.trial for k in artifacts.kept_models(conn, 1)] == [t.number for t in top]


def artifacts_connection(url: str):  # noqa: ANN201 - a context manager from study/tables
    from marstune.tuning.study import tables

    return tables.reading(url)


def test_export_best_never_writes_into_a_kept_models_folder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    run = (
        "run",
        "--storage",
        url,
        "--trials",
        "1",
        "--set",
        "objective.kind=analytic",
        "--epochs",
        "1",
        "-q",
    )
    assert run_tune(*run, cwd=tmp_path).returncode == 0
    study = optuna.load_study(study_name="unet-mars", storage=open_storage(url))
    kept = artifacts.folder_of(study) / "0b1c2d3e-kept-model"
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_bytes(b"a trial's kept weights")
    r = run_tune("export-best", "--storage", url, "--out", str(kept), cwd=tmp_path)
    assert r.returncode == 1 and "kept models" in r.stderr, r.stderr
    assert kept.read_bytes() == b"a trial's kept weights"
    assert sorted(p.name for p in kept.parent.iterdir()) == [kept.name]


def _kept_files(url: str) -> list[KeptModel]:
    return artifacts.kept_of_study(url, "unet-mars")


def test_export_best_ships_only_a_kept_model_that_loads(tmp_path: Path) -> None:
    """A kept model swapped for another trial's (it loads, but is not this trial's) or truncated (a disk
    that filled mid-write, a copy cut short) is never shipped or predicted with: the next kept model that
    is intact is shipped, with its own trial; with none left, one line says so, and the earlier export's
    model is not left beside a configuration that no longer names it."""
    url = f"sqlite:///{tmp_path / 't.db'}"
    run = ("run", "--storage", url, "--sampler", "random", "--set", "search.keep_models=2", *TINY)
    assert run_tune(*run, "--trials", "2", cwd=tmp_path).returncode == 0
    best, second = _kept_files(url)
    assert best.sha256 == hashlib.sha256(best.path.read_bytes()).hexdigest()
    best.path.write_bytes(second.path.read_bytes())  # another trial's model in its place
    out = tmp_path / "studies" / "unet-mars.best.keras"

    r = run_tune("export-best", "--storage", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    exported = yaml.safe_load((tmp_path / "studies" / "unet-mars.best.yaml").read_text())
    assert exported["trial"] == second.trial and exported["value"] == pytest.approx(second.value)
    assert out.read_bytes() == second.path.read_bytes()
    assert f"trial {best.trial}: its file {best.path} is not the one kept for trial" in r.stderr, r.stderr
    assert f"shipping trial {second.trial}'s" in r.stderr and "cuInit" not in r.stderr
    predicted = run_tune("predict", "--study", "unet-mars", "--storage", url, "--data", "x.npz", cwd=tmp_path)
    assert predicted.returncode == 1 and "is not the one kept" in predicted.stderr, predicted.stderr
    report = run_tune(
        *("report", "--storage", url, "--example-items", "8", "--example-epochs", "1", "--out", "r.html"),
        cwd=tmp_path,
    )
    assert report.returncode == 0 and "is retrained instead" in report.stderr, report.stderr[-3000:]
    assert exported["model_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    shipped = out.read_bytes()
    out.write_bytes(shipped[:-1] + bytes([shipped[-1] ^ 1]))  # changed by hand: pix2pix refuses it
    config = str(tmp_path / "studies" / "unet-mars.best.yaml")
    warm = run_tune("pix2pix", "--config", config, "--warm-start", "--out", "p", cwd=tmp_path)
    assert warm.returncode == 1 and "is not the model `tune export-best` wrote" in warm.stderr, warm.stderr
    assert not (tmp_path / "p").exists()
    out.write_bytes(shipped)

    second.path.write_bytes(b"PK\x03\x04 not a whole archive")  # cut off after it was kept
    r = run_tune("export-best", "--storage", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stderr.splitlines() if "is usable" in ln]
    assert len(line) == 1 and line[0].startswith("no kept model of unet-mars is usable"), r.stderr
    assert not out.exists()  # the earlier export's model is gone with the export that named it
    exported = yaml.safe_load((tmp_path / "studies" / "unet-mars.best.yaml").read_text())
    assert exported["trial"] == best.trial and "model" not in exported


def test_a_kept_model_that_does_not_load_is_named_by_its_own_path(tmp_path: Path) -> None:
    """Keras reads a copy with a .keras suffix; the message names the kept file, never that copy."""
    from marstune.tuning.errors import ModelError
    from marstune.tuning.train.saved import kept_model

    artifact = tmp_path / "0b1c2d3e-kept-model"
    artifact.write_bytes(b"PK\x03\x04 not a whole archive")
    with pytest.raises(ModelError) as raised, kept_model(artifact):
        pass
    assert str(raised.value).startswith(f"kept model {artifact} is not a Keras archive"), raised.value
    assert "tune-model-" not in str(raised.value)


def test_a_kept_model_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    folder = tmp_path / "artifacts"
    source = tmp_path / "model.keras"
    source.write_bytes(b"x" * 3_000_000)
    artifact_id, sha256 = artifacts.write_whole(folder, source)
    assert (folder / artifact_id).read_bytes() == source.read_bytes()
    assert sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert [p.name for p in folder.iterdir()] == [artifact_id]  # no temporary file left
    source.unlink()
    with pytest.raises(FileNotFoundError):
        artifacts.write_whole(folder, source)
    assert [p.name for p in folder.iterdir()] == [artifact_id]


def test_a_retry_starts_without_the_dead_attempts_model_links(sqlite_url: str) -> None:
    """Optuna's retry callback copies every system attribute of the dead attempt, its model link too."""
    from marstune.tuning.search.keeping import ModelKeeper

    storage = open_storage(sqlite_url, create=True)
    study = optuna.create_study(study_name="s", storage=storage)
    link = artifacts.link("dead-attempts-model", "0" * 64)
    retry = optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING, system_attrs={"failed_trial": 0, **link}
    )
    study.add_trial(retry)
    trial = study.ask()
    frozen = storage.get_trial(trial._trial_id)
    assert artifacts.inherited_links(frozen.system_attrs) == list(link)
    keeper = ModelKeeper(sqlite_url, "s", 2)
    try:
        keeper.forget_inherited(trial, frozen.system_attrs)
    finally:
        keeper.close()
    assert not any(k.startswith(artifacts.PREFIX) for k in storage.get_trial(trial._trial_id).system_attrs)
    assert artifacts.inherited_links(dict(link)) == []  # a first attempt keeps its own links
