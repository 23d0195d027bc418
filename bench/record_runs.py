"""`python -m bench record`: record the tabular benchmark, replicated real learning curves of a grid.

Every configuration of bench/curves/grid.yaml is trained `replicates` times (replicate r trains with
seed r: its own initial weights, shuffling and flips; the data and its split are the same for all),
12 epochs, nothing pruned or stopped early, by the service's own training recipe (tuning/train/recipe.py:
the same optimizer, loss, data pipeline and mIoU as a `tune run` trial). Per epoch it logs the
validation mIoU (what a search sees), the mIoU on held-out test pairs (another generator seed; never
used for any selection) and the CPU seconds of the epoch's training and validation (one thread: what
the epoch costs on an idle core; the test evaluation is not charged).

Output: bench/curves/runs.csv, one row per (config_id, replicate, epoch), rewritten whole (temp file
and rename) after every finished run, so it is always complete. Running the command again skips the
finished (configuration, replicate) pairs. All replicates of one configuration are trained together;
configurations go in a space-filling order (bench/grid.py). The replicates of one configuration train
in one child process (one TensorFlow start and data preparation; a fresh graph and seed each run).
On a CPU the corners of `cpu_left_out` are skipped (more than ~10 CPU-minutes a run); with a GPU
(`--device gpu`, or `auto` finding one) the whole grid is recorded. Start it at low priority in the
background:

    nohup nice -n 19 .venv/bin/python -m bench record > ~/record.log 2>&1 &
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench._common import REPO, child_env, positive_int
from bench.grid import GRID_FILE, RUN_COLUMNS, RUNS_FILE, Config, Grid, load_grid, space_filling_order

META_SUFFIX = ".meta.json"  # beside runs.csv: the data fingerprints and where each run was recorded


# ---------------------------------------------------------------------------------------------------------
# The child: one run, printed as JSON on stdout.


def _data(grid: Grid) -> tuple[Any, Any, Any]:
    """(spec, prepared training/validation data, (test images, test labels)); the split never depends on
    the replicate (spec.train.seed stays 0)."""
    from bench._common import make_spec
    from marstune.data.synthetic import synthetic_data

    spec = make_spec(
        "tabular",
        {
            "train": {"epochs": grid.epochs, "patience": 0, "val_fraction": grid.val_fraction, "threads": 1},
            "data": {"synthetic_items": grid.synthetic_items},
            "loss": {
                "class_weight_exponent": grid.fixed.get("class_weight_exponent", 0.5),
                "focal_gamma": grid.fixed.get("focal_gamma", 2.0),
            },
        },
    )
    from marstune.tuning.train.data import prepare_data

    test = synthetic_data(n_train=grid.test_items, n_test=0, seed=grid.test_seed, contamination=0.0)
    return spec, prepare_data(spec), (test.images, test.labels, test.fingerprint)


def train_runs(grid: Grid, config: Config, replicates: list[int], device: str) -> Iterator[dict[str, Any]]:
    """Train `config` once per replicate (seed = the replicate) for grid.epochs; yields each finished run:
    per epoch its val/test mIoU and seconds. The data is prepared once for all of them."""
    import dataclasses

    from marstune.tuning.train.devices import configure

    setup = configure(1 if device == "cpu" else 0, "auto")
    import keras

    from marstune.models.metrics import confusion_matrix, iou_from_confusion, mean_scored
    from marstune.tuning.train import recipe as training

    spec, data, (test_x, test_y, test_fp) = _data(grid)
    full = {**spec.baseline, **grid.fixed, **config}

    class Log(keras.callbacks.Callback):
        """Per epoch: val mIoU from fit's logs, test mIoU from predictions, the epoch's seconds."""

        def __init__(self, batch_size: int) -> None:
            super().__init__()
            self.batch_size = batch_size
            self.rows: list[dict[str, float]] = []
            self.clock = (0.0, 0.0)

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.clock = (time.process_time(), time.perf_counter())

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            # Charged: this epoch's training and validation; the test evaluation below is not.
            cpu, wall = time.process_time() - self.clock[0], time.perf_counter() - self.clock[1]
            predicted = training.predict_labels(self.model, test_x, self.batch_size)
            test = mean_scored(iou_from_confusion(confusion_matrix(test_y, predicted)))
            val = float((logs or {}).get("val_miou", float("nan")))
            self.rows.append(
                {
                    "epoch": epoch + 1,
                    "val_miou": round(val, 5),
                    "test_miou": round(float(test), 5),
                    "cpu_seconds": round(cpu, 3),
                    "wall_seconds": round(wall, 3),
                }
            )

    for replicate in replicates:
        recipe = dataclasses.replace(training.Recipe.of(spec, full, setup), seed=replicate)
        training.fresh_graph(setup, replicate)
        model, _ = training.compile_unet(full, recipe, data)
        log = Log(recipe.batch_size)
        training.fit(model, data, recipe, [log])
        del model
        yield {
            "replicate": replicate,
            "rows": log.rows,
            "device": setup.device,
            "data_fingerprint": data.fingerprint,
            "test_fingerprint": test_fp,
            "train_pairs": len(data.x_train),
            "val_pairs": len(data.x_val),
            "test_pairs": len(test_x),
        }


# ---------------------------------------------------------------------------------------------------------
# The parent: the order of work, resuming, the atomic rewrite of runs.csv.


def read_runs(path: Path, grid: Grid) -> list[dict[str, str]]:
    """The rows of an existing runs.csv; refuses one written for another grid (other columns, or a
    config_id whose hyperparameters differ from this grid's)."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = tuple(reader.fieldnames or ())
        rows = list(reader)
    expected = (*RUN_COLUMNS, *grid.params)
    if columns != expected:
        raise ValueError(f"{path} has columns {list(columns)}, this grid writes {list(expected)}")
    configs = dict(grid.configurations())
    for row in rows:
        config = configs.get(row["config_id"])
        if config is None or any(str(config[k]) != row[k] for k in grid.params):
            raise ValueError(f"{path}: {row['config_id']} is not the same configuration in {GRID_FILE.name}")
    return rows


def write_runs(path: Path, grid: Grid, rows: list[dict[str, Any]]) -> None:
    """The whole file, written beside and renamed over: a reader never sees half a file."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    order = {cid: k for k, (cid, _) in enumerate(grid.configurations())}
    ordered = sorted(rows, key=lambda r: (order[r["config_id"]], int(r["replicate"]), int(r["epoch"])))
    with temp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*RUN_COLUMNS, *grid.params], lineterminator="\n")
        writer.writeheader()
        writer.writerows(ordered)
    os.replace(temp, path)


def _check_meta(path: Path, found: dict[str, Any]) -> None:
    """The first run writes the data fingerprints beside runs.csv; a later run on other data refuses."""
    meta_path = path.with_name(path.name + META_SUFFIX)
    keys = ("data_fingerprint", "test_fingerprint", "train_pairs", "val_pairs", "test_pairs")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if meta and any(meta[k] != found[k] for k in keys):
        mine = {k: found[k] for k in keys}
        raise SystemExit(f"error: {path} was recorded on {meta}, this machine makes {mine}; not mixed")
    machines = sorted({*meta.get("machines", []), f"{platform.node()} {platform.processor() or ''}".strip()})
    devices = sorted({*meta.get("devices", []), found["device"]})
    doc = {**{k: found[k] for k in keys}, "machines": machines, "devices": devices}
    temp = meta_path.with_name(f".{meta_path.name}.tmp")
    temp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(temp, meta_path)


def _gpu_present() -> bool:
    probe = "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=child_env())
    return out.returncode == 0 and out.stdout.strip().splitlines()[-1:] != ["0"]


def _run_child(
    config: Config, replicates: list[int], device: str, grid_file: Path
) -> Iterator[dict[str, Any]]:
    """One child process trains the replicates of one configuration; each run is yielded as soon as it is
    printed, so a child that dies later loses only the run it was training."""
    env = child_env(**({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {}))
    cmd = [sys.executable, "-m", "bench.record_runs", "--one", json.dumps(config)]
    cmd += [",".join(map(str, replicates)), "--grid", str(grid_file), "--device", device]
    with tempfile.TemporaryFile("w+") as errors:
        with subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=errors, text=True
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("{"):
                    yield dict(json.loads(line))
        if proc.returncode != 0:
            errors.seek(0)
            tail = " | ".join(errors.read().strip().splitlines()[-3:])
            raise RuntimeError(f"training {config} exited {proc.returncode}: {tail}")


def plan(grid: Grid, device: str) -> tuple[list[tuple[str, Config]], list[tuple[str, Config]]]:
    """(the configurations to record in order, those left out on this device)."""
    ordered = space_filling_order(grid, grid.configurations())
    if device == "gpu":
        return ordered, []
    return (
        [item for item in ordered if not grid.left_out_on_cpu(item[1])],
        [item for item in ordered if grid.left_out_on_cpu(item[1])],
    )


def _same_device_kind(out: Path, device: str) -> None:
    """A table holds CPU runs or GPU runs, never both: their seconds measure different things (one
    thread's CPU time; a GPU's wall time) and their precision differs (float32; mixed float16)."""
    meta_path = out.with_name(out.name + META_SUFFIX)
    if not meta_path.exists():
        return
    kinds = {d.split(":")[0] for d in json.loads(meta_path.read_text()).get("devices", [])}
    if kinds and kinds != {device}:
        raise SystemExit(
            f"error: {out} holds runs recorded on {'/'.join(sorted(kinds))}, this run would train on "
            f"{device}; pass --out with another file (e.g. {out.with_name(out.stem + '-' + device + '.csv')})"
        )


def status(grid: Grid, out: Path, device: str) -> int:
    """What is recorded: runs done of those planned on this device, and each run's CPU-minutes."""
    rows = read_runs(out, grid)
    todo, left_out = plan(grid, device)
    per_run: dict[tuple[str, str], float] = {}
    for r in rows:
        key = (r["config_id"], r["replicate"])
        per_run[key] = per_run.get(key, 0.0) + float(r["cpu_seconds"])
    total = len(todo) * grid.replicates
    print(
        f"{out}: {len(per_run)} of {total} runs recorded ({device}; {len(left_out)} configurations left out)"
    )
    configs = dict(grid.configurations())
    for (cid, replicate), seconds in sorted(per_run.items()):
        print(f"  {cid} replicate {replicate} {json.dumps(configs[cid])}: {seconds / 60:.2f} CPU-min")
    if per_run:
        minutes = sorted(v / 60 for v in per_run.values())
        print(f"CPU-min a run: median {minutes[len(minutes) // 2]:.2f}, {minutes[0]:.2f}-{minutes[-1]:.2f}")
    return 0


def record(grid: Grid, out: Path, device: str, limit: int | None, grid_file: Path) -> int:
    _same_device_kind(out, device)
    rows: list[dict[str, Any]] = list(read_runs(out, grid))
    done = {(r["config_id"], int(r["replicate"])) for r in rows}
    todo, left_out = plan(grid, device)
    total = len(todo) * grid.replicates
    recorded = sum((cid, r) in done for cid, _ in todo for r in range(grid.replicates))
    print(
        f"grid: {len(grid.configurations())} configurations x {grid.replicates} replicates, "
        f"{grid.epochs} epochs; device {device}; left out here: {len(left_out)} configurations "
        f"({', '.join(cid for cid, _ in left_out) or 'none'}); {recorded} of {total} runs recorded",
        flush=True,
    )
    trained = 0
    for cid, config in todo:
        missing = [r for r in range(grid.replicates) if (cid, r) not in done]
        if limit is not None:
            missing = missing[: max(0, limit - trained)]
        if not missing:
            continue
        started = time.perf_counter()
        for found in _run_child(config, missing, device, grid_file):
            _check_meta(out, found)
            replicate = int(found["replicate"])
            for row in found["rows"]:
                rows.append({"config_id": cid, "replicate": replicate, **row, **config})
            write_runs(out, grid, rows)
            trained, recorded = trained + 1, recorded + 1
            cpu = sum(r["cpu_seconds"] for r in found["rows"])
            last = found["rows"][-1]
            print(
                f"{time.strftime('%H:%M:%S')} {cid} {json.dumps(config)} replicate {replicate}: "
                f"{cpu / 60:.2f} CPU-min ({time.perf_counter() - started:.0f} s wall), epoch "
                f"{last['epoch']} val {last['val_miou']:.4f} test {last['test_miou']:.4f}; "
                f"{recorded}/{total} runs",
                flush=True,
            )
            started = time.perf_counter()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench record", description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=GRID_FILE, help="the grid file (default: %(default)s)")
    parser.add_argument(
        "--out", type=Path, default=RUNS_FILE, help="runs.csv to extend (default: %(default)s)"
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="gpu records the whole grid; cpu leaves out the grid file's cpu_left_out (default: auto)",
    )
    parser.add_argument("--limit", type=positive_int, help="stop after this many more runs (default: all)")
    parser.add_argument("--status", action="store_true", help="print what is recorded; train nothing")
    parser.add_argument("--one", nargs=2, metavar=("CONFIG_JSON", "REPLICATES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    grid = load_grid(args.grid)
    device = args.device
    if args.one:  # the child: one configuration, its replicates (comma-separated), one JSON line a run
        replicates = [int(r) for r in args.one[1].split(",")]
        for result in train_runs(
            grid, json.loads(args.one[0]), replicates, "gpu" if device == "gpu" else "cpu"
        ):
            print(json.dumps(result), flush=True)
        return 0
    if device == "auto":
        device = "gpu" if _gpu_present() else "cpu"
    if args.status:
        return status(grid, args.out, device)
    if args.out.exists() and args.out.is_dir():
        raise SystemExit(f"error: --out {args.out} is a folder; give a .csv file path")
    return record(grid, args.out, device, args.limit, args.grid)


if __name__ == "__main__":
    sys.exit(main())
