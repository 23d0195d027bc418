from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from marstune.data.mars import (
    DataError,
    MarsData,
    load_npz,
    save_npz,
    split_indices,
    validate_test_set,
    validate_training_set,
)
from marstune.data.synthetic import generate, synthetic_data


@pytest.fixture(scope="module")
def arrays() -> tuple[np.ndarray, np.ndarray]:
    s = generate(8, 3, seed=0)
    return s.training_set, s.test_set


def test_round_trip_gives_the_arrays_back(tmp_path: Path, arrays: tuple[np.ndarray, np.ndarray]) -> None:
    train, test = arrays
    path = tmp_path / "mars.npz"
    save_npz(path, train, test)
    data = load_npz(path)
    assert data.images.dtype == np.float32 and data.images.shape == (8, 64, 128)
    assert data.labels.dtype == np.uint8 and data.labels.shape == (8, 64, 128)
    assert data.test_images is not None and data.test_images.shape == (3, 64, 128)
    np.testing.assert_array_equal(data.images, train[:, 0].astype(np.float32))
    np.testing.assert_array_equal(data.labels, train[:, 1].astype(np.uint8))
    np.testing.assert_array_equal(data.test_images, test.astype(np.float32))
    assert set(np.unique(data.labels)) <= {0, 1, 2, 3, 4}
    assert data.source == str(path) and len(data) == 8
    assert [p.name for p in tmp_path.iterdir()] == ["mars.npz"]


def test_fingerprint_is_stable_and_tracks_content(
    tmp_path: Path, arrays: tuple[np.ndarray, np.ndarray]
) -> None:
    train, test = arrays
    save_npz(tmp_path / "a.npz", train, test)
    save_npz(tmp_path / "b.npz", train, test)
    changed = train.copy()
    changed[0, 0, 0, 0] += 1.0
    save_npz(tmp_path / "c.npz", changed, test)
    fa, fb, fc = (load_npz(tmp_path / f"{k}.npz").fingerprint for k in "abc")
    assert fa == fb == load_npz(tmp_path / "a.npz").fingerprint
    assert fc != fa
    assert len(fa) == 16 and int(fa, 16) >= 0
    assert synthetic_data(8, 3, seed=0).fingerprint == fa


def test_test_set_is_optional_and_extra_keys_are_ignored(
    tmp_path: Path, arrays: tuple[np.ndarray, np.ndarray]
) -> None:
    train, _ = arrays
    np.savez(tmp_path / "x.npz", training_set=train, notes=np.arange(3))
    data = load_npz(tmp_path / "x.npz")
    assert data.test_images is None and len(data) == 8


def test_max_items_keeps_the_first_pairs(tmp_path: Path, arrays: tuple[np.ndarray, np.ndarray]) -> None:
    train, test = arrays
    save_npz(tmp_path / "m.npz", train, test)
    full, small = load_npz(tmp_path / "m.npz"), load_npz(tmp_path / "m.npz", max_items=2)
    np.testing.assert_array_equal(small.images, full.images[:2])
    np.testing.assert_array_equal(small.labels, full.labels[:2])
    assert small.test_images is not None and len(small.test_images) == 2
    assert small.fingerprint != full.fingerprint
    assert len(load_npz(tmp_path / "m.npz", max_items=100)) == 8


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_max_items_must_be_positive(
    tmp_path: Path, arrays: tuple[np.ndarray, np.ndarray], bad: object
) -> None:
    save_npz(tmp_path / "m.npz", *arrays)
    with pytest.raises(DataError, match="max_items"):
        load_npz(tmp_path / "m.npz", max_items=bad)  # type: ignore[arg-type]


class Marker:
    """Unpickling this creates a file: proof that the loader never unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return (Path.touch, (self.path,))


def _write(path: Path, **arrays: object) -> None:
    with path.open("wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with path.open("wb") as f:  # a file object: np.save would append ".npy" to the name
        np.save(f, arr)


def _good() -> np.ndarray:
    return generate(4, 0, seed=1).training_set


def _with(index: tuple[int | slice, ...], value: float) -> np.ndarray:
    arr = _good()
    arr[index] = value
    return arr


def _train(arr: np.ndarray) -> Callable[[Path], None]:
    return lambda p: _write(p, training_set=arr)


# (name, writer(path), fragments the one-line message must contain)
BAD_FILES: list[tuple[str, Callable[[Path], None], tuple[str, ...]]] = [
    (
        "shape",
        _train(np.zeros((10, 64, 128))),
        ("training_set has shape (10, 64, 128)", "expected (N, 2, 64, 128) = pairs of image and label mask"),
    ),
    ("size", _train(np.zeros((3, 2, 64, 64))), ("training_set", "(3, 2, 64, 64)")),
    ("int", _train(_good().astype(np.int64)), ("training_set", "int64", "astype")),
    ("str", _train(np.full((2, 2, 64, 128), "x")), ("training_set", "<U1", "float")),
    ("nan", _train(_with((1, 0, 3, 4), np.nan)), ("training_set", "1 non-finite", "[1, 0, 3, 4]")),
    ("inf", _train(_with((2, 1, 5, 6), np.inf)), ("training_set", "non-finite", "[2, 1, 5, 6]")),
    ("label 5", _train(_with((0, 1, 0, 0), 5.0)), ("training_set labels", "values 5 ", "0..4")),
    ("label 1.5", _train(_with((0, 1, 9, 9), 1.5)), ("training_set labels", "1.5", "0..4")),
    ("bright", _train(_with((0, 0, 0, 0), 300.0)), ("training_set images", "300", "0..255")),
    ("dark", _train(_with((0, 0, 0, 0), -2.0)), ("training_set images", "-2", "0..255")),
    ("missing key", lambda p: _write(p, images=_good()), ("training_set is missing", "images", "rename")),
    ("not a zip", lambda p: p.write_text("hello"), ("training_set", "not a zip archive", "np.savez")),
    ("npy", lambda p: _save_npy(p, _good()), ("training_set", "single .npy array", "np.savez")),
    (
        "test shape",
        lambda p: _write(p, training_set=_good(), test_set=np.zeros((2, 2, 64, 128))),
        ("test_set has shape (2, 2, 64, 128)", "(M, 64, 128)"),
    ),
    (
        "test nan",
        lambda p: _write(p, training_set=_good(), test_set=np.full((2, 64, 128), np.nan)),
        ("test_set", "16384 non-finite"),
    ),
]


@pytest.mark.parametrize(("name", "writer", "fragments"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_are_refused_with_one_line(
    tmp_path: Path, name: str, writer: Callable[[Path], None], fragments: tuple[str, ...]
) -> None:
    path = tmp_path / "data.npz"
    writer(path)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(DataError) as err:
        load_npz(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert "; expected " in message and " — " in message  # what is expected, then how to fix it
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert sorted(tmp_path.iterdir()) == before


def test_pickled_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    payload = np.empty(1, dtype=object)
    payload[0] = Marker(marker)
    pickle.loads(pickle.dumps(Marker(tmp_path / "check")))  # the payload does run when unpickled...
    assert (tmp_path / "check").exists()
    _write(tmp_path / "data.npz", training_set=payload)
    with pytest.raises(DataError, match="training_set is an object array .* refused without unpickling"):
        load_npz(tmp_path / "data.npz")
    assert not marker.exists()  # ...and the loader never did


@pytest.mark.parametrize("make", [lambda p: None, lambda p: p.mkdir()], ids=["missing", "directory"])
def test_path_must_be_a_file(tmp_path: Path, make: Callable[[Path], None]) -> None:
    path = tmp_path / "nope.npz"
    make(path)
    with pytest.raises(DataError, match="training_set") as err:
        load_npz(path)
    assert "pass the path" in str(err.value)


def test_save_refuses_bad_arrays_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="training_set labels"):
        save_npz(tmp_path / "out.npz", _with((0, 1, 0, 0), 7.0), None)
    with pytest.raises(DataError, match="test_set has shape"):
        save_npz(tmp_path / "out.npz", _good(), np.zeros((1, 64, 127)))
    assert list(tmp_path.iterdir()) == []


def test_validators_accept_the_challenge_layout() -> None:
    validate_training_set(_good(), "x")
    validate_training_set(_good().astype(np.float32), "x")
    validate_test_set(np.full((0, 64, 128), 3.0), "x")
    with pytest.raises(DataError, match="x: training_set is a list"):
        validate_training_set([[1.0]], "x")


def test_masks_without_a_terrain_class_are_refused() -> None:
    background_only = _good()
    background_only[:, 1] = 0.0
    with pytest.raises(DataError, match=r"x: training_set labels .* hold no terrain class 1\.\.4"):
        validate_training_set(background_only, "x")
    one_pixel = background_only.copy()
    one_pixel[2, 1, 10, 10] = 4.0  # one big-rock pixel is a (poor) data set, not an empty one
    validate_training_set(one_pixel, "x")


def test_mars_data_checks_its_arrays() -> None:
    good = synthetic_data(3, 0, seed=0)
    with pytest.raises(DataError, match="images are float64"):
        MarsData(good.images.astype(np.float64), good.labels, None, "s", "f")
    with pytest.raises(DataError, match="labels are int64"):
        MarsData(good.images, good.labels.astype(np.int64), None, "s", "f")


def test_split_is_deterministic_disjoint_and_complete() -> None:
    train, val = split_indices(100, 0.2, seed=3)
    assert len(val) == 20 and len(train) == 80
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    assert np.array_equal(train, np.sort(train)) and np.array_equal(val, np.sort(val))
    again = split_indices(100, 0.2, seed=3)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], val)
    assert not np.array_equal(split_indices(100, 0.2, seed=4)[1], val)


@pytest.mark.parametrize(("n", "fraction", "sizes"), [(3, 0.01, (2, 1)), (3, 0.99, (1, 2)), (2, 0.5, (1, 1))])
def test_split_keeps_one_in_each_part(n: int, fraction: float, sizes: tuple[int, int]) -> None:
    train, val = split_indices(n, fraction, seed=0)
    assert (len(train), len(val)) == sizes


@pytest.mark.parametrize(("n", "fraction"), [(1, 0.5), (0, 0.5), (10, 0.0), (10, 1.0), (10, -0.1)])
def test_split_refuses_impossible_requests(n: int, fraction: float) -> None:
    with pytest.raises(DataError, match="split: "):
        split_indices(n, fraction, seed=0)
