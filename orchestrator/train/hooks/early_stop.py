"""Early stop and lr-on-plateau: thin adapters around orchestrator.train.decisions.Plateau."""

from __future__ import annotations

from typing import Any

from common.findings import Finding
from orchestrator.contract import Status
from orchestrator.train.decisions import Plateau, reduced_lr
from orchestrator.train.loop import Context, Hook


class _PlateauHook(Hook):
    def __init__(self, metric: str, patience: int, min_delta: float) -> None:
        self.metric = metric
        self.plateau = Plateau(patience, min_delta)

    def after_validation(self, ctx: Context) -> None:
        if ctx.val is not None and ctx.val.get(self.metric) is not None:
            self.plateau.update(ctx.iteration, float(ctx.val[self.metric]))
            if self.plateau.exhausted:
                self.on_plateau(ctx)

    def on_plateau(self, ctx: Context) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"plateau": self.plateau.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau.load_state_dict(state.get("plateau", {}))


class EarlyStopHook(_PlateauHook):
    name = "early_stop"

    def on_plateau(self, ctx: Context) -> None:
        p = self.plateau
        ctx.request_stop(
            Status.EARLY_STOPPED,
            f"{self.metric} did not improve by more than {p.min_delta:g} in "
            f"{p.patience} validations (best {p.best:.4f} at iteration {p.best_iter})",
        )


class LrPlateauHook(_PlateauHook):
    name = "lr_on_plateau"

    def __init__(self, metric: str, patience: int, min_delta: float, factor: float, min_lr: float) -> None:
        super().__init__(metric, patience, min_delta)
        self.factor, self.min_lr = factor, min_lr
        self.base_lr: float | None = None

    def before_train(self, ctx: Context) -> None:
        if self.base_lr is not None:  # resumed: the solver file still holds the original base_lr
            ctx.solver.param.base_lr = self.base_lr

    def keep_solver_lr(self) -> None:
        """On resume with a new solver.base_lr: the user's value wins over a reduced one."""
        self.base_lr = None

    def on_plateau(self, ctx: Context) -> None:
        old = float(ctx.solver.param.base_lr)
        new = reduced_lr(old, self.factor, self.min_lr)
        self.plateau.restart_patience()
        if new < old:
            ctx.solver.param.base_lr = self.base_lr = new
            ctx.findings.append(
                Finding(
                    "info",
                    "lr-reduced",
                    None,
                    f"iteration {ctx.iteration}: {self.metric} plateaued; base_lr {old:g} -> {new:g}",
                    "none needed",
                    {"iteration": ctx.iteration, "from": old, "to": new},
                )
            )

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "base_lr": self.base_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.base_lr = state.get("base_lr")
