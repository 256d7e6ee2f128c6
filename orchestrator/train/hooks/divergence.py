"""Apply the divergence rules to the loss (every iteration) and to the statistics; stop on error."""

from __future__ import annotations

from typing import Any

from nets.graph import DATA_TYPES
from orchestrator.contract import Status
from orchestrator.train import rules
from orchestrator.train.loop import Context, Hook

NEVER_ZERO_CHECKED = {"BatchNorm", "Accuracy", "SoftmaxWithLoss", "InfogainLoss", "Silence"}


def exempt_blobs(net: Any) -> set[str]:
    """Blobs that may be all zero in a healthy net: data/label tops, BatchNorm's statistics, losses."""
    out: set[str] = set()
    for name, layer in zip(net._layer_names, net.layers, strict=True):
        if layer.type in DATA_TYPES or layer.type in NEVER_ZERO_CHECKED:
            out.update(net.top_names[name])
            out.update(f"{name}/{i}" for i in range(len(layer.blobs)))
    return out


class DivergenceHook(Hook):
    name = "divergence"

    def __init__(self, thresholds: rules.Thresholds, normalization: str | None) -> None:
        self.t = thresholds
        self.normalization = normalization
        self.history: list[float] = []
        self.warned: set[str] = set()
        self.exempt: set[str] = set()

    def before_train(self, ctx: Context) -> None:
        self.exempt = exempt_blobs(ctx.solver.net)

    def after_step(self, ctx: Context) -> None:
        found = rules.check_loss(ctx.iteration, ctx.loss, self.history, self.t)
        self.history = (self.history + [ctx.loss])[-self.t.loss_window :]
        if ctx.stats is not None:
            found += rules.check_stats(ctx.iteration, ctx.stats, self.t, self.exempt)
        for f in found:
            if f.severity == "error":
                ctx.findings.append(f)
                ctx.findings.append(rules.diagnose(ctx.iteration, f, ctx.last_stats, ctx.lr, self.normalization))
                ctx.request_stop(Status.DIVERGED, f"{f.code}: {f.message}")
                return
            key = f"{f.code}:{f.layer}"
            if key not in self.warned:
                self.warned.add(key)
                ctx.findings.append(f)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "warned": sorted(self.warned)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))
        self.warned = set(state.get("warned", []))
