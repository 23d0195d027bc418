"""The run's ETA: there from the first epoch on, counting down (never up) while nothing happens, and
drawn as a live bar on a terminal; the pool's children send it events that nobody sees."""

from __future__ import annotations

import io

from rich.console import Console

from marstune.tuning.search.eta import Eta, event_line
from marstune.tuning.search.progress import Progress
from marstune.tuning.workers.pool import _pump, _Screen


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_the_eta_exists_from_the_first_epoch_and_never_grows_while_nothing_changes() -> None:
    clock = Clock()
    eta = Eta(target=3, epochs=4, run_started=clock.t, now=clock)
    eta.trial_started(0, done=0)
    assert eta.seconds_left() is None and eta.shown() == "?"
    clock.t += 10
    eta.epoch(0, 0)  # 1 epoch in 10 s; 3 trials x 4 epochs = 12, 11 left
    assert eta.seconds_left() == 110.0
    shown = []
    for _ in range(30):  # a slow epoch: 30 s without an event
        clock.t += 1
        shown.append(eta.seconds_left())
    assert shown == sorted(shown, reverse=True) and shown[-1] == 80.0
    clock.t += 200  # far slower than estimated: it stops at zero, it does not grow
    assert eta.seconds_left() == 0.0
    eta.epoch(0, 1)  # the next event corrects it: 2 epochs in 240 s, 10 left
    assert eta.seconds_left() == 1200.0


def test_finished_trials_set_the_epochs_a_trial_takes() -> None:
    clock = Clock()
    eta = Eta(target=4, epochs=10, run_started=clock.t, now=clock)
    eta.trial_started(0, done=0)
    for epoch in range(2):  # pruned after 2 of 10 epochs
        clock.t += 5
        eta.epoch(0, epoch)
    eta.trial_finished(0, counted=True)
    # 3 trials left at 2 epochs each (the finished ones' average), 5 s an epoch
    assert eta.seconds_left() == 30.0
    eta.trial_finished(1, counted=False)  # a failed trial brings the target no closer
    assert eta.done_in_study == 1


def test_a_terminal_gets_a_live_bar_with_the_eta_and_a_log_gets_lines_only() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, highlight=False)
    progress = Progress("s", 2, epochs=2, console=console)
    progress.trial_started(0, 0, {"levels": 3}, None)
    progress.epoch(0, 0, 0.5)
    progress.close()
    drawn = screen.getvalue()
    assert "study s" in drawn and "0/2 trials" in drawn and "━" in drawn  # the bar
    after_the_epoch = drawn.split("epoch 1/2")[-1]
    assert "study s" in after_the_epoch and "ETA ?" not in after_the_epoch  # redrawn with an estimate

    log = io.StringIO()
    plain = Progress("s", 2, epochs=2, console=Console(file=log, force_terminal=False, width=120))
    plain.trial_started(0, 0, {"levels": 3}, None)
    plain.epoch(0, 0, 0.5)
    plain.close()
    assert "━" not in log.getvalue() and "trial 0 epoch 1/2" in log.getvalue()


def test_the_pool_shows_a_childs_lines_but_not_its_events(capsys: object) -> None:
    child = io.StringIO(
        "trial 0 (1 of 2) levels=3\n"
        + event_line(kind="start", trial=0, done=0)
        + "\n"
        + event_line(kind="epoch", trial=0, epoch=0)
        + "\n  trial 0 epoch 1/2 val mIoU 0.5\n"
    )
    _pump(child, "[w0] ", _Screen(None))
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert err == "[w0] trial 0 (1 of 2) levels=3\n[w0]   trial 0 epoch 1/2 val mIoU 0.5\n"
