"""Spec files: defaults, overrides, unknown keys, and bad YAML refused with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from marstune.tuning.config.spec import DEFAULTS, load_spec, parse_set, safe_load_unique, spec_from_stored
from marstune.tuning.errors import SpecError
from tests.conftest import REPO


def test_the_shipped_spec_matches_design_and_defaults() -> None:
    spec = load_spec(REPO / "studies/unet.yaml")
    assert spec.study == "unet-mars"
    assert spec.raw["space"] == DEFAULTS["space"] and spec.raw["baseline"] == DEFAULTS["baseline"]
    assert spec.space.grid_size() == 3 * 4 * 2 * 3 * 4 * 4  # x 4 losses (one exponent, one gamma point)
    assert spec.space.contains(spec.baseline)


def test_overrides_apply_in_order_file_then_set_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("train: {epochs: 4, batch_size: 8}\nsearch: {sampler: random}\n")
    spec = load_spec(path, ["train.epochs=6", "search.trials=3"], {"train.epochs": 9, "study": "x1"})
    assert (spec.train.epochs, spec.train.batch_size, spec.search.sampler, spec.search.trials) == (
        9,
        8,
        "random",
        3,
    )
    assert spec.study == "x1" and spec.raw["train"]["epochs"] == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: {epoch: 3}\n", "unknown key `epoch`"),
        ("trian: {}\n", "unknown key `trian`"),
        ("train: {epochs: zero}\n", "train.epochs"),
        ("train: {epochs: [1\n", "not valid YAML at line"),
        ("!!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
        ("space: {levels: {type: int, low: 5, high: 2}}\n", "`low` (5) must be <= `high` (2)"),
        ("space: {depth: {type: int, low: 1, high: 2}}\n", "unknown parameter(s) ['depth']"),
        ("space: {levels: {type: integer, low: 1, high: 2}}\n", "`type` must be one of"),
        ("baseline: {base_filters: 16}\n", "`baseline` must give"),
        (
            "baseline: {base_filters: 64, levels: 4, kernel: 3, dropout: 0.2, activation: relu}\n",
            "outside the space",
        ),
        ("- a list\n", "a spec must be a mapping"),
        ("loss: {name: focal}\nloss: {name: crossentropy}\n", "`loss` is given twice"),
        ("loss: {name: focal, focal_gamma: .inf}\n", "loss.focal_gamma: Input should be a finite number"),
        ("loss: {focal_gamma: 1e400}\n", "loss.focal_gamma: Input should be a finite number"),
        ("loss: {focal_gamma: true}\n", "loss.focal_gamma: must be a number, not true/false"),
        ("train: {learning_rate: .nan}\n", "train.learning_rate: Input should be a finite number"),
        ("space: {focal_gamma: {type: float, low: 0.5, high: .inf}}\n", "`high` must be a finite number"),
        ("loss: {class_weight_exponent: 2.0}\n", "set loss.class_weight_exponent inside the space"),
        ("space: {learning_rate: {type: float, low: -1.0, high: 0.01}}\n", "`learning_rate` values must be"),
        ("space: {batch_size: {type: categorical, choices: [0, 8]}}\n", "got [0]"),
        (  # crossentropy trains every trial and reads no gamma: each trial would repeat the same model
            "space: {focal_gamma: {type: float, low: 0.5, high: 3.0}}\n",
            "with loss 'crossentropy', which never reads it",
        ),
        (
            "loss: {name: focal}\nspace: {focal_gamma: {type: categorical, choices: [.inf, 2.0]}}\n",
            "a finite number >= 0, got [inf]",
        ),
        (
            "baseline: {base_filters: 16, levels: 4, kernel: 3, dropout: 0.2, activation: relu,\n"
            "  batch_size: 0}\n"
            "space: {batch_size: {type: categorical, choices: [8, 16]}}\n",
            "baseline `batch_size` must be a whole number >= 1, got 0",
        ),
        (
            "space: {dropout: {type: float, low: 0.2, high: 0.2}}\nsearch: {trials: 2}\n",
            "search.trials 2 is more than the 1 configuration(s)",
        ),
        (
            "loss: {name: crossentropy}\nsearch: {trials: 2}\n"
            "space: {kernel: {type: categorical, choices: [3, 5]}}\n"
            "baseline: {base_filters: 16, levels: 4, kernel: 3, dropout: 0.2, activation: relu,\n"
            "  loss: focal}\n",
            "loss.name = 'crossentropy' but baseline.loss = 'focal'",
        ),
        (
            "space: {kernel: {type: categorical, choices: [3, 5]}}\nsearch: {trials: 3}\n",
            "search.trials 3 is more than the 2 configuration(s) the space holds",
        ),
        ("study: 'bad name!'\n", "study name must be"),
    ],
)
def test_bad_spec_files_are_refused_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_set_values_are_yaml_scalars_and_malformed_sets_are_refused() -> None:
    assert parse_set(["a.b=3", "a.c=[1, 2]", "d=true", "e=x"]) == {
        "a": {"b": 3, "c": [1, 2]},
        "d": True,
        "e": "x",
    }
    with pytest.raises(SpecError, match="key=value"):
        parse_set(["train.epochs"])


def test_an_error_from_a_set_names_the_set_and_a_bool_is_no_trial_number() -> None:
    with pytest.raises(SpecError) as info:
        load_spec(REPO / "studies/unet.yaml", ["objective.fail_trials=[true]"], {"search.trials": 3})
    said = str(info.value)
    assert "fail_trials" in said and "with --set objective.fail_trials, --trials" in said
    assert "!!tags" not in said
    assert load_spec(None, ["objective.fail_trials=[0, 2]"]).objective.fail_trials == [0, 2]
    with pytest.raises(SpecError, match="fail_trials"):
        load_spec(None, ["objective.fail_trials=[-1]"])  # no trial has a negative number


def test_an_exponent_without_a_dot_is_a_float_as_in_yaml_1_2() -> None:
    # PyYAML (YAML 1.1) reads 1e-4 as a string: `low: 1e-4` was "must be a finite number, got '1e-4'"
    spec = load_spec(None, ["space.learning_rate={type: float, low: 1e-4, high: 1E-2, log: true}"])
    assert (spec.space.params["learning_rate"].low, spec.space.params["learning_rate"].high) == (1e-4, 1e-2)
    read = safe_load_unique("a: 1e-4\nb: '1e-4'\nc: 3e\nd: 10")
    assert read == {"a": 1e-4, "b": "1e-4", "c": "3e", "d": 10}


def test_stored_spec_round_trips() -> None:
    spec = load_spec(REPO / "studies/unet.yaml", ["train.epochs=2"])
    again = spec_from_stored(spec.raw)
    assert again.raw == spec.raw and again.train.epochs == 2


def test_a_workers_spec_comes_from_the_study_or_one_clear_error() -> None:
    from marstune.tuning.config.spec import study_spec
    from marstune.tuning.errors import StorageError

    made = load_spec(None, ["train.epochs=3"])
    spec = study_spec("s", made.raw, data_path="/mnt/mars.npz")
    assert spec.train.epochs == 3 and spec.data.path == "/mnt/mars.npz"  # this node's copy of the data
    assert study_spec("s", made.raw).data.path is None
    with pytest.raises(StorageError, match="'s' was not made by `tune run` .*start it with `tune run`"):
        study_spec("s", None)
    ray = {**made.raw, "search": {**made.raw["search"], "engine": "ray"}}
    with pytest.raises(SpecError, match="run by the ray engine; continue it with `tune run --engine ray"):
        study_spec("s", ray)


def test_a_binary_file_passed_as_the_spec_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"  # `--spec data.npz`: a data set or a database instead of the YAML
    path.write_bytes(b"PK\x03\x04\x14\x00\x00\x00\xeb\xfb\xff binary")
    with pytest.raises(SpecError, match="not a text"):
        load_spec(path)


def test_a_dotted_set_changes_one_bound_of_the_space_and_a_section_set_replaces_it() -> None:
    whole = load_spec(REPO / "studies/unet.yaml")
    narrowed = load_spec(REPO / "studies/unet.yaml", ["space.levels.low=3", "baseline.levels=3"])
    assert narrowed.raw["space"]["levels"] == {**whole.raw["space"]["levels"], "low": 3}
    assert list(narrowed.space.params) == list(whole.space.params)  # the rest of the space is kept
    assert narrowed.baseline["levels"] == 3 and narrowed.baseline["kernel"] == whole.baseline["kernel"]
    only = load_spec(
        REPO / "studies/unet.yaml",
        ["space={kernel: {type: categorical, choices: [3, 5]}}", "search.trials=2"],
    )
    assert list(only.space.params) == ["kernel"]
    with pytest.raises(SpecError, match="must be between 1 and 5"):
        load_spec(REPO / "studies/unet.yaml", ["space.levels.high=9"])


def test_the_loss_section_trains_every_trial_when_the_space_does_not_search_it(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"  # no baseline: the seed's model, with this section's loss
    path.write_text(
        "space: {kernel: {type: categorical, choices: [3, 5]}}\n"
        "loss: {name: weighted_crossentropy, class_weight_exponent: 1.0}\n"
        "search: {trials: 2}\n"
    )
    spec = load_spec(path)
    config = spec.config_for({"kernel": 5})
    assert (config["loss"], config["class_weight_exponent"], config["kernel"]) == (
        "weighted_crossentropy",
        1.0,
        5,
    )
    with pytest.raises(SpecError, match="loss.name = 'focal' but baseline.loss = 'crossentropy'"):
        load_spec(path, ["loss.name=focal", "baseline.loss=crossentropy"])
    searched = load_spec(REPO / "studies/unet.yaml", ["loss.name=focal"])  # the baseline trial's loss
    assert searched.baseline["loss"] == "focal" and "loss" in searched.space.params


def test_a_parameter_set_as_a_mapping_replaces_its_definition() -> None:
    spec = load_spec(REPO / "studies/unet.yaml", ["space.focal_gamma={type: categorical, choices: [1, 2]}"])
    assert spec.raw["space"]["focal_gamma"] == {"type": "categorical", "choices": [1, 2]}
    assert spec.raw["space"]["levels"] == DEFAULTS["space"]["levels"]


def test_a_searched_learning_rate_starts_from_the_train_section_and_merge_keys_work(tmp_path: Path) -> None:
    searched = load_spec(None, ["space.learning_rate={type: float, low: 0.0001, high: 0.01, log: true}"])
    assert searched.baseline["learning_rate"] == 0.001  # the baseline trial's, not a random draw
    path = tmp_path / "merge.yaml"
    path.write_text(
        "space:\n  dropout: {<<: &d {type: float, low: 0.0, high: 0.5}, high: 0.3}\n  kernel: {<<: *d}\n"
    )
    with pytest.raises(SpecError, match="kernel"):  # merged in, then refused as a float kernel
        load_spec(path)
    path.write_text("space:\n  dropout: {<<: {type: float, low: 0.0}, high: 0.3}\n")
    assert load_spec(path).raw["space"]["dropout"] == {"type": "float", "low": 0.0, "high": 0.3}
    with pytest.raises(SpecError, match="`epochs` is given twice"):
        load_spec(None, ["train={epochs: 1, epochs: 2}"])
