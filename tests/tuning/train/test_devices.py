"""GPU switches: their selection logic, tested on this CPU-only machine."""

from __future__ import annotations

from marstune.tuning.train.devices import choose_jit, choose_precision, choose_threads, visible_gpus_for


def test_mixed_precision_is_on_by_default_only_with_a_gpu() -> None:
    assert choose_precision("auto", 0) == "float32"
    assert choose_precision("auto", 2) == "mixed_float16"
    assert choose_precision("off", 2) == "float32"
    assert choose_precision("on", 0) == "mixed_float16"


def test_xla_stays_off_on_cpu() -> None:
    assert choose_jit(0) is False and choose_jit(1) is True


def test_threads_split_between_local_workers() -> None:
    assert choose_threads(0, workers=1, cores=2) == 2
    assert choose_threads(0, workers=2, cores=2) == 1
    assert choose_threads(0, workers=4, cores=2) == 1
    assert choose_threads(3, workers=2, cores=2) == 3  # an explicit setting wins


def test_each_local_worker_gets_its_own_gpu() -> None:
    assert [visible_gpus_for(k, 2) for k in range(3)] == ["0", "1", "0"]
    assert visible_gpus_for(0, 0) == ""
    assert visible_gpus_for(1, 4, per_worker=2) == "2,3"
