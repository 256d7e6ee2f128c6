"""Apply the divergence rules to the loss (every iteration) and to the statistics; stop on error."""

from __future__ import annotations

from typing import Any

from nets.graph import CLASS_LOSSES, DATA_TYPES, in_phase
from orchestrator.contract import Status
from orchestrator.train import rules
from orchestrator.train.loop import Context, Hook

NEVER_ZERO_CHECKED = {"BatchNorm", "Accuracy", "SoftmaxWithLoss", "InfogainLoss", "Silence"}


def exempt_blobs(net: Any) -> set[str]:
    """Blobs that may be all zero in a healthy net: data/label tops, BatchNorm's statistics, losses,
    and whatever a loss or Accuracy reads as labels (a label cropped inside the net to a corner
    of class 0 is all zero)."""
    out: set[str] = set()
    for name, layer in zip(net._layer_names, net.layers, strict=True):
        if layer.type in DATA_TYPES or layer.type in NEVER_ZERO_CHECKED:
            out.update(net.top_names[name])
            out.update(f"{name}/{i}" for i in range(len(layer.blobs)))
        if layer.type.endswith("Loss") or layer.type == "Accuracy":
            out.update(list(net.bottom_names[name])[1:])
    return out


def loss_input(net: Any) -> tuple[int | None, int | None]:
    """(pixels per image, batch) of the first class loss's score blob in the live TRAIN net."""
    for name, layer in zip(net._layer_names, net.layers, strict=True):
        if layer.type in CLASS_LOSSES and net.bottom_names[name]:
            shape = net.blobs[net.bottom_names[name][0]].shape
            if len(shape) == 4:
                return int(shape[2] * shape[3]), int(shape[0])
    return None, None


def prototxt_normalization(path: Any) -> str | None:
    """The normalization of the first class loss of a train prototxt (a user's net: its meta
    does not say); None when unreadable."""
    from nets.lossnorm import normalization_of
    from nets.prototxt import load_net

    try:
        net = load_net(path)
    except Exception:  # a diagnosis detail is never worth failing the run
        return None
    return next((normalization_of(x) for x in in_phase(net, "TRAIN") if x.type in CLASS_LOSSES), None)


class DivergenceHook(Hook):
    name = "divergence"
    after = ("stats",)  # reads this step's statistics

    def __init__(self, thresholds: rules.Thresholds, normalization: str | None) -> None:
        self.t = thresholds
        self.normalization = normalization
        self.history: list[float] = []
        self.warned: set[str] = set()
        self.exempt: set[str] = set()
        self.pixels: int | None = None
        self.batch: int | None = None

    def before_train(self, ctx: Context) -> None:
        self.exempt = exempt_blobs(ctx.solver.net)
        self.pixels, self.batch = loss_input(ctx.solver.net)
        if self.normalization is None and ctx.run.train_net.exists():
            self.normalization = prototxt_normalization(ctx.run.train_net)

    def after_step(self, ctx: Context) -> None:
        step = ctx.step
        found = rules.check_loss(ctx.iteration, step.loss, self.history, self.t)
        self.history = (self.history + [step.loss])[-self.t.loss_window :]
        if step.stats is not None:
            found += rules.check_stats(ctx.iteration, step.stats, self.t, self.exempt)
        for f in found:
            if f.severity == "error":
                ctx.findings.append(f)
                momentum = getattr(ctx.exp.solver, "momentum", None)
                ctx.findings.append(
                    rules.diagnose(
                        ctx.iteration,
                        f,
                        ctx.last_stats,
                        step.lr,
                        self.normalization,
                        self.pixels,
                        self.batch,
                        0.9 if momentum is None else float(momentum),
                    )
                )
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
