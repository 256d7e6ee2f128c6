"""The run's solver.prototxt, optionally built on the user's own solver file.

`solver: {prototxt: my_solver.prototxt}` reads the file with Caffe's parser (an unknown field is
an error naming the file and line). The schema's fields take their values from the file unless
the experiment or `--set` gives them; every other field Caffe knows (regularization_type,
delta, rms_decay, average_loss, ...) is kept as it is. The run replaces only what it manages
itself: the net paths, Caffe's own testing and snapshotting, display, the device and the seed.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

# what the orchestrator manages: never taken from the user's file
MANAGED = (
    "net",
    "net_param",
    "train_net",
    "train_net_param",
    "test_net",
    "test_net_param",
    "train_state",
    "test_state",
    "test_iter",
    "test_interval",
    "test_initialization",
    "snapshot",
    "snapshot_prefix",
    "snapshot_format",
    "snapshot_diff",
    "snapshot_after_train",
    "display",
    "solver_mode",
    "device_id",
    "random_seed",
    "solver_type",
)
# Caffe's deprecated `solver_type` enum -> the `type` string
_LEGACY_TYPES = {
    "SGD": "SGD",
    "NESTEROV": "Nesterov",
    "ADAGRAD": "AdaGrad",
    "RMSPROP": "RMSProp",
    "ADADELTA": "AdaDelta",
    "ADAM": "Adam",
}


def load(path: str | Path) -> Any:
    """SolverParameter from the file (UserError with file and line for a bad field)."""
    from nets.prototxt import load_solver

    return load_solver(path)


def schema_values(param: Any, names: list[str]) -> dict[str, Any]:
    """The values of the schema's solver fields that the file sets explicitly."""
    out: dict[str, Any] = {}
    for name in names:
        if name == "stepvalue":
            if len(param.stepvalue):
                out[name] = [int(v) for v in param.stepvalue]
        elif name == "type":
            if param.HasField("type"):
                out[name] = param.type
            elif param.HasField("solver_type"):
                out[name] = _LEGACY_TYPES[param.SolverType.Name(param.solver_type)]
        elif param.HasField(name):
            value = getattr(param, name)
            out[name] = float(value) if isinstance(value, float) else value
    return out


def merge_into(raw: dict[str, Any], errors: list[str]) -> None:
    """Fill raw['solver'] from the solver file it names, for keys it does not give itself."""
    from common.errors import UserError
    from orchestrator.config.solver import SolverCfg

    solver = raw.get("solver")
    if not isinstance(solver, dict) or not isinstance(solver.get("prototxt"), str):
        return
    try:
        param = load(solver["prototxt"])
    except UserError as e:
        errors.append(f"solver.prototxt: {e.message}")
        return
    names = [f.name for f in fields(SolverCfg) if f.name != "prototxt"]
    for key, value in schema_values(param, names).items():
        solver.setdefault(key, value)
    errors += [f"solver.prototxt: {solver['prototxt']}: {e}" for e in refused(param)]


def refused(param: Any) -> list[str]:
    """What Caffe's solver aborts on among the file's fields the schema does not carry."""
    out = []
    if param.HasField("average_loss") and param.average_loss < 1:
        out.append(f"average_loss must be >= 1, got {param.average_loss} (Caffe aborts: CHECK_GE(average_loss, 1))")
    if param.HasField("regularization_type") and param.regularization_type not in ("L1", "L2"):
        out.append(
            f"regularization_type must be L1 or L2, got {param.regularization_type!r} (Caffe aborts: "
            "'Unknown regularization type')"
        )
    return out


def solver_param(base: str | Path | None) -> Any:
    """A SolverParameter to build on: the base file's fields minus what the run manages."""
    from caffe.proto import caffe_pb2

    p = caffe_pb2.SolverParameter()
    if base is not None:
        p.CopyFrom(load(base))
        for name in MANAGED:
            p.ClearField(name)
    return p


def caffe_snapshot(state_path: str, weights: str | None) -> tuple[Path, Path, int]:
    """(solverstate, caffemodel, iteration) of a snapshot written by `caffe train` (or a run):
    the weights are `weights`, else the state's learned_net, looked up as written, then beside
    the state. UserError naming the file when either cannot be read."""
    from caffe.proto import caffe_pb2
    from google.protobuf.message import DecodeError

    from common.errors import UserError

    state_file = Path(state_path).resolve()
    if not state_file.is_file():
        raise UserError(f"--from-snapshot: {state_path} not found", "give the .solverstate that caffe train wrote")
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(state_file.read_bytes())
    except DecodeError:
        raise UserError(
            f"--from-snapshot: {state_file} is not a Caffe solver state",
            "give the .solverstate file (the .caffemodel goes to --weights)",
        ) from None
    if state.iter <= 0 and not len(state.history):
        raise UserError(
            f"--from-snapshot: {state_file} is not a Caffe solver state (no iteration, no history)",
            "give the .solverstate file (the .caffemodel goes to --weights)",
        )
    if weights:
        found = Path(weights).resolve()
        if not found.is_file():
            raise UserError(f"--weights: {weights} not found", "give the .caffemodel saved with the solver state")
        return state_file, found, int(state.iter)
    learned = Path(state.learned_net) if state.learned_net else None
    for cand in [learned, state_file.parent / learned.name] if learned else []:
        if cand.is_file():
            return state_file, cand.resolve(), int(state.iter)
    raise UserError(
        f"--from-snapshot: the weights of {state_file.name} ({state.learned_net or 'not named'}) were not found",
        "pass them with --weights X.caffemodel",
    )
