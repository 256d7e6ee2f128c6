"""The experiment's `checks` section: the limits the divergence rules (orchestrator.train.rules)
apply. Declared here, with the rest of the config, so that loading a config never imports the
training side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from orchestrator.config.schema import Count, Limits, NonNegFloat, NonNegInt, PosFloat, rule

SATURATED_LOSS = 87.3365  # -log(FLT_MIN): SoftmaxWithLoss's clamp when the true class has probability 0


@dataclass
class Thresholds:
    """How often statistics are taken and the limits the rules apply (declared with their
    bounds, loaded by orchestrator.config.schema)."""

    stats_interval: Count = 10
    loss_factor: Annotated[float, Limits(gt=1, hint="a loss this many times the recent median is divergence")] = 10.0
    loss_window: Count = 20
    warmup: NonNegInt = 10
    saturation_loss: PosFloat = SATURATED_LOSS
    update_ratio_max: PosFloat = 1.0
    update_ratio_min: NonNegFloat = 0.0
    zero_blobs: bool = True

    @rule("update_ratio_min", "update_ratio_max")
    def _ratio_order(self) -> str | None:
        ok = self.update_ratio_min < self.update_ratio_max
        return None if ok else f"must be below checks.update_ratio_max ({self.update_ratio_max:g})"
