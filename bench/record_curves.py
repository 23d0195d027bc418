"""`python -m bench record-design`: record real learning curves of the seed's space with `tune run` itself.

The design is the baseline, the 16 corners of the grid over the ordered parameters (base_filters,
levels, kernel, dropout; activation cycles through its choices) and 32 points of a scrambled Sobol
sequence over all five parameters. Each is enqueued into one study and trained by
`tune run --sampler qmc --pruner none` (bench/curves/spec.yaml: 12 epochs, no early stopping), whose
storage keeps every epoch's validation mIoU, per-class IoU and seconds (study/trial_attrs.py's epoch log).

Resumable, in chunks: `--chunk K` stops after K more configurations; run the same command again to go
on. A design point whose trial was interrupted (FAIL) is enqueued again. `python -m bench curves`
turns the database into the compact file kept in the repository (bench/curves/unet-synthetic.json).

The database is not kept in git; the curves file is. On a machine without the database, the first
sitting rebuilds it from the curves file (same spec and data fingerprint, else it refuses), so only the
configurations not yet recorded are trained.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import subprocess
import sys
from typing import Any

from bench._common import REPO, positive_int

SPEC = REPO / "bench" / "curves" / "spec.yaml"
DB = REPO / "bench" / "curves" / "record.db"
KEPT = REPO / "bench" / "curves" / "unet-synthetic.json"
URL = f"sqlite:///{DB}"
SOBOL_POINTS = 32
SOBOL_SEED = 0


def design() -> list[dict[str, Any]]:
    """The configurations to record, baseline first, each once."""
    from scipy.stats import qmc

    from marstune.tuning.config.spec import load_spec

    spec = load_spec(SPEC)
    space = spec.raw["space"]
    filters, kernels = space["base_filters"]["choices"], space["kernel"]["choices"]
    levels, dropout = space["levels"], space["dropout"]
    activations = space["activation"]["choices"]
    corners = itertools.product(
        (filters[0], filters[-1]),
        (levels["low"], levels["high"]),
        (kernels[0], kernels[-1]),
        (dropout["grid"][0], dropout["grid"][-1]),
    )
    edge = [
        dict(base_filters=f, levels=lv, kernel=kn, dropout=dr, activation=activations[k % len(activations)])
        for k, (f, lv, kn, dr) in enumerate(corners)
    ]
    sobol = [
        {
            "base_filters": filters[int(u[0] * len(filters))],
            "levels": levels["low"] + int(u[1] * (levels["high"] - levels["low"] + 1)),
            "kernel": kernels[int(u[2] * len(kernels))],
            "dropout": round(float(dropout["low"] + u[3] * (dropout["high"] - dropout["low"])), 3),
            "activation": activations[int(u[4] * len(activations))],
        }
        for u in qmc.Sobol(d=5, scramble=True, seed=SOBOL_SEED).random(SOBOL_POINTS)
    ]
    # Two Sobol points, then a corner: a recording cut short still spreads over the whole space.
    # The baseline's searched parameters only: spec.baseline also carries the loss settings' defaults.
    points: list[dict[str, Any]] = [{k: spec.baseline[k] for k in space}]
    for k in range(len(sobol) // 2):
        points += [sobol[2 * k], sobol[2 * k + 1], *edge[k : k + 1]]
    unique: list[dict[str, Any]] = []
    for p in points:
        if p not in unique:
            unique.append(p)
    return unique


def _enqueue_missing(points: list[dict[str, Any]]) -> int:
    """Enqueue every design point with no trial that is complete, running or waiting; returns how many."""
    import optuna
    from optuna.trial import TrialState

    from marstune.tuning.study.storage import open_storage

    study = optuna.load_study(study_name="curves", storage=open_storage(URL))
    alive = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    present = [t.params or t.system_attrs.get("fixed_params", {}) for t in study.trials if t.state in alive]
    missing = [p for p in points if p not in present]
    for p in missing:
        study.enqueue_trial(p, user_attrs={"enqueued_as": "design"})
    return len(missing)


def _rebuild_from_kept() -> int:
    """Create the recording's study from the kept curves file: every recorded configuration becomes a
    COMPLETE trial with its epoch log, times and worker, as `tune run` stored it. Returns how many."""
    import optuna
    from optuna.trial import FrozenTrial, TrialState

    from marstune.tuning.config.spec import load_spec
    from marstune.tuning.study.lifecycle import DataInfo, create_or_join
    from marstune.tuning.study.storage import open_storage
    from marstune.tuning.study.trial_attrs import stored_attrs
    from marstune.tuning.train.data import prepare_data

    kept = json.loads(KEPT.read_text())
    spec = load_spec(SPEC)
    prepared = prepare_data(spec)
    recorded = kept["recipe"]["data"]["fingerprint"]
    if prepared.fingerprint != recorded:
        raise SystemExit(
            f"error: {KEPT} was recorded on data {recorded}, this checkout makes {prepared.fingerprint}; "
            f"move the file away to record the whole design again"
        )
    storage = open_storage(URL, create=True)
    data = DataInfo(prepared.source, prepared.fingerprint, spec.data.path, prepared.synthetic)
    study, _ = create_or_join(spec, storage, URL, data, enqueue=False)
    distributions = spec.space.to_optuna()
    for config in kept["configs"]:
        user, system = stored_attrs(
            {
                "epoch_log": config["epochs"],
                "params": config["model_params"],
                "worker": config["worker"],
                "recorded_by": kept["recipe"].get("recorder_commit"),
            }
        )
        study.add_trial(
            FrozenTrial(
                number=0,
                trial_id=0,
                state=TrialState.COMPLETE,
                value=max(row["val_miou"] for row in config["epochs"]),
                values=None,
                datetime_start=datetime.datetime.fromisoformat(config["start"]),
                datetime_complete=datetime.datetime.fromisoformat(config["end"]),
                params=config["params"],
                distributions=distributions,
                user_attrs=user,
                system_attrs=system,
                intermediate_values={k: row["val_miou"] for k, row in enumerate(config["epochs"])},
            )
        )
    storage.engine.dispose()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return len(kept["configs"])


def _completed() -> int:
    from marstune.tuning.study import tables as study_tables

    with study_tables.reading(URL) as conn:
        return study_tables.state_counts(conn, study_tables.study_id(conn, "curves"))["complete"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench record-design", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--chunk",
        type=positive_int,
        help="stop after this many more configurations (default: the whole design)",
    )
    parser.add_argument("--workers", type=positive_int, default=2, help="worker processes (1 thread each)")
    args = parser.parse_args(argv)
    points = design()
    tune = [sys.executable, "-m", "marstune.tuning"]
    common = ["--spec", str(SPEC), "--storage", URL, "--quiet"]
    if not DB.exists() and KEPT.exists():
        print(f"rebuilt {DB.name} from {KEPT.name}: {_rebuild_from_kept()} configurations already recorded")
    if not DB.exists():  # the first sitting: `tune run` creates the study and records the baseline
        code = subprocess.call([*tune, "run", *common, "--trials", "1", "--workers", "1", "--threads", "1"])
        if code != 0:
            return code
    queued = _enqueue_missing(points)
    done = _completed()
    target = min(len(points), done + args.chunk) if args.chunk else len(points)
    print(f"design: {len(points)} configurations; {done} recorded; {queued} enqueued; target {target}")
    if done >= target:
        return 0
    cmd = [*tune, "run", *common, "--trials", str(target), "--workers", str(args.workers), "--threads", "1"]
    return subprocess.call(cmd, cwd=REPO)


if __name__ == "__main__":
    sys.exit(main())
