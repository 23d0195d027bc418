"""The U-Net family: exact architecture of the seed's best, the allowed range, errors, save/load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from marstune.models.unet import (
    ACTIVATIONS,
    MAX_LEVELS,
    ModelConfigError,
    UNetConfig,
    build_unet,
    max_levels,
    validate_config,
)

BASELINE = {"base_filters": 16, "levels": 4, "kernel": 3, "dropout": 0.2, "activation": "relu"}
REPO = Path(__file__).resolve().parents[2]


def tiny(**overrides: object) -> dict[str, object]:
    """A few-hundred-parameter member of the family, cheap to build and run."""
    return {"base_filters": 2, "levels": 2, "kernel": 3, "dropout": 0.0, "activation": "relu", **overrides}


def images(n: int, shape: tuple[int, int, int] = (64, 128, 1), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def conv_layers(model: keras.Model) -> list[keras.layers.Layer]:
    kinds = (keras.layers.Conv2D, keras.layers.Conv2DTranspose)
    return [layer for layer in model.layers if isinstance(layer, kinds)]


@pytest.fixture(scope="module")
def baseline() -> keras.Model:
    return build_unet(BASELINE)


def test_baseline_filter_sequence(baseline: keras.Model) -> None:
    pair = lambda f: [("Conv2D", f, (3, 3))] * 2  # noqa: E731
    up = lambda f: [("Conv2DTranspose", f, (2, 2))]  # noqa: E731
    expected = (
        pair(16) + pair(32) + pair(64) + pair(128)  # encoder
        + pair(256)  # bottleneck: twice the last encoder filters
        + up(128) + pair(128) + up(64) + pair(64) + up(32) + pair(32) + up(16) + pair(16)  # decoder
        + [("Conv2D", 5, (1, 1))]  # head
    )  # fmt: skip
    found = [(type(layer).__name__, layer.filters, layer.kernel_size) for layer in conv_layers(baseline)]
    assert found == expected
    assert baseline.name == "unet"


def test_baseline_layer_settings(baseline: keras.Model) -> None:
    *body, head = conv_layers(baseline)
    for layer in body:
        assert layer.padding == "same"
        assert isinstance(layer.kernel_initializer, keras.initializers.HeNormal), layer.name
        if isinstance(layer, keras.layers.Conv2DTranspose):
            assert layer.strides == (2, 2)
            assert layer.activation is keras.activations.linear
        else:
            assert layer.activation is keras.activations.relu, layer.name
    assert head.activation is keras.activations.softmax
    pools = [layer for layer in baseline.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert [p.pool_size for p in pools] == [(2, 2)] * 4
    drops = [layer for layer in baseline.layers if isinstance(layer, keras.layers.Dropout)]
    assert [d.rate for d in drops] == [0.2] * 9  # after every conv pair: 4 encoder, bottleneck, 4 decoder
    assert baseline.get_layer("bottleneck_conv2").output.shape == (None, 4, 8, 256)


def test_baseline_parameter_count_by_hand(baseline: keras.Model) -> None:
    # A k x k conv from c_in to c_out channels has k*k*c_in*c_out weights + c_out biases.
    encoder = (
        (3 * 3 * 1 * 16 + 16) + (3 * 3 * 16 * 16 + 16)  # 160 + 2,320
        + (3 * 3 * 16 * 32 + 32) + (3 * 3 * 32 * 32 + 32)  # 4,640 + 9,248
        + (3 * 3 * 32 * 64 + 64) + (3 * 3 * 64 * 64 + 64)  # 18,496 + 36,928
        + (3 * 3 * 64 * 128 + 128) + (3 * 3 * 128 * 128 + 128)  # 73,856 + 147,584
    )  # fmt: skip
    bottleneck = (3 * 3 * 128 * 256 + 256) + (3 * 3 * 256 * 256 + 256)  # 295,168 + 590,080
    # Each decoder level: 2x2 transposed conv down to f, concat with the f-channel skip (2f), two convs.
    decoder = (
        (2 * 2 * 256 * 128 + 128) + (3 * 3 * 256 * 128 + 128) + (3 * 3 * 128 * 128 + 128)
        + (2 * 2 * 128 * 64 + 64) + (3 * 3 * 128 * 64 + 64) + (3 * 3 * 64 * 64 + 64)
        + (2 * 2 * 64 * 32 + 32) + (3 * 3 * 64 * 32 + 32) + (3 * 3 * 32 * 32 + 32)
        + (2 * 2 * 32 * 16 + 16) + (3 * 3 * 32 * 16 + 16) + (3 * 3 * 16 * 16 + 16)
    )  # fmt: skip
    head = 1 * 1 * 16 * 5 + 5
    assert (encoder, bottleneck, decoder, head) == (293_232, 885_248, 762_320, 85)
    assert baseline.count_params() == encoder + bottleneck + decoder + head == 1_940_885


def expected_params(base: int, levels: int, kernel: int, channels: int = 1, classes: int = 5) -> int:
    """The same arithmetic as above, for any member of the family."""
    conv = lambda k, c_in, c_out: k * k * c_in * c_out + c_out  # noqa: E731
    total, c_in = 0, channels
    for i in range(levels):
        f = base * 2**i
        total += conv(kernel, c_in, f) + conv(kernel, f, f)
        c_in = f
    f = 2 * c_in
    total += conv(kernel, c_in, f) + conv(kernel, f, f)
    for i in reversed(range(levels)):
        skip = base * 2**i
        total += conv(2, f, skip) + conv(kernel, 2 * skip, skip) + conv(kernel, skip, skip)
        f = skip
    return total + conv(1, f, classes)


@pytest.mark.parametrize("levels", [1, 2, 3, 4, 5])
def test_levels_1_to_5_build_and_run(levels: int) -> None:
    model = build_unet(tiny(levels=levels, base_filters=3, kernel=5))
    assert model.count_params() == expected_params(base=3, levels=levels, kernel=5)
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert len(pools) == levels
    bottom = model.get_layer("bottleneck_conv2").output.shape
    assert bottom == (None, 64 // 2**levels, 128 // 2**levels, 3 * 2**levels)
    assert model(images(1), training=False).shape == (1, 64, 128, 5)


def test_output_is_softmax_over_five_classes(baseline: keras.Model) -> None:
    probs = keras.ops.convert_to_numpy(baseline(images(2), training=False))
    assert probs.shape == (2, 64, 128, 5)
    assert probs.dtype == np.float32
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_each_activation(activation: str) -> None:
    model = build_unet(tiny(activation=activation))
    *body, head = conv_layers(model)
    convs = [layer for layer in body if not isinstance(layer, keras.layers.Conv2DTranspose)]
    assert all(layer.activation is keras.activations.get(activation) for layer in convs)
    probs = keras.ops.convert_to_numpy(model(images(1), training=False))
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)


def test_dropout_is_active_only_in_training() -> None:
    x = images(1)
    still = build_unet(tiny(dropout=0.0))
    np.testing.assert_array_equal(still(x, training=True), still(x, training=False))
    noisy = build_unet(tiny(dropout=0.5))
    assert not np.allclose(noisy(x, training=True), noisy(x, training=False))


@pytest.mark.parametrize("levels", [6, 7])
def test_too_many_levels_refused(levels: int) -> None:
    with pytest.raises(ModelConfigError) as err:
        build_unet({**BASELINE, "levels": levels})
    assert str(err.value) == f"`levels` must be between 1 and 5 for 64x128 inputs, got {levels}"


def test_max_levels_follows_input_shape() -> None:
    assert MAX_LEVELS == max_levels((64, 128, 1)) == 5  # bottleneck 2x4
    assert max_levels((32, 32, 1)) == 3  # 4x4; one more would leave 2x2, narrower than 4
    assert max_levels((48, 96, 1)) == 4  # 3x6; 48 is not divisible by 32
    assert max_levels((63, 128, 1)) == 0
    model = build_unet(tiny(levels=3), input_shape=(32, 32, 3), num_classes=2)
    assert model.output.shape == (None, 32, 32, 2)
    with pytest.raises(ModelConfigError, match=r"^`levels` must be between 1 and 3 for 32x32 inputs, got 4$"):
        build_unet(tiny(levels=4), input_shape=(32, 32, 3))


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("levels", 0, "`levels` must be between 1 and 5 for 64x128 inputs, got 0"),
        ("levels", 2.0, "`levels` must be an integer between 1 and 5 for 64x128 inputs, got 2.0 (float)"),
        ("levels", True, "`levels` must be an integer between 1 and 5 for 64x128 inputs, got True (bool)"),
        ("base_filters", 0, "`base_filters` must be an integer >= 1 (e.g. 8, 16, 32), got 0"),
        ("base_filters", "16", "`base_filters` must be an integer >= 1 (e.g. 8, 16, 32), got '16' (str)"),
        ("kernel", 4, "`kernel` must be an odd integer >= 1 (e.g. 3 or 5), got 4"),
        ("kernel", 3.0, "`kernel` must be an odd integer >= 1 (e.g. 3 or 5), got 3.0 (float)"),
        ("dropout", 1.0, "`dropout` must be a number with 0 <= dropout < 1, got 1.0"),
        ("dropout", -0.1, "`dropout` must be a number with 0 <= dropout < 1, got -0.1"),
        ("dropout", float("nan"), "`dropout` must be a number with 0 <= dropout < 1, got nan"),
        ("dropout", "0.2", "`dropout` must be a number with 0 <= dropout < 1, got '0.2' (str)"),
        ("activation", "tanh", "`activation` must be one of relu, elu, gelu, swish, got 'tanh' (str)"),
        ("activation", "ReLU", "`activation` must be one of relu, elu, gelu, swish, got 'ReLU' (str)"),
        ("activation", None, "`activation` must be one of relu, elu, gelu, swish, got None (NoneType)"),
    ],
)
def test_bad_values_refused_with_one_line(key: str, value: object, expected: str) -> None:
    with pytest.raises(ModelConfigError) as err:
        build_unet({**BASELINE, key: value})
    assert str(err.value) == expected
    assert isinstance(err.value, ValueError)


def test_missing_keys_listed() -> None:
    config = {k: v for k, v in BASELINE.items() if k not in ("kernel", "activation")}
    with pytest.raises(ModelConfigError) as err:
        build_unet(config)
    assert str(err.value) == (
        "U-Net config is missing `kernel`, `activation`; "
        "required keys: base_filters, levels, kernel, dropout, activation"
    )
    with pytest.raises(ModelConfigError, match="must be a mapping with keys base_filters, levels"):
        build_unet([16, 4, 3, 0.2, "relu"])  # type: ignore[arg-type]


def test_bad_shape_and_classes_refused() -> None:
    with pytest.raises(ModelConfigError, match=r"^`input_shape` must be \(height, width, channels\)"):
        validate_config(BASELINE, input_shape=(64, 128))
    with pytest.raises(ModelConfigError, match=r"^`input_shape` 63x128 fits no U-Net level"):
        validate_config(BASELINE, input_shape=(63, 128, 1))
    with pytest.raises(ModelConfigError, match=r"^`num_classes` must be an integer >= 2, got 1$"):
        validate_config(BASELINE, num_classes=1)


def test_extra_keys_ignored_and_numpy_scalars_accepted() -> None:
    config = {**BASELINE, "base_filters": np.int64(16), "dropout": np.float32(0.25), "learning_rate": 1e-3}
    cfg = validate_config(config)
    assert cfg == UNetConfig(base_filters=16, levels=4, kernel=3, dropout=0.25, activation="relu")
    assert type(cfg.base_filters) is int and type(cfg.dropout) is float
    assert cfg.encoder_filters == (16, 32, 64, 128) and cfg.bottleneck_filters == 256


def test_import_and_validation_do_not_load_keras() -> None:
    code = (
        "import sys\n"
        "from marstune.models.unet import ModelConfigError, validate_config\n"
        "try:\n    validate_config({'levels': 3})\nexcept ModelConfigError:\n    pass\n"
        "import marstune.models as models\n"
        "assert models.ModelConfigError is ModelConfigError\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, 'heavy import'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


@pytest.fixture
def mixed_precision() -> object:
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    yield
    keras.mixed_precision.set_dtype_policy("float32")


def test_output_float32_under_mixed_precision(mixed_precision: object) -> None:
    model = build_unet(tiny())
    assert model.get_layer("enc0_conv1").compute_dtype == "float16"
    assert model.get_layer("probs").compute_dtype == "float32"
    assert model.output.dtype == "float32"


def test_saved_model_reloads_safely_with_identical_predictions(baseline: keras.Model, tmp_path: Path) -> None:
    path = tmp_path / "unet.keras"
    baseline.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.name == "unet"
    assert loaded.count_params() == baseline.count_params()
    x = images(2, seed=1)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(x, training=False)),
        keras.ops.convert_to_numpy(baseline(x, training=False)),
    )
