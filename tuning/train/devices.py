"""CPU/GPU selection: threads, memory growth, mixed precision, XLA. GPU paths are switches that turn on
by themselves when a GPU is present; the choice logic is plain functions so it is tested on CPU.

TensorFlow's C++ start-up lines (oneDNN, cudart_stub, cpu_feature_guard, "failed call to cuInit") are
written by absl before its logging is initialised, so TF_CPP_MIN_LOG_LEVEL does not silence them; they
are filtered from stderr while TensorFlow starts ($TUNE_DEBUG=1 or `--verbose` shows them).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# absl's native log lines ("I0000 00:00:1796.. 6224 port.cc:153] ...") and TensorFlow's start-up chatter.
NATIVE_NOISE = re.compile(
    r"^(\[w\d+\] )?([IWEF]\d{4} \d\d:\d\d:[\d.]+\s+\d+ [\w.]+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog"
    r"|To enable the following instructions: .* rebuild TensorFlow)"
)
VERBOSE_ENV = "TUNE_VERBOSE"  # set by `--verbose`: nothing is filtered


def verbose() -> bool:
    return os.environ.get("TUNE_DEBUG") == "1" or os.environ.get(VERBOSE_ENV) == "1"


@contextmanager
def native_noise_filtered() -> Iterator[None]:
    """While the block runs, lines written to file descriptor 2 (by C++ too) that match NATIVE_NOISE are
    dropped; everything else passes through unchanged."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as source:
            for line in source:
                if not NATIVE_NOISE.match(line.decode(errors="replace")):
                    os.write(saved, line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump reads to its end and stops
        thread.join(timeout=10)
        os.close(saved)


@contextmanager
def tensorflow_starting() -> Iterator[None]:
    """Around any first import of TensorFlow (Keras, Keras Tuner): only its warnings and errors, and
    none of its native start-up lines (see the module docstring)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # what absl does honour, once initialised
    with native_noise_filtered():
        yield


_configured: DeviceSetup | None = None


@dataclass(frozen=True)
class DeviceSetup:
    device: str  # "cpu" or "gpu:0,1"
    threads: int  # TF intra-op threads (0 = TF decides)
    precision: str  # keras dtype policy: "float32" or "mixed_float16"
    jit_compile: bool  # XLA: ~6x slower on this CPU, a win on GPUs


def choose_precision(setting: str, n_gpus: int) -> str:
    """auto -> mixed float16 on a GPU (tensor cores, half the memory), float32 on CPU (fp16 is slow there)."""
    if setting == "on":
        return "mixed_float16"
    if setting == "off":
        return "float32"
    return "mixed_float16" if n_gpus > 0 else "float32"


def choose_jit(n_gpus: int) -> bool:
    return n_gpus > 0


def choose_threads(setting: int, workers: int, cores: int | None = None) -> int:
    """Threads per process so that workers x threads <= cores (1-thread processes beat one 2-thread one)."""
    if setting > 0:
        return setting
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def visible_gpus_for(worker_index: int, n_gpus: int, per_worker: int = 1) -> str:
    """CUDA_VISIBLE_DEVICES for local worker k: one GPU each, round-robin when workers outnumber GPUs."""
    if n_gpus <= 0:
        return ""
    first = (worker_index * per_worker) % n_gpus
    return ",".join(str((first + i) % n_gpus) for i in range(min(per_worker, n_gpus)))


def configure(threads: int, mixed_precision: str = "auto") -> DeviceSetup:
    """Configure TensorFlow once per process (must run before the first op); later calls return the same."""
    global _configured
    if _configured is not None:
        return _configured
    with tensorflow_starting():
        import keras
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
    # "5 out of the last 5 calls to <function> triggered tf.function retracing": every trial builds a new
    # model, so retracing is expected here, not a bug to report.
    tf.get_logger().setLevel(logging.ERROR)
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)  # several trials/workers share one GPU
    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
        except RuntimeError:  # TF already ran an op in this process: its thread pools are fixed now
            print(
                f"warning: TensorFlow was already initialised; keeping its threads instead of {threads}",
                file=sys.stderr,
            )
    precision = choose_precision(mixed_precision, len(gpus))
    keras.mixed_precision.set_global_policy(precision)
    device = "gpu:" + ",".join(g.name.rsplit(":", 1)[-1] for g in gpus) if gpus else "cpu"
    _configured = DeviceSetup(device, threads, precision, choose_jit(len(gpus)))
    return _configured
