"""The one progress line of a training epoch, printed alike by `tune run`'s trials and `tune pix2pix`:

      trial 3 epoch 2/5  val mIoU 0.4123  best so far 0.4500  elapsed 1m02s  ETA 4m10s
      pix2pix epoch 2/5  d_loss 1.23  g_loss 3.41  val mIoU 0.4123  elapsed 0m41s  ETA 2m03s

One line when an epoch ends, never a live per-batch bar: a bar needs a per-batch callback, and any
per-batch hook makes Keras copy every batch's logs to the host (measured slower). A line per epoch also
reads the same in a terminal and in a log file. No Keras here: the search's progress imports this too.
"""

from __future__ import annotations

from collections.abc import Mapping


def clock(seconds: float) -> str:
    """0m42s, 12m05s, 3h07m: as precise as a person reading a progress line needs."""
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def eta(elapsed: float, done: int, left: int) -> str:
    """The time `left` more units take at the pace of the `done` ones so far; "?" before the first."""
    if done <= 0:
        return "?"
    return clock(elapsed / done * max(0, left))


def epoch_line(
    label: str, epoch: int, epochs: int, fields: Mapping[str, str], elapsed: float, left: str
) -> str:
    """`label` epoch `epoch`/`epochs` (1-based), then each field as "name value", elapsed and ETA."""
    shown = "".join(f"  {name} {value}" for name, value in fields.items())
    return f"  {label} epoch {epoch}/{epochs}{shown}  elapsed {clock(elapsed)}  ETA {left}"
