"""Early stop and lr-on-plateau as small state machines over validation numbers (no Caffe)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Plateau:
    """Tracks the best value of a higher-is-better metric and validations since it improved."""

    patience: int
    min_delta: float = 0.0
    best: float = -math.inf
    best_iter: int = -1
    bad: int = 0

    def update(self, iteration: int, value: float) -> bool:
        """Record one validation; True when it is a new best."""
        if value > self.best + self.min_delta:
            self.best, self.best_iter, self.bad = value, iteration, 0
            return True
        self.bad += 1
        return False

    def restart_patience(self) -> None:
        """After acting on a plateau (lr reduced), wait `patience` more validations before the
        next action; the best so far stays the bar to beat."""
        self.bad = 0

    @property
    def exhausted(self) -> bool:
        """Patience used up: `patience` validations in a row without improvement."""
        return self.bad >= self.patience

    def state_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["best"] = None if d["best"] == -math.inf else d["best"]
        return d

    def load_state_dict(self, d: dict[str, Any]) -> None:
        for k, v in d.items():
            setattr(self, k, -math.inf if (k == "best" and v is None) else v)


def reduced_lr(lr: float, factor: float, min_lr: float) -> float:
    """The next learning rate after a plateau, never below min_lr."""
    return max(lr * factor, min_lr)
