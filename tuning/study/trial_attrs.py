"""How a trial's measurements are stored, so that optuna-dashboard's trial page stays as wide as the
window: every engine writes the objective's attributes through `stored_attrs`, every reader reads
them back through `per_class_iou` and `epoch_log`.

- The learning curve is Optuna's intermediate values (trial.report, one per epoch: the dashboard plots
  it); the full per-epoch log (per-class IoU, seconds, images/s per epoch) is the trial system
  attribute EPOCH_LOG_ATTR, which the dashboard does not list (it was a 4,000-px-wide user attribute).
- The trial's configuration (what export-best and the re-check train) is the system attribute
  CONFIG_ATTR; the dashboard shows its searched part as the trial's params.
- The per-class IoU is one short user attribute per class (`iou_soil: 0.4123`), next to the others at
  the top of the trial page.
Trials stored before this (user attributes `epoch_log`, `per_class_iou`, `config`) are read the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marstune.tuning.constants import CLASS_NAMES

EPOCH_LOG_ATTR = "tune:epoch_log"  # trial system attribute: one row per epoch
# trial system attribute: the trial's whole configuration (baseline + params: ~160 characters, a page
# wider than the window as a user attribute; the dashboard lists the params themselves)
CONFIG_ATTR = "tune:config"
IOU_PREFIX = "iou_"  # user attributes iou_background, iou_soil, ...: the best epoch's per-class IoU
_OLD_EPOCH_LOG, _OLD_PER_CLASS = "epoch_log", "per_class_iou"  # what the objective hands over


def stored_attrs(attrs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The objective's attributes as (user attributes, system attributes) to store on the trial."""
    user = {k: v for k, v in attrs.items() if k not in (_OLD_EPOCH_LOG, _OLD_PER_CLASS)}
    per_class = attrs.get(_OLD_PER_CLASS)
    if isinstance(per_class, Mapping):
        user.update({f"{IOU_PREFIX}{name}": value for name, value in per_class.items()})
    system = {EPOCH_LOG_ATTR: attrs[_OLD_EPOCH_LOG]} if _OLD_EPOCH_LOG in attrs else {}
    return user, system


def trial_config(system_attrs: Mapping[str, Any], user_attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The configuration the trial trained (None for a trial made outside `tune run`)."""
    found = system_attrs.get(CONFIG_ATTR, user_attrs.get("config"))
    return dict(found) if isinstance(found, Mapping) else None


def per_class_iou(user_attrs: Mapping[str, Any]) -> dict[str, float | None] | None:
    """The best epoch's IoU per class name, or None when the trial recorded none."""
    if any(f"{IOU_PREFIX}{name}" in user_attrs for name in CLASS_NAMES):
        return {name: user_attrs.get(f"{IOU_PREFIX}{name}") for name in CLASS_NAMES}
    old = user_attrs.get(_OLD_PER_CLASS)
    return dict(old) if isinstance(old, Mapping) else None


def epoch_log(system_attrs: Mapping[str, Any], user_attrs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The trial's rows per epoch (empty when it logged none)."""
    found = system_attrs.get(EPOCH_LOG_ATTR, user_attrs.get(_OLD_EPOCH_LOG))
    return list(found) if isinstance(found, list) else []
