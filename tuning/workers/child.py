"""The entry point of a local worker process: `python -P -m marstune.tuning.workers.child TASK`.

The protocol between the pool (pool.py) and its children lives here, and only here:
- TASK is a JSON `ChildTask` on the command line: no secret in it (argv is visible to `ps`);
- the storage URL arrives in $TUNE_STORAGE, the same variable users set;
- the exit code says how it ended: 0 the study is done, RECYCLE_EXIT after `max_trials` with the study
  unfinished (the pool starts a fresh process), 1 an error (one line on stderr), 128 + signal number
  when stopped by SIGINT/SIGTERM.
`-P` keeps the working folder off sys.path, so a user's own modules never shadow ours.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from dataclasses import asdict, dataclass

from marstune.tuning.errors import Interrupted, describe, exit_code
from marstune.tuning.search.engines import OptunaOptions
from marstune.tuning.study.lifecycle import DataInfo

# A worker's exit code after `max_trials` when the study is not done: start a fresh one in its place.
# TensorFlow keeps ~40-60 MB of every fitted model after clear_session (bench/memory.py), so a process
# that trains for hours grows by gigabytes; recycling it every few trials keeps memory flat.
RECYCLE_EXIT = 75
MODULE = "marstune.tuning.workers.child"


@dataclass(frozen=True)
class ChildTask:
    """Everything a child needs besides the storage URL: the study, the engine's own options (one
    owner: a new run option reaches the children without an edit here) and the parent to die with."""

    study: str
    options: OptunaOptions  # create=False: the child joins the study with its stored spec
    parent_pid: int = 0  # the child stops when this process dies

    def argv(self) -> list[str]:
        return [sys.executable, "-P", "-m", MODULE, self.to_json()]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ChildTask:
        raw = json.loads(text)
        given = raw["options"]
        data = given.pop("data", None)
        options = OptunaOptions(**given, data=DataInfo(**data) if data is not None else None)
        return cls(study=raw["study"], options=options, parent_pid=raw["parent_pid"])


def die_with_parent(parent: int) -> None:
    """Get SIGTERM when the parent dies (Linux), so no child is orphaned."""
    if parent <= 0:
        return
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def main(argv: list[str]) -> int:
    task = ChildTask.from_json(argv[0])
    die_with_parent(task.parent_pid)
    signal.signal(signal.SIGTERM, _raise_interrupted)  # until the engine installs its own handlers
    from marstune.tuning.search.engines import optuna_engine as engine
    from marstune.tuning.study.urls import resolve_url

    try:
        summary = engine.run(engine.placeholder_spec(task.study), resolve_url(None), task.options)
    except BaseException as exc:  # the boundary of this process: one line and an exit code
        line = describe(exc)
        if line is None and not isinstance(exc, KeyboardInterrupt):
            raise
        if line:
            print(line, file=sys.stderr, flush=True)
        return exit_code(exc)
    return RECYCLE_EXIT if summary.recycle else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
