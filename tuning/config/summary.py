"""The few lines of a spec a person reads at the start of a run (the full spec: `--verbose`, or
`tune status --spec`). Internal settings (the analytic objective's fault injection, noise, the surrogate)
appear only when the objective is not the U-Net, where they decide what runs."""

from __future__ import annotations

from marstune.tuning.config.space import Categorical, Float, Int, Param
from marstune.tuning.config.spec import Spec


def _range(param: Param) -> str:
    if isinstance(param, Categorical):
        return "{" + ",".join(str(c) for c in param.choices) + "}"
    log = " log" if param.log else ""
    if isinstance(param, Int):
        step = f" step {param.step}" if param.step != 1 else ""
        return f"{param.low}..{param.high}{step}{log}"
    assert isinstance(param, Float)
    return f"{param.low:g}..{param.high:g}{log}"


def spec_summary(spec: Spec, *, where: str) -> str:
    """Four lines or so: what is searched, how, and how each trial trains; `where` names the storage."""
    s, t = spec.search, spec.train
    timeout = f", timeout {s.timeout:g}s" if s.timeout else ""
    lines = [
        f"study {spec.study} on {where}: {s.engine} engine, {s.sampler} sampler, {s.pruner} pruner, "
        f"{s.trials} trials{timeout}",
        "  space: " + ", ".join(f"{name} {_range(p)}" for name, p in spec.space.params.items()),
    ]
    if spec.objective.kind == "unet":
        loss = "" if "loss" in spec.space.params else f", loss {spec.loss.name}"
        lines.append(
            f"  train: {t.epochs} epochs, batch {t.batch_size}, {t.optimizer} lr {t.learning_rate:g}, "
            f"patience {t.patience}{loss}"
        )
    else:
        o = spec.objective
        extra = {"analytic": f"noise {o.noise:g}, fail_trials {o.fail_trials}", "replay": o.surrogate}
        lines.append(f"  objective: {o.kind} ({extra[o.kind]}), {t.epochs} epochs, patience {t.patience}")
    lines.append(f"  the full spec: --verbose, or `tune status --spec --study {spec.study}`")
    return "\n".join(lines)
