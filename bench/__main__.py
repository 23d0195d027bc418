"""`python -m bench [TARGET ...] [--quick]`: the performance targets of the service (`make bench`).

The tabular benchmark has commands of its own: `python -m bench record` (train every configuration of
bench/curves/grid.yaml 3 times into bench/curves/runs.csv), `tabular` (every method over 200 seeds on
the recorded table, into bench/results/search.csv) and `tabular-stats` (the tables, from search.csv).
The single-run design and its surrogate: `record-design` (train the design), `curves` (export the
recording), `surrogate` (fit and validate the replay surrogate), `ranking`; and `losses` (does searching
the loss teach big rock?) and `gpu` (trials per hour on one GPU).

Every figure printed is measured in this run; the last lines are one verdict per target:
    TARGET n: <name>: measured X (target >= Y): MET|MISSED
Exit status: 0 all targets met, 1 some missed, 2 a benchmark could not run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback

from bench._common import Outcome, machine_state, say, section

# The learning-curve commands: name -> module with a `main(argv) -> int` (their own flags).
COMMANDS = {
    "record": "bench.record_runs",
    "tabular": "bench.tabular_search",
    "tabular-stats": "bench.tabular_stats",
    "record-design": "bench.record_curves",
    "curves": "bench.curves_export",
    "surrogate": "bench.surrogate",
    "ranking": "bench.ranking",
    "losses": "bench.losses",
    "gpu": "bench.gpu",
}
# name -> (target number, module): run in this order
TARGETS = {
    "search": (1, "bench.search_efficiency"),
    "overhead": (2, "bench.overhead"),
    "memory": (3, "bench.memory"),
    "parallel": (4, "bench.parallel"),
    "storage": (5, "bench.storage_scale"),
}


def _command(name: str, argv: list[str]) -> int:
    """A learning-curve command; a bad file it was given is one line, not a traceback."""
    import json
    import sqlite3

    try:
        return int(importlib.import_module(COMMANDS[name]).main(argv))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, sqlite3.Error) as exc:
        from marstune.tuning.errors import redact

        if isinstance(exc, json.JSONDecodeError):
            reason = f"not a JSON file ({exc.msg})"
        elif isinstance(exc, OSError):
            reason = f"{exc.strerror or type(exc).__name__}: {exc.filename}"
        else:
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        print(f"error: python -m bench {name}: {redact(reason)}; check the files given", file=sys.stderr)
        return 2


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the performance benchmarks (all by default) and print one verdict per target.",
        epilog="examples: python -m bench | python -m bench storage | python -m bench search memory --quick"
        f" | python -m bench {{{','.join(COMMANDS)}}} --help",
    )
    names = [*TARGETS, *(str(n) for n, _ in TARGETS.values())]
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=f"any of {', '.join(names)}")
    parser.add_argument("--quick", action="store_true", help="smallest sizes: a smoke test, not figures")
    args = parser.parse_args(argv)
    by_number = {str(n): name for name, (n, _) in TARGETS.items()}
    chosen = []
    for target in args.targets:
        name = by_number.get(target, target)
        if name not in TARGETS:
            parser.error(f"unknown target {target!r}; choose from {', '.join(names)}")
        chosen.append(name)
    args.targets = [name for name in TARGETS if name in chosen] or list(TARGETS)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        return _command(argv[0], argv[1:])
    args = _parse(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    say(f"tune benchmarks{' (--quick: smoke-test sizes, not the figures)' if args.quick else ''}")
    say(f"start: {machine_state()}")
    outcomes: list[Outcome] = []
    crashed = False
    for name in args.targets:
        number, module = TARGETS[name]
        started = time.perf_counter()
        try:
            outcome = importlib.import_module(module).run(quick=args.quick)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            crashed = True
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            outcome = Outcome(number, name, "nothing", "see above", False, f"the benchmark failed: {reason}")
        say(f"({name}: {time.perf_counter() - started:.0f} s; now {machine_state()})")
        outcomes.append(outcome)
    notes = [f"TARGET {o.number}: {o.note}" for o in outcomes if not o.met and o.note]
    if notes:
        section("closing note on missed targets")
        say(*notes)
    section("summary")
    say(f"end: {machine_state()}")
    say(*(o.line() for o in outcomes))
    return 2 if crashed else 0 if all(o.met for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
