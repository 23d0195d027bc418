"""The tabular task (tuning/search/table.py through `objective.kind: replay`), its search driver
(bench/tabular_search.py) and its statistics (bench/tabular_stats.py), on a small known table."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from bench import tabular_search, tabular_stats
from bench.tabular_search import Method, full_run_seconds, run_study, table_spec
from marstune.tuning.errors import TuneError
from marstune.tuning.search.objective import TrialContext, check_replay, evaluate
from marstune.tuning.search.table import TableReplay
from tests.bench.synthetic_runs import GRID, write_runs

BASE = {
    "loss": "crossentropy",
    "base_filters": 16,
    "levels": 4,
    "kernel": 3,
    "dropout": 0.2,
    "activation": "relu",
}


@pytest.fixture(scope="module")
def table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tabular") / "runs.csv"
    write_runs(path)
    return path


@pytest.fixture(scope="module")
def table(table_path: Path) -> TableReplay:
    return TableReplay.from_csv(table_path)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_trial_replays_one_recorded_run_its_own_curve_and_seconds(
    table_path: Path, table: TableReplay
) -> None:
    rows = _rows(table_path)
    cid = table.config_id(BASE)
    seen = set()
    for seed in range(40):
        run = table.run_for(BASE, seed)
        recorded = [r for r in rows if r["config_id"] == cid and int(r["replicate"]) == run.replicate]
        assert table.curve(BASE, seed) == [(float(r["val_miou"]), float(r["cpu_seconds"])) for r in recorded]
        assert table.curve(BASE, seed) == table.curve(BASE, seed)  # the same seed, the same run
        seen.add(run.replicate)
    assert seen == {0, 1, 2}  # every replicate gets drawn
    finals = [float(r["test_miou"]) for r in rows if r["config_id"] == cid and r["epoch"] == "12"]
    assert table.score(cid) == pytest.approx(sum(finals) / 3)
    assert table.kept_score(cid, 1, 5) == float(
        next(r for r in rows if r["config_id"] == cid and r["replicate"] == "1" and r["epoch"] == "5")[
            "test_miou"
        ]
    )


def test_a_configuration_missing_from_a_partial_table_replays_its_nearest(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    kept = write_runs(path, drop=3)  # the last 3 of 24 configurations not recorded yet
    table = TableReplay.from_csv(path)
    assert len(table.runs) == 21
    missing = {
        "loss": "focal",
        "base_filters": 32,
        "levels": 4,
        "kernel": 3,
        "dropout": 0.2,
        "activation": "relu",
    }
    assert missing not in kept
    near = table.configs[table.config_id(missing)]
    assert sum(near[k] != missing[k] for k in GRID) == 1


def test_the_objective_charges_the_replayed_runs_seconds_and_names_it(
    table_path: Path, table: TableReplay
) -> None:
    method = Method("t", "random", epochs=10)
    spec = table_spec(method, table, table_path, seed=3)
    ctx = TrialContext(7, lambda epoch, value: False)
    best = evaluate(spec.config_for(BASE), spec, ctx)
    run = table.run_for(BASE, 3 * 100_003 + 7)
    assert ctx.attrs["replayed"] == {"config_id": run.config_id, "replicate": run.replicate}
    assert ctx.attrs["compute_seconds"] == pytest.approx(run.seconds[:10].sum(), abs=1e-3)
    assert best == pytest.approx(run.val[:10].max())
    assert len(ctx.attrs["epoch_log"]) == 10


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (
            lambda rows: [{k: v for k, v in r.items() if k != "test_miou"} for r in rows],
            "missing ['test_miou']",
        ),
        (
            lambda rows: [r for r in rows if not (r["config_id"] == "c000" and r["epoch"] == "12")],
            "different numbers of epochs",
        ),
        (
            lambda rows: [{**r, "val_miou": "nan"} if r["config_id"] == "c001" else r for r in rows],
            "non-finite",
        ),
    ],
)
def test_a_broken_table_is_refused_in_one_line(table_path: Path, tmp_path: Path, edit, needle: str) -> None:  # noqa: ANN001
    rows = edit(_rows(table_path))
    bad = tmp_path / "bad.csv"
    with bad.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    spec = table_spec(Method("t", "random"), TableReplay.from_csv(table_path), bad, seed=0)
    with pytest.raises(TuneError, match="is not a replay surrogate") as err:
        check_replay(spec)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_study_runs_to_its_budget_and_scores_what_it_holds(table_path: Path, table: TableReplay) -> None:
    unit = full_run_seconds(table)
    ours = next(m for m in tabular_search.methods() if m.name.startswith("default"))
    rows = run_study(ours, 5, table, table_path, 6 * unit)
    seconds = [r.cpu_seconds for r in rows]
    assert seconds == sorted(seconds) and seconds[-1] >= 6 * unit > seconds[-2]
    assert rows[0].config_id == table.config_id(BASE)  # the baseline trial first
    for r in rows:
        assert r.config_score == table.score(r.config_id)
        assert r.kept_score == table.kept_score(r.config_id, r.replicate, r.kept_epoch)
        assert 1 <= r.kept_epoch <= 10  # the default trains at most 10 epochs: nothing later is kept


def test_the_driver_plays_the_same_trials_as_tune_run(
    table_path: Path, table: TableReplay, tmp_path: Path
) -> None:
    """The in-process driver and the real Optuna engine (`tune run`'s loop) draw the same configurations
    and replay the same runs, trial by trial: the benchmark's rules are the service's."""
    import optuna

    from marstune.tuning.search.engines import ENGINES, load_engine

    ours = next(m for m in tabular_search.methods() if m.name.startswith("default"))
    rows = run_study(ours, 2, table, table_path, 4 * full_run_seconds(table))
    spec = table_spec(ours, table, table_path, seed=2, trials=len(rows))
    url = f"sqlite:///{tmp_path / 'engine.db'}"
    load_engine("optuna").run(spec, url, ENGINES["optuna"].options(quiet=True, max_trials=len(rows)))
    trials = optuna.load_study(study_name=spec.study, storage=url).get_trials()
    ran = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    seconds = np.cumsum([t.user_attrs["compute_seconds"] for t in ran])
    assert np.allclose(seconds, [r.cpu_seconds for r in rows], atol=0.01)
    played = [(t.user_attrs["replayed"]["config_id"], t.user_attrs["replayed"]["replicate"]) for t in ran]
    mine = [(r.config_id, r.replicate) for r in rows]  # what each held after the trial, not what it ran
    best = -math.inf
    held = []
    for t, run in zip(ran, played, strict=True):
        if t.state.name == "COMPLETE" and t.value > best:
            best, current = t.value, run
        held.append(current)
    assert held == mine


def test_statistics_reached_fraction_and_runtime_to_target() -> None:
    a = tabular_stats.Trace(
        np.array([10.0, 20.0, 30.0]), {"config": np.array([0.1, 0.5, 0.4]), "kept": np.zeros(3)}
    )
    b = tabular_stats.Trace(np.array([15.0, 40.0]), {"config": np.array([0.2, 0.3]), "kept": np.zeros(2)})
    assert math.isnan(a.at(5.0, "config")) and a.at(25.0, "config") == 0.5 and a.at(100.0, "config") == 0.4
    assert a.first_reach(0.45, "config", 100.0) == 20.0 and b.first_reach(0.45, "config", 100.0) is None
    assert a.first_reach(0.45, "config", 15.0) is None
    # COCO's expected running time: (20 + the whole budget of the unsuccessful seed) / 1 success
    assert tabular_stats._ert([a, b], 0.45, "config", 50.0) == pytest.approx(70.0)
    assert tabular_stats._ert([b], 0.45, "config", 50.0) == math.inf


def test_search_csv_round_trips_through_the_statistics(table_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "search.csv"
    code = tabular_search.main(
        ["--runs", str(table_path), "--out", str(out), "--seeds", "3", "--budget", "4", "--only", "random"]
    )
    assert code == 0
    rows = _rows(out)
    assert list(rows[0]) == list(tabular_search.COLUMNS)
    assert {r["method"] for r in rows} == {m.name for m in tabular_search.methods() if "random" in m.name}
    traces = tabular_stats.read_results(out)
    assert all(len(by_seed) == 3 for by_seed in traces.values())
    assert tabular_stats.main(["--results", str(out), "--runs", str(table_path)]) == 0


def test_the_readme_recomputation_gives_the_commands_fractions(table_path: Path, tmp_path: Path) -> None:
    """bench/README.md's pandas lines, run on a search.csv, print the fractions tabular-stats prints."""
    import re
    import subprocess
    import sys

    pytest.importorskip("pandas")
    out = tmp_path / "search.csv"
    only = "default"
    assert (
        tabular_search.main(["--runs", str(table_path), "--out", str(out), "--seeds", "4", "--only", only])
        == 0
    )
    readme = (Path(__file__).resolve().parents[2] / "bench" / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme, re.S)
    assert snippet is not None
    code = snippet.group(1).replace("bench/curves/runs.csv", str(table_path))
    code = code.replace("bench/results/search.csv", str(out))
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    table = TableReplay.from_csv(table_path)
    traces = tabular_stats.read_results(out)
    scores = np.array([table.score(c) for c in table.order])
    unit = full_run_seconds(table)
    lines = printed.splitlines()
    assert len(lines) == 2 * 3 * 4 * len(traces)
    for line in lines:
        scoring, p, budget = line.split()[:3]
        method = next(m for m in traces if f" runs {m} " in line)
        target = float(np.percentile(scores, int(p[1:])))
        key = scoring.removesuffix("_score")
        hits = [t.at(int(budget) * unit, key) >= target for t in traces[method].values()]
        assert float(line.split()[-2]) == pytest.approx(np.mean(hits), abs=0.005)


def test_a_recheck_ships_the_best_rechecked_run_and_is_charged(table_path: Path, table: TableReplay) -> None:
    method = next(m for m in tabular_search.methods() if m.recheck and m.epochs == 4)
    rows = run_study(method, 1, table, table_path, 8 * full_run_seconds(table))
    plain = run_study(
        dataclasses.replace(method, recheck=0), 1, table, table_path, 8 * full_run_seconds(table)
    )
    assert len(rows) == len(plain)  # the re-check changes what is shipped, not the search
    for r, p in zip(rows, plain, strict=True):
        assert r.cpu_seconds >= p.cpu_seconds + 12 * 0.5  # at least one full 12-epoch replay charged
        assert r.kept_score == table.kept_score(r.config_id, r.replicate, r.kept_epoch)
    assert any(r.kept_epoch > 4 for r in rows)  # a re-checked model may keep an epoch the search never ran
    assert all(p.kept_epoch <= 4 for p in plain)


def test_evidence_names_a_method_that_beats_random_and_keeps_up(capsys: pytest.CaptureFixture[str]) -> None:
    def traces(config: float, kept: float) -> dict[int, tabular_stats.Trace]:
        rng = np.random.default_rng(int(config * 1000))
        return {
            s: tabular_stats.Trace(
                np.array([1.0, 2.0]),
                {
                    "config": config + 0.01 * rng.standard_normal(2),
                    "kept": kept + 0.01 * rng.standard_normal(2),
                },
            )
            for s in range(60)
        }

    results = {
        "random, full budget": traces(0.30, 0.30),
        "default: better on both": traces(0.35, 0.31),
        "better config, worse kept": traces(0.35, 0.20),
        "no better": traces(0.30, 0.30),
    }
    tabular_stats.evidence(results, 1.0, np.random.default_rng(0), 30)
    printed = capsys.readouterr().out
    listed = printed.split("candidates for the default")[1].splitlines()[1:]
    assert [line.strip() for line in listed if line.strip()] == ["default: better on both  (our default)"]


def test_tune_run_replays_a_table_and_refuses_a_value_it_never_recorded(
    table_path: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    spec = tmp_path / "tab.yaml"
    spec.write_text(
        "study: tab\n"
        "space:\n"
        "  loss: {type: categorical, choices: [crossentropy, focal]}\n"
        "  base_filters: {type: categorical, choices: [8, 16, 32]}\n"
        "baseline: {base_filters: 16, levels: 4, kernel: 3, dropout: 0.2, activation: relu}\n"
        f"objective: {{kind: replay, surrogate: {table_path}}}\n"
        "search: {trials: 4, keep_models: 0}\n"
    )
    url = f"sqlite:///{tmp_path / 'tab.db'}"
    run = [sys.executable, "-m", "marstune.tuning", "run", "--spec", str(spec), "--storage", url, "--quiet"]
    done = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    import optuna

    trials = optuna.load_study(study_name="tab", storage=url).get_trials()
    assert len(trials) >= 4 and all("replayed" in t.user_attrs for t in trials if t.state.name == "COMPLETE")
    spec.write_text(spec.read_text().replace("[8, 16, 32]", "[8, 16, 64]"))
    url2 = f"sqlite:///{tmp_path / 'tab2.db'}"
    run[run.index(url)] = url2
    refused = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and not (tmp_path / "tab2.db").exists()
    assert "base_filters=64 is not one of the recorded choices [8, 16, 32]" in refused.stderr


def test_every_method_replays_the_same_way_twice(table_path: Path, table: TableReplay) -> None:
    """Per-seed results must be reproducible: Hyperband's brackets hang on the study's name."""
    budget = 6 * full_run_seconds(table)
    for method in tabular_search.methods():
        assert run_study(method, 4, table, table_path, budget) == run_study(
            method, 4, table, table_path, budget
        )
