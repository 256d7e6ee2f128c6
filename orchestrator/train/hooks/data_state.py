"""Save and restore the paired data layer's position and RNG, so a resumed run sees the same batches."""

from __future__ import annotations

from typing import Any

from orchestrator.train.loop import Context, Hook


def stateful_layers(net: Any) -> dict[str, Any]:
    """Python layers of `net` that expose get_state/set_state, by layer name."""
    return {
        n: layer
        for n, layer in zip(net._layer_names, net.layers, strict=True)
        if hasattr(layer, "get_state") and hasattr(layer, "set_state")
    }


class DataStateHook(Hook):
    name = "data_state"

    def __init__(self, solver: Any) -> None:
        self.solver = solver
        self.pending: dict[str, Any] = {}

    def before_train(self, ctx: Context) -> None:
        for name, layer in stateful_layers(self.solver.net).items():
            if name in self.pending:
                layer.set_state(self.pending[name])

    def state_dict(self) -> dict[str, Any]:
        return {n: layer.get_state() for n, layer in stateful_layers(self.solver.net).items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pending = dict(state)
