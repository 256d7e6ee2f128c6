"""The experiment's `solver` section: Caffe's solver settings with their limits (32-bit floats, as
Caffe stores them), each of the six solver types' own defaults, and the combinations Caffe refuses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from orchestrator.config.schema import Count, Float32, Limits, NonNegFloat, PosFloat, rule

Fraction = Annotated[float, Limits(ge=0, lt=1)]  # moving-average decays
F32 = Float32()  # the solver's floats: 32-bit in Caffe


@dataclass
class SolverCfg:
    """Caffe's solver. `prototxt` names the user's own solver file: its values fill the keys
    not given here, and its other fields are kept (orchestrator.config.solverfile)."""

    prototxt: str | None = None
    type: Literal["SGD", "Nesterov", "Adam", "AdaGrad", "RMSProp", "AdaDelta"] = "SGD"
    base_lr: Annotated[PosFloat, F32] = 0.01
    lr_policy: Literal["fixed", "step", "multistep", "poly", "exp", "inv", "sigmoid"] = "fixed"
    gamma: Annotated[float, F32] = 0.1  # > 0 except for sigmoid, where a negative gamma decays (see _gamma_sign)
    power: Annotated[NonNegFloat, F32] = 0.9
    stepsize: Count = 1000
    stepvalue: list[Count] = field(default_factory=list)
    momentum: Annotated[Fraction, F32] | None = None  # None: the type's own (TYPE_DEFAULTS)
    momentum2: Annotated[Fraction, F32] = 0.999  # Adam's beta2
    delta: Annotated[PosFloat, F32] | None = None  # Adam, AdaGrad, RMSProp, AdaDelta: their epsilon
    rms_decay: Annotated[Fraction, F32] | None = None  # RMSProp's moving average of squared gradients
    weight_decay: Annotated[NonNegFloat, F32] = 0.0005
    iter_size: Count = 1
    max_iter: Count = 1000
    clip_gradients: Annotated[float, Limits(gt=0, also=(-1,), hint="-1 turns clipping off"), F32] = -1.0

    @rule("stepvalue", "lr_policy")
    def _stepvalue(self) -> str | None:
        if self.lr_policy == "multistep" and not self.stepvalue:
            return "lr_policy multistep needs a list of iterations"
        if any(a >= b for a, b in zip(self.stepvalue, self.stepvalue[1:], strict=False)):
            return f"must increase (the iterations where lr drops, in order), got {self.stepvalue}"
        return None

    @rule("gamma", "lr_policy")
    def _gamma_sign(self) -> str | None:
        if self.lr_policy != "sigmoid" and self.gamma <= 0:
            return f"must be > 0 for lr_policy {self.lr_policy}, got {self.gamma!r}"
        return None

    @rule("momentum", "type")
    def _no_momentum(self) -> str | None:
        if self.type in ("AdaGrad", "RMSProp") and self.momentum:
            return (
                f"must be 0 for type {self.type}, got {self.momentum!r}: Caffe aborts ('Momentum cannot be "
                f"used with {self.type}'); leave solver.momentum out (or 0), also in the solver file"
            )
        return None

    def caffe_fields(self) -> dict[str, Any]:
        """The SolverParameter fields this section sets, with the type's own defaults for the
        keys left out and only the fields the type reads (Adam's momentum2, RMSProp's rms_decay)."""
        own = TYPE_DEFAULTS[self.type]
        out: dict[str, Any] = {
            "type": self.type,
            "base_lr": self.base_lr,
            "lr_policy": self.lr_policy,
            "gamma": self.gamma,
            "power": self.power,
            "stepsize": self.stepsize,
            "stepvalue": list(self.stepvalue),
            "momentum": own["momentum"] if self.momentum is None else self.momentum,
            "weight_decay": self.weight_decay,
            "iter_size": self.iter_size,
            "max_iter": self.max_iter,
            "clip_gradients": self.clip_gradients,
        }
        if "delta" in own:
            out["delta"] = own["delta"] if self.delta is None else self.delta
        if self.type == "Adam":
            out["momentum2"] = self.momentum2
        if self.type == "RMSProp":
            out["rms_decay"] = own["rms_decay"] if self.rms_decay is None else self.rms_decay
        return out


# Each Caffe solver type's defaults for the keys an experiment leaves out: AdaGrad and RMSProp
# take no momentum (Caffe CHECKs it is 0); AdaDelta's momentum is its decay (0.95, delta 1e-6 as
# in BVLC's examples); Adam's momentum is beta1; delta and rms_decay are Caffe's own defaults.
TYPE_DEFAULTS: dict[str, dict[str, float]] = {
    "SGD": {"momentum": 0.9},
    "Nesterov": {"momentum": 0.9},
    "Adam": {"momentum": 0.9, "delta": 1e-8},
    "AdaGrad": {"momentum": 0.0, "delta": 1e-8},
    "RMSProp": {"momentum": 0.0, "delta": 1e-8, "rms_decay": 0.99},
    "AdaDelta": {"momentum": 0.95, "delta": 1e-6},
}
