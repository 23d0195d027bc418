"""What `tune pix2pix --config` accepts: the keys `tune export-best` writes, with values the run can use.

Checked when the export is read, before any data loads or any file is written: a bad value found later
would fail the run halfway (after its folder exists, blocking the corrected run) or be stored in
run.json, and a misspelt key would be ignored silently, training with the default instead. Each fault is
one line naming the key, the file and the fix. No Keras here.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from marstune.models.settings import LOSS_NAMES
from marstune.tuning.config.space import TUNABLE
from marstune.tuning.config.spec import check_study_name
from marstune.tuning.constants import CLASS_NAMES
from marstune.tuning.errors import SpecError

# The top-level keys of an export: what study/export.best_export writes, and what `tune export-best`
# adds (`model`: the kept model beside the file, `model_sha256` its digest; `recheck`: the re-check's
# candidates).
TOP_KEYS = (
    "kind",
    "format",
    "study",
    "trial",
    "value",
    "metric",
    "config",
    "params",
    "per_class_iou",
    "data",
    "spec",
    "storage",
    "packages",
    "exported_at",
    "model",
    "model_sha256",
    "recheck",
)
DATA_KEYS = ("path", "source", "fingerprint", "synthetic")
# A trial's configuration holds only tunable keys; `lambda` (Pix2Pix's segmentation-loss weight) is the
# one key a user may add, since only the final run reads it.
CONFIG_KEYS = (*TUNABLE, "lambda")
FIX = "fix it in {path} or export again with `tune export-best`"


def check_keys(raw: Mapping[str, Any], path: Path) -> None:
    """Unknown keys are errors (as in specs): a typo such as `lamda` must not train with the default."""
    _known(raw, TOP_KEYS, "at the top level", path)
    if isinstance(raw.get("config"), Mapping):
        _known(raw["config"], CONFIG_KEYS, "under `config:`", path)
    if isinstance(raw.get("data"), Mapping):
        _known(raw["data"], DATA_KEYS, "under `data:`", path)
    if isinstance(raw.get("params"), Mapping):  # the trial's sampled values: searchable keys only
        _known(raw["params"], TUNABLE, "under `params:`", path)
    if isinstance(raw.get("per_class_iou"), Mapping):
        _known(raw["per_class_iou"], CLASS_NAMES, "under `per_class_iou:`", path)


def _known(section: Mapping[str, Any], allowed: Sequence[str], where: str, path: Path) -> None:
    unknown = [str(key) for key in section if key not in allowed]
    if not unknown:
        return
    hints = [_suggest(key) for key in unknown]
    hint = "".join(f" (did you mean {h}?)" for h in hints if h)
    raise SpecError(
        f"--config {path}: unknown key(s) {', '.join(f'`{k}`' for k in unknown)} {where}{hint}; "
        f"allowed there: {', '.join(allowed)}; remove or respell them"
    )


def _suggest(key: str) -> str | None:
    """The nearest known key, wherever it belongs (`lamda` at the top level -> `config.lambda`)."""
    near = difflib.get_close_matches(key, [*TOP_KEYS, *CONFIG_KEYS], n=1, cutoff=0.75)
    if not near:
        return None
    return f"`{near[0]}`" if near[0] in TOP_KEYS else f"`config.{near[0]}`"


def check_values(raw: Mapping[str, Any], path: Path) -> None:
    """The values the run reads besides the model keys (models/unet.validate_config checks those):
    the same rules as a spec's, so a value the search could not have produced is refused."""
    if "study" in raw:
        check_study_name(raw["study"], f"--config {path}, study")  # it names the default run folder
    trial = raw.get("trial", -1)
    if not _is_int(trial):
        raise SpecError(f"--config {path}: `trial` must be an integer, got {trial!r}; {_fix(path)}")
    value = raw.get("value", 0.0)
    if not (_is_real(value) and math.isfinite(value) and 0 <= value <= 1):
        raise SpecError(f"--config {path}: `value` (an mIoU) must be in [0, 1], got {value!r}; {_fix(path)}")
    _check_params(raw.get("params", {}), path)
    _check_per_class(raw.get("per_class_iou"), path)
    data = raw.get("data", {})
    if not isinstance(data, Mapping):
        raise SpecError(f"--config {path}: `data` must be a mapping, got {data!r}; {_fix(path)}")
    if not isinstance(data.get("path"), str | None):
        raise SpecError(f"--config {path}: `data.path` must be a file name or null; {_fix(path)}")
    for key in ("model", "model_sha256"):
        if not isinstance(raw.get(key), str | None):
            raise SpecError(f"--config {path}: `{key}` must be a string or null; {_fix(path)}")
    _check_config(raw["config"], path)


def check_agreement(raw: Mapping[str, Any], path: Path) -> None:
    """A trial's params are part of its config: after the values are known good, never other values."""
    for key, given in raw.get("params", {}).items():
        if key in raw["config"] and raw["config"][key] != given:
            raise SpecError(
                f"--config {path}: params.{key} = {given!r} but config.{key} = {raw['config'][key]!r}; "
                f"the run trains config: make them agree, or {_fix(path)}"
            )


def _check_params(params: Any, path: Path) -> None:
    """The trial's sampled values (no run reads them; people do): plain finite scalars."""
    if not isinstance(params, Mapping):
        raise SpecError(f"--config {path}: `params` must be a mapping, got {params!r}; {_fix(path)}")
    for key, value in params.items():
        if isinstance(value, str | bool) or (_is_real(value) and math.isfinite(value)):
            continue
        raise SpecError(
            f"--config {path}: `params.{key}` must be a finite number, a string or a boolean, "
            f"got {value!r}; {_fix(path)}"
        )


def _check_per_class(ious: Any, path: Path) -> None:
    """The trial's per-class IoU: each a finite number in [0, 1], or null for a class never seen."""
    if ious is None:
        return
    if not isinstance(ious, Mapping):
        raise SpecError(
            f"--config {path}: `per_class_iou` must be a mapping of class -> IoU or null, got {ious!r}; "
            f"{_fix(path)}"
        )
    for name, value in ious.items():
        if value is None or (_is_real(value) and math.isfinite(value) and 0 <= value <= 1):
            continue
        raise SpecError(
            f"--config {path}: `per_class_iou.{name}` must be a finite number in [0, 1] or null, "
            f"got {value!r}; {_fix(path)}"
        )


def _check_config(config: Mapping[str, Any], path: Path) -> None:
    loss = config.get("loss")
    if "loss" in config and not (isinstance(loss, str) and loss in LOSS_NAMES):
        raise SpecError(
            f"--config {path}: `config.loss` must be one of {', '.join(LOSS_NAMES)}, got {loss!r}; "
            f"{_fix(path)}"
        )
    _number(config, "class_weight_exponent", path)
    _number(config, "focal_gamma", path)
    _number(config, "lambda", path)
    _number(config, "learning_rate", path, positive=True)
    size = config.get("batch_size", 1)
    if not (_is_int(size) and size >= 1):
        raise SpecError(
            f"--config {path}: `config.batch_size` must be an integer >= 1, got {size!r}; {_fix(path)}"
        )


def _number(config: Mapping[str, Any], key: str, path: Path, positive: bool = False) -> None:
    """A finite number >= 0 (> 0 with `positive`) if present: nan or inf cannot train nor go into JSON."""
    if key not in config:
        return
    value = config[key]
    if _is_real(value) and math.isfinite(value) and (value > 0 if positive else value >= 0):
        return
    rule = "> 0" if positive else ">= 0"
    raise SpecError(
        f"--config {path}: `config.{key}` must be a finite number {rule}, got {value!r}; {_fix(path)}"
    )


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _fix(path: Path) -> str:
    return FIX.format(path=path)
