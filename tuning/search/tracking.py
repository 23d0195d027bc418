"""`--mlflow URI`: every trial is also an MLflow run (the experiment is named after the study).

A run gets the trial's configuration as params, its validation mIoU per epoch as the metric `val_miou`
(step = epoch, while it trains), then per epoch its `loss`, `val_loss` and `iou_<class>`, its final value
as `best_val_miou`, its state as the run status, and its kept model as a logged Keras model
(`runs:/<run id>/model`: mlflow.keras.load_model reads it, the model registry takes it). The study
storage stays the source of truth: MLflow is a mirror for teams that
track everything there, so a tracking server that stops answering mid-study costs one warning line, not
the study. Only the engines that train in their own process (optuna, keras-tuner) track.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marstune.tuning.errors import MissingExtraError, StorageError, UsageError, redact, remember_secrets

if TYPE_CHECKING:
    import keras
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    from mlflow.models import ModelSignature

STATUS = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}
_BRIEF = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


class MlflowTracker:
    def __init__(self, uri: str, study: str, storage: str, *, quiet: bool = False) -> None:
        from marstune.tuning.study.urls import same_database

        if same_database(uri, storage):  # MLflow would add its tables (and its alembic_version) to it
            raise UsageError(
                f"--mlflow {redact(uri)} is the study's own database; give MLflow one of its own, "
                "e.g. --mlflow sqlite:///studies/mlflow.db"
            )
        try:
            from mlflow import MlflowClient
        except ImportError:
            raise MissingExtraError(
                "--mlflow needs mlflow, which is not installed: pip install 'marstune[mlflow]'"
            ) from None
        self.uri, self.study = uri, study
        if quiet:
            quiet_mlflow()
        # MLflow retries a server that does not answer 7 times with backoff, 120 s a try: `--mlflow` with a
        # wrong port sat silent for 4 minutes. A mirror asks briefly; the user's own MLFLOW_* settings win.
        for name, value in _BRIEF.items():
            os.environ.setdefault(name, value)
        remember_secrets(uri)  # MLflow's own messages may quote the URI
        try:  # the server is asked once, up front: a wrong URI is one line before any training
            # a database or file store is opened by the constructor itself
            self.client: MlflowClient | None = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(study)
            self.experiment = found.experiment_id if found else self.client.create_experiment(study)
        except Exception as exc:
            if "filesystem tracking backend" in str(exc):  # MLflow 3 refuses file stores unless told
                raise StorageError(
                    f"MLflow no longer takes a folder or file:// store ({redact(uri)}); use a database, e.g. "
                    "--mlflow sqlite:///studies/mlflow.db, or set MLFLOW_ALLOW_FILE_STORE=true"
                ) from None
            why = _first_words(exc)
            raise StorageError(f"cannot reach MLflow at {redact(uri)}: {why}; check --mlflow") from None

    def _call(self, what: str, *args: Any, **kwargs: Any) -> Any:
        if self.client is None:
            return None
        try:
            return getattr(self.client, what)(*args, **kwargs)
        except Exception as exc:  # a mirror: the study goes on without it
            print(
                f"warning: MLflow at {redact(self.uri)} failed ({_first_words(exc)}); tracking stops here",
                file=sys.stderr,
            )
            self.client = None
            return None

    def start(self, number: int, config: Mapping[str, Any]) -> str | None:
        """An MLflow run for trial `number`; returns its id (None once tracking stopped)."""
        from mlflow.entities import Param

        tags = {"tune.study": self.study, "tune.trial": str(number)}
        run = self._call("create_run", self.experiment, run_name=f"trial-{number}", tags=tags)
        if run is None:
            return None
        params = [Param(k, str(v)) for k, v in sorted(config.items())]
        self._call("log_batch", run.info.run_id, params=params)
        return str(run.info.run_id)

    def epoch(self, run_id: str | None, epoch: int, value: float) -> None:
        if run_id is not None:
            self._call("log_metric", run_id, "val_miou", value, step=epoch)

    def finish(
        self,
        run_id: str | None,
        state: str,
        value: float | None,
        model: Path | None = None,
        *,
        epochs: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """End the run: per-epoch loss, validation loss and per-class IoU (step = epoch) from the
        trial's epoch log, the best value, the kept model as an MLflow Keras model, the status."""
        if run_id is None:
            return
        if metrics := epoch_metrics(epochs):
            self._call("log_batch", run_id, metrics=metrics)
        if value is not None:
            self._call("log_metric", run_id, "best_val_miou", value)
        if model is not None and model.is_file():
            self._log_model(run_id, model)
        self._call("set_terminated", run_id, status=STATUS[state])

    def _log_model(self, run_id: str, path: Path) -> None:
        """The kept .keras file as a logged Keras model (flavor keras: loadable with mlflow.keras and
        registrable from runs:/<run>/model), not a plain file."""
        if self.client is None:
            return
        try:
            import keras
            import mlflow

            model = keras.saving.load_model(path, safe_mode=True, compile=False)
            mlflow.set_tracking_uri(self.uri)
            # start_run(run_id) resumes our run; the status is set after, by set_terminated
            with mlflow.start_run(run_id=run_id, log_system_metrics=False):
                mlflow.keras.log_model(
                    model, name=MODEL_NAME, pip_requirements=_requirements(), signature=_signature(model)
                )
        except Exception as exc:  # a mirror: the study goes on without it
            print(
                f"warning: MLflow at {redact(self.uri)} failed ({_first_words(exc)}); tracking stops here",
                file=sys.stderr,
            )
            self.client = None


MODEL_NAME = "model"  # runs:/<run id>/model


def _signature(model: keras.Model) -> ModelSignature:
    """Images (B, 64, 128, 1) in 0..1 -> class probabilities (B, 64, 128, 5), both float32."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    def spec(shape: tuple[int | None, ...]) -> Schema:
        return Schema([TensorSpec(np.dtype("float32"), tuple(-1 if d is None else d for d in shape))])

    return ModelSignature(inputs=spec(model.input_shape), outputs=spec(model.output_shape))


def _requirements() -> list[str]:
    """What loading the model needs, stated (MLflow would otherwise infer it, importing for seconds)."""
    from importlib.metadata import version

    return [f"keras=={version('keras')}", f"tensorflow=={version('tensorflow')}"]


def epoch_metrics(epochs: Sequence[Mapping[str, Any]]) -> list[Metric]:
    """MLflow metrics of an epoch log: loss, val_loss, val_miou and iou_<class>, step = epoch."""
    import time

    from mlflow.entities import Metric

    from marstune.tuning.constants import CLASS_NAMES

    now, metrics = int(time.time() * 1000), []
    for step, row in enumerate(epochs):
        values = {key: row.get(key) for key in ("loss", "val_loss")}
        ious = row.get("per_class_iou") or []
        values.update({f"iou_{name}": iou for name, iou in zip(CLASS_NAMES, ious, strict=False)})
        metrics += [Metric(k, float(v), now, step) for k, v in values.items() if v is not None]
    return metrics


def quiet_mlflow() -> None:
    """`-q`: none of MLflow's own lines ("View run ... at", its database migrations); its warnings and
    errors still show, and ours (a server that stops answering) too."""
    import logging

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _first_words(exc: Exception, limit: int = 200) -> str:
    """The first line of an MLflow error, passwords masked, cut at a word (not mid-word) past `limit`."""
    text = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."
