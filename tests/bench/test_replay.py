"""The evaluation side (tuning/search/replay.py, `objective.kind: replay`): it reads the JSON the
fitting side writes and gives the same numbers, deterministically by (configuration, seed), with the
noise structure the file describes, refusing configurations it never saw, on numpy alone."""

from __future__ import annotations

import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.curves_data import Curves, curves_from_doc
from bench.surrogate_fit import features_from_space, fit_mean, fit_surrogate
from marstune.tuning.search.replay import FORMAT, Replay
from tests.bench.synthetic_curves import SPACE, curves_doc

BASELINE = {"base_filters": 16, "levels": 4, "kernel": 3, "dropout": 0.2, "activation": "relu"}


@pytest.fixture(scope="module")
def family() -> Curves:
    return curves_from_doc(curves_doc(n=16, seed=5))


@pytest.fixture(scope="module")
def surrogate_file(family: Curves, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "surrogate.json"
    path.write_text(json.dumps(fit_surrogate(family)))
    return path


def test_json_round_trip_gives_the_fitted_means(family: Curves, surrogate_file: Path) -> None:
    replay = Replay.from_json(surrogate_file)
    _, fit = fit_mean("kron-gp", family, features_from_space(family.space))
    assert fit is not None
    replayed = np.stack([replay.mean_curve(p) for p in family.params])
    assert np.allclose(replayed, fit.fitted, atol=1e-9)  # the file holds the model, to the last digit
    assert replay.epochs == 12 and len(replay.curve(BASELINE, 0)) == 12


def test_a_curve_is_determined_by_configuration_and_seed(surrogate_file: Path) -> None:
    replay = Replay.from_json(surrogate_file)
    other = {**BASELINE, "activation": "gelu"}
    assert replay.curve(BASELINE, 3) == replay.curve(BASELINE, 3)
    assert replay.curve(BASELINE, 3) != replay.curve(BASELINE, 4)
    assert replay.curve({**BASELINE, "base_filters": 16.0, "levels": 4.0}, 3) == replay.curve(BASELINE, 3)
    noise = lambda p, s: np.array(replay.curve(p, s))[:, 0] - replay.mean_curve(p)  # noqa: E731
    assert not np.allclose(noise(BASELINE, 3), noise(other, 3))  # two configurations never share noise
    for miou, seconds in replay.curve(BASELINE, 9):
        assert 0.0 <= miou <= 1.0 and seconds > 0


def test_same_numbers_in_a_fresh_process_importing_neither_sklearn_scipy_nor_bench(
    surrogate_file: Path, tmp_path: Path
) -> None:
    # The module alone: copied out of the package, imported from elsewhere (numpy is all it needs).
    module = Path(__file__).resolve().parents[2] / "tuning" / "search" / "replay.py"
    shutil.copy(module, tmp_path / "replay_alone.py")
    code = (
        "import json, sys; import replay_alone as r\n"
        f"curve = r.Replay.from_json({str(surrogate_file)!r}).curve({BASELINE!r}, 11)\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'scipy', 'bench', 'marstune'})\n"
        "print(json.dumps({'curve': curve, 'heavy': heavy}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(out.stdout)
    assert result["heavy"] == []
    assert [tuple(row) for row in result["curve"]] == Replay.from_json(surrogate_file).curve(BASELINE, 11)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({**BASELINE, "levels": 7}, "outside the recorded range"),
        ({**BASELINE, "base_filters": 12}, "not one of the recorded choices"),
        ({**BASELINE, "activation": "tanh"}, "not one of the recorded choices"),
        ({k: v for k, v in BASELINE.items() if k != "kernel"}, "missing ['kernel']"),
        ({**BASELINE, "learning_rate": 0.01}, "unknown ['learning_rate']"),
    ],
)
def test_configurations_never_recorded_are_refused(surrogate_file: Path, params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Replay.from_json(surrogate_file).curve(params, 0)


def test_a_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"format": "tune learning curves v1"}))
    with pytest.raises(ValueError, match="expected a 'tune replay surrogate v1' file"):
        Replay.from_json(tmp_path / "x.json")


def _flat_doc(level: float, sd: float, ar1: float) -> dict[str, Any]:
    """A surrogate whose mean is `level` everywhere and whose noise is Gaussian with sd and AR(1)."""
    probs = np.linspace(0.0, 1.0, 201)[1:-1]
    gp = {"lengthscales": [1.0] * 5, "variance": 0.0, "bias": 0.0, "linear": 0.0, "offset": level,
          "scale": 1.0, "inputs": [[0.0] * 8], "weights": [[0.0] * 12]}  # fmt: skip
    return {
        "format": FORMAT,
        "epochs": 12,
        "features": features_from_space(SPACE),
        "miou": gp,
        "log_seconds": {**gp, "offset": math.log(10.0)},
        "noise": {
            "miou": {
                "log_sd": [math.log(sd), 0.0, 0.0],
                "ar1": ar1,
                "run_log_sd": 0.0,
                "probabilities": probs.tolist(),
                "quantiles": [statistics.NormalDist().inv_cdf(p) for p in probs],
            },
            "run": {"sd": [0.0] * 12, "chol": np.zeros((12, 12)).tolist()},
            "log_seconds": {"sd": 0.05, "ar1": 0.0},
        },
    }


def test_replayed_noise_has_the_size_and_memory_the_file_says() -> None:
    replay = Replay(_flat_doc(level=0.3, sd=0.04, ar1=0.6))
    runs = np.array([[m for m, _ in replay.curve(BASELINE, seed)] for seed in range(3000)])
    noise = runs - 0.3
    assert np.allclose(noise.std(axis=0), 0.04, rtol=0.1)
    lag1 = np.corrcoef(noise[:, 1:].ravel(), noise[:, :-1].ravel())[0, 1]
    assert abs(lag1 - 0.6) < 0.05
    assert abs(noise.mean()) < 0.003


def test_replayed_scores_stay_in_zero_one() -> None:
    replay = Replay(_flat_doc(level=0.01, sd=0.05, ar1=0.0))
    runs = np.array([[m for m, _ in replay.curve(BASELINE, seed)] for seed in range(300)])
    assert runs.min() == 0.0 and runs.max() <= 1.0
