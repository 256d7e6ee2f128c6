"""Does a `caffe train` solver state fit the run's net and solver type? (`run --from-snapshot`)

Caffe restores a state by position: one history blob per learnable blob of the net (two for
Adam and AdaDelta), and only aborts on a count mismatch after the run has started; blobs of
another shape are silently reshaped, and the state's weights are copied by layer name, so a
state of another net may "continue" with every weight skipped. The parent compares the
state's history with the net's learnable blobs before training starts.

The net's learnable blobs come from Caffe itself, in a child (building a net may abort):
    python -m orchestrator.run.statecheck TRAIN_PROTOTXT   -> JSON [[layer, index, shape], ...]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from common.errors import UserError

# history blobs per learnable blob, by solver type (Caffe's SGDSolver::PreSolve and the
# AdamPreSolve / AdaDeltaPreSolve that add a second set)
PER_BLOB = {"SGD": 1, "Nesterov": 1, "AdaGrad": 1, "RMSProp": 1, "Adam": 2, "AdaDelta": 2}

Shape = tuple[int, ...]


def _shape(blob: Any) -> Shape:
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    return tuple(int(d) for d in (blob.num, blob.channels, blob.height, blob.width))


def history_shapes(state_file: Path) -> list[Shape]:
    """The shapes of a binary solver state's history blobs, in order."""
    from caffe.proto import caffe_pb2

    state = caffe_pb2.SolverState()
    state.ParseFromString(Path(state_file).read_bytes())
    return [_shape(b) for b in state.history]


def _fmt(shape: Shape) -> str:
    return "x".join(map(str, shape)) or "scalar"


def mismatch(history: list[Shape], learnable: list[tuple[str, int, Shape]], solver_type: str) -> str | None:
    """Why a state with these history blobs cannot continue this net under this solver type."""
    n, k = len(learnable), PER_BLOB[solver_type]
    if len(history) != n * k:
        fits = [t for t, per in PER_BLOB.items() if len(history) == n * per]
        if fits:
            return (
                f"it holds {len(history)} history blobs, {len(history) // n} per learnable blob of this net: "
                f"the state of an {', '.join(fits[:-1])} or {fits[-1]} solver, not of solver.type {solver_type} "
                f"({k} per blob)"
            )
        return (
            f"it holds {len(history)} history blobs; this net has {n} learnable blobs and solver.type "
            f"{solver_type} keeps {k} per blob ({n * k}): a state of another net (other depth or layers)"
        )
    for i, shape in enumerate(history):
        layer, index, want = learnable[i % n]
        if tuple(shape) != tuple(want):
            return (
                f"history blob {i} is {_fmt(shape)}, but this net's blob {index} of layer '{layer}' is "
                f"{_fmt(want)}: a state of another net (other width or layers)"
            )
    return None


def learnable_shapes(prototxt: Path) -> list[tuple[str, int, Shape]]:
    """(layer, blob index, shape) of the net's learnable blobs in Caffe's order, from a child
    that builds the TRAIN net (UserError when Caffe cannot build it)."""
    from common.child import run_child

    with tempfile.TemporaryDirectory(prefix="segorch-statecheck-") as tmp:
        log = Path(tmp) / "statecheck.log"
        res, out = run_child(["-m", "orchestrator.run.statecheck", str(prototxt)], log, timeout=600)
        if res.returncode != 0 or not out.strip():
            raise UserError(
                f"--from-snapshot: the net {prototxt.name} could not be built to compare it with the state "
                f"({res.fatal or res.signal_name or f'exit code {res.returncode}'})",
                "orchestrate check EXPERIMENT shows what is wrong with the net",
            )
    return [(str(a), int(b), tuple(c)) for a, b, c in json.loads(out.strip().splitlines()[-1])]


def check_state_fits(state_file: Path, prototxt: Path, solver_type: str) -> None:
    """UserError saying what differs when the state cannot continue this net and solver type."""
    why = mismatch(history_shapes(state_file), learnable_shapes(prototxt), solver_type)
    if why:
        raise UserError(
            f"--from-snapshot: {state_file.name} does not fit this net and solver: {why}",
            "continue a state with the net and solver type that wrote it; to start from its weights only, "
            "give the .caffemodel as weights: instead of --from-snapshot",
        )


def _child(prototxt: str) -> list[list[Any]]:
    """Build the TRAIN net; its owned (not shared) parameter blobs, as Caffe's learnable_params."""
    import caffe

    from nets.graph import in_phase
    from nets.prototxt import load_net

    caffe.set_mode_cpu()
    net = caffe.Net(prototxt, caffe.TRAIN)
    specs = {x.name: list(x.param) for x in in_phase(load_net(prototxt), "TRAIN")}
    seen: set[str] = set()
    out = []
    for name, layer in zip(net._layer_names, net.layers, strict=True):
        for i, blob in enumerate(layer.blobs):
            shared = specs.get(name, [])[i].name if i < len(specs.get(name, [])) else ""
            if shared and shared in seen:  # a named param seen before: shared, not learnable again
                continue
            if shared:
                seen.add(shared)
            out.append([name, i, list(blob.data.shape)])
    return out


if __name__ == "__main__":
    from common.child import flush_and_exit

    sys.stdout.write(json.dumps(_child(sys.argv[1])) + "\n")
    flush_and_exit(0)
