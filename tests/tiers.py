"""Which tier a test lands in, decided by what it uses, never by hand.

A test is `slow` (the full tier, `make test`) when it, any fixture it requests, or any helper of the
test suite it calls (followed through tests/ modules, nested functions and lambdas) uses one of:

- a process of its own: anything from `subprocess` (a `tune` command, a server, `ray start`, initdb,
  docker-compose) or the helpers built on it (`run_tune`, `start_cluster`, `pg_server`, ...);
- a fixture that starts something: its own PostgreSQL server, a Ray cluster, a browser, a dashboard
  or MLflow server; or a parameter naming one (the Ray engine needs a Ray cluster); a case
  parametrized onto the shared PostgreSQL server (its SQLite twin stays quick);
- a real Keras training: a call of `.fit(...)` or `.train_on_batch(...)`, or a U-Net objective named
  in its settings (`objective.kind=unet`, in its code or a module constant it reads).

Everything else is quick (`make test-quick`). A new test that starts a server or trains a model lands
in the full tier by itself; `pytest --collect-only -m slow` shows where each test went, and
`slow_reason` says why. The rules read code, so they predict; in the quick tier tests/conftest.py also
watches (an audit hook) and fails a quick test that starts a process anyway, naming this file.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable

# Fixture name -> what it starts. Requested directly or through another fixture (pytest's closure).
SLOW_FIXTURES = {
    "pg_instance": "a PostgreSQL server of its own",
    "ray_cluster": "a Ray cluster",
    "browser": "a browser",
    "dashboard": "a dashboard server",
    "mlflow_server": "an MLflow server",
}
# Module -> the calls of it that start a process of the test's own (its types alone start nothing).
SLOW_MODULE_CALLS = {"subprocess": {"run", "Popen", "call", "check_call", "check_output"}}
# Attribute or global names whose call means real training or a process.
# Names are read from a function's code, so a helper imported inside the function counts too.
SLOW_NAMES = {
    "fit": "a Keras training",
    "train_on_batch": "a Keras training",
    "train_step": "a Keras training",
    "RandomSearch": "a Keras Tuner search (trainings)",
    "Popen": "a process of its own",
    "system": "a process of its own",
    "posix_spawn": "a process of its own",
    "Process": "a process of its own",
    "ProcessPoolExecutor": "a process of its own",
    "create_subprocess_exec": "a process of its own",
    "run_tune": "a `tune` subprocess",
    "run_pool": "worker processes",
    "_keep_slot_working": "worker processes",
    "detect_gpus": "a process of its own (nvidia-smi)",
    "start_tune": "a `tune` subprocess",
    "start_worker": "a `tune worker` subprocess",
    "start_cluster": "a Ray cluster",
    "init": "a Ray cluster",
    "pg_server": "a PostgreSQL server of its own",
    "make_instance": "a PostgreSQL server of its own",
    "train_final": "the final Pix2Pix run",
}
# Parameter values that name what a case runs: the Ray engine needs a Ray cluster; a case on the shared
# PostgreSQL server (`STORAGES`) runs on SQLite too, and that twin is the quick tier's.
SLOW_PARAMS = {
    "ray": "a Ray cluster",
    "postgresql": "the shared PostgreSQL server (its SQLite twin is quick)",
    "optuna-dashboard": "a process of its own (the dashboard's parser)",
}
# Functions outside tests/ that start a process, by module and name.
SLOW_CALLABLES = {"bench.curves_export.export": "a process of its own (git)"}
# String constants in a test or its fixtures that name a U-Net training through an engine.
SLOW_STRINGS = {
    "objective.kind=unet": "a Keras training",
    "optuna-dashboard": "a process of its own (the dashboard's parser)",
}


def _code_objects(code: types.CodeType) -> Iterable[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _why(func: Callable[..., object], seen: set[int]) -> str | None:
    """Why `func` is slow, following the test suite's own helpers; None when it is quick."""
    func = getattr(func, "__wrapped__", func)
    code = getattr(func, "__code__", None)
    if code is None or id(code) in seen:
        return None
    seen.add(id(code))
    env = getattr(func, "__globals__", {})
    for co in _code_objects(code):
        for const in co.co_consts:  # a list literal of strings compiles to one tuple constant
            for value in const if isinstance(const, tuple) else (const,):
                if isinstance(value, str) and value in SLOW_STRINGS:
                    return SLOW_STRINGS[value]
        for name in co.co_names:
            if name in SLOW_NAMES:
                return SLOW_NAMES[name]
            target = env.get(name)
            values = (
                [target] if isinstance(target, str) else target if isinstance(target, list | tuple) else []
            )
            for value in values:  # a module's settings, e.g. REAL = ["objective.kind=unet", ...]
                if isinstance(value, str) and value in SLOW_STRINGS:
                    return SLOW_STRINGS[value]
            module = target.__name__ if isinstance(target, types.ModuleType) else name  # or imported here
            if SLOW_MODULE_CALLS.get(module, set()) & set(co.co_names):
                return f"a process of its own ({module})"
            qualified = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"
            if qualified in SLOW_CALLABLES:
                return SLOW_CALLABLES[qualified]
            if isinstance(target, types.FunctionType) and target.__module__.startswith("tests"):
                why = _why(target, seen)
                if why:
                    return f"{why} (through {target.__name__})"
    return None


def slow_reason(
    fixture_names: Iterable[str], params: Iterable[object], functions: Iterable[Callable[..., object]]
) -> str | None:
    """Why a test with these fixtures, parameters and functions (its own and its fixtures') is slow."""
    for param in params:  # a value, or a command line given as a list
        for value in param if isinstance(param, list | tuple) else (param,):
            if isinstance(value, str) and value in SLOW_PARAMS:
                return SLOW_PARAMS[value]
    for name in fixture_names:
        if name in SLOW_FIXTURES:
            return SLOW_FIXTURES[name]
    seen: set[int] = set()
    for func in functions:
        why = _why(func, seen)
        if why:
            return why
    return None
