"""`orchestrate fix`: diagnose the user's net, repair what the doctor finds (nets.fix), write
the fixed net, solver, class-weight H files, changes.md and changes.diff into a new folder at
once (assembled beside it, renamed when complete), then run the doctor on the result.
Exit 0 when no error is left, 1 when some are, 2 for bad input. The user's files are only read."""

from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.findings import Finding
from orchestrator.contract import EXIT_FINDINGS, EXIT_OK

NET, SOLVER, CHANGES, DIFF, EXPERIMENT = (
    "train_val.prototxt",
    "solver.prototxt",
    "changes.md",
    "changes.diff",
    "experiment.yaml",
)


@dataclass
class Inputs:
    """What to fix, from the flags or from an experiment with `net: prototxt:`."""

    prototxt: str
    solver: str | None = None
    data: str | None = None
    weights: str | None = None
    surgery: bool = True
    experiment: str | None = None
    solver_param: Any = None  # an experiment's solver: its file with the YAML's base_lr/momentum on top


def _inputs(args: argparse.Namespace) -> Inputs:
    if args.experiment and args.prototxt:
        raise UserError(
            "fix: give an experiment YAML or --prototxt, not both", "orchestrate fix --prototxt NET --out DIR"
        )
    if args.prototxt:
        return Inputs(args.prototxt, args.solver, args.data, args.weights)
    if not args.experiment:
        raise UserError("fix needs an experiment YAML or --prototxt NET", "orchestrate fix --prototxt NET --out DIR")
    from orchestrator.config import experiment as config

    exp = config.load_experiment(args.experiment, [])
    if not exp.net.prototxt:
        raise UserError(
            f"{args.experiment}: fix repairs a net of your own (net: prototxt:), this experiment generates its net",
            "generated nets need no fix; run `orchestrate check` on it",
        )
    from orchestrator.config.solverfile import solver_param

    param, fields = solver_param(exp.solver.prototxt), exp.solver.caffe_fields()
    param.type, param.base_lr, param.momentum = fields["type"], fields["base_lr"], fields["momentum"]
    return Inputs(
        exp.net.prototxt, exp.solver.prototxt, exp.data.train, exp.weights, exp.surgery.bilinear, args.experiment, param
    )


def _out_dir(out: str, inputs: Inputs) -> Path:
    """The output folder: new, empty, or an earlier fix's (never a folder holding the inputs)."""
    p = Path(out).resolve()
    mine = [Path(x).resolve() for x in (inputs.prototxt, inputs.solver) if x]
    if any(m.parent == p for m in mine):
        raise UserError(f"--out {out} holds the files being fixed", "write the fixed net to a new folder")
    if p.exists() and (not p.is_dir() or (any(p.iterdir()) and not (p / CHANGES).is_file())):
        raise UserError(f"--out {out} exists and is not an earlier fix's output", "choose a new folder")
    return p


def _solver_text(solver: Any, net_path: str) -> str:
    from google.protobuf import text_format

    for name in ("net", "train_net"):
        if solver.HasField(name):
            setattr(solver, name, net_path)
    return text_format.MessageToString(solver)


def _doctor_solver(solver: Any, path: Path) -> str | None:
    """A solver the doctor reads (an experiment's, or the one being fixed), written to `path`."""
    from google.protobuf import text_format

    if solver is None:
        return None
    path.write_text(text_format.MessageToString(solver))
    return str(path)


def _write_h(path: Path, weights: list[float]) -> None:
    import numpy as np

    from data_prep.datum import blobproto_bytes
    from data_prep.stats import infogain_matrix

    path.write_bytes(blobproto_bytes(infogain_matrix(np.asarray(weights, np.float64))))


def _probe_copy(net: Any, final: Path, tmp: Path) -> str:
    """The fixed net as the doctor can run it before the rename (H files still in `tmp`)."""
    from nets.fix import net_text

    probe = type(net)()
    probe.CopyFrom(net)
    for layer in probe.layer:
        src = layer.infogain_loss_param.source
        if src.startswith(str(final) + "/"):
            layer.infogain_loss_param.source = str(tmp) + src[len(str(final)) :]
    path = tmp / ".probe.prototxt"
    path.write_text(net_text(probe))
    return str(path)


def _experiment_yaml(src: str, out: Path, base_lr: float | None) -> str:
    import yaml

    from orchestrator.config import yamlio

    raw = yamlio.load_mapping(src, "experiment file", "give the path of an experiment YAML with net: prototxt:")
    raw["net"] = {**raw.get("net", {}), "prototxt": str(out / NET)}
    solver = dict(raw.get("solver") or {})
    if solver.get("prototxt"):
        solver["prototxt"] = str(out / SOLVER)
    if base_lr is not None:  # the YAML's solver keys win over the solver file (a float32 there)
        solver["base_lr"] = float(f"{base_lr:.6g}")
    raw["solver"] = solver
    return yaml.safe_dump(raw, sort_keys=False)


def _assemble(inputs: Inputs, args: argparse.Namespace, out: Path, tmp: Path) -> tuple[int, list[Finding]]:
    """Fix and write everything into `tmp`; (number of changes, the doctor's findings on the result)."""
    from nets import fix
    from nets.doctor import build_context, diagnose
    from nets.fix_rules import FixContext
    from nets.prototxt import load_data_stats, load_net, load_solver

    stats = load_data_stats(inputs.data) if inputs.data else None
    kw = dict(weights=inputs.weights, data_stats=stats, dynamic=not args.static, surgery=inputs.surgery)
    solver = inputs.solver_param
    if solver is None and inputs.solver:
        solver = load_solver(inputs.solver)
    given_lr = float(solver.base_lr) if solver is not None else None
    solver_in = (
        _doctor_solver(solver, tmp / ".solver_in.prototxt") if inputs.solver_param is not None else inputs.solver
    )
    before = diagnose(inputs.prototxt, solver=solver_in, **kw)  # type: ignore[arg-type]
    text = Path(inputs.prototxt).read_text()
    net = load_net(inputs.prototxt)
    ctx = build_context(net, {}, stats, solver, inputs.weights, False, inputs.surgery)
    measured = next((f.data for f in before if f.code == "loss-normalization-lr" and f.data.get("pixels")), {})
    if measured:  # the probe's input size, where the prototxt alone does not tell it
        ctx = replace(ctx, pixels=measured["pixels"], batch=measured.get("batch"))
    fx = FixContext(ctx, solver, stats or {}, str(out), args.class_weighting, args.normalize_loss)
    result = fix.fix_net(net, fx)
    header = fix.leading_comments(text)
    fixed_text = fix.net_text(result.net, header)
    (tmp / NET).write_text(fixed_text)
    diff = fix.unified_diff(fix.net_text(net, header), fixed_text, inputs.prototxt, str(out / NET))
    if solver is not None and inputs.solver:
        original = fix.net_text(load_solver(inputs.solver))
        (tmp / SOLVER).write_text(_solver_text(solver, str(out / NET)))
        diff += fix.unified_diff(original, (tmp / SOLVER).read_text(), str(inputs.solver), str(out / SOLVER))
    for name, weights in result.files.items():
        _write_h(tmp / name, weights)
    probe = _probe_copy(result.net, out, tmp)
    solver_out = str(tmp / SOLVER) if inputs.solver else _doctor_solver(solver, tmp / ".solver_out.prototxt")
    after = diagnose(probe, solver=solver_out, **kw)  # type: ignore[arg-type]
    for scratch in tmp.glob(".*"):
        scratch.unlink()
    (tmp / DIFF).write_text(diff)
    (tmp / CHANGES).write_text(fix.changes_md(result, inputs.prototxt, after))
    if inputs.experiment:
        lr = float(solver.base_lr) if solver is not None and float(solver.base_lr) != given_lr else None
        (tmp / EXPERIMENT).write_text(_experiment_yaml(inputs.experiment, out, lr))
    return len(result.changes), after


def _fix(args: argparse.Namespace) -> int:
    from nets.doctor import format_findings

    inputs = _inputs(args)
    out = _out_dir(args.out, inputs)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    try:
        n, after = _assemble(inputs, args, out, tmp)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    print(f"{n} change{'s' if n != 1 else ''} written to {out} ({CHANGES}, {DIFF}); the doctor on the result:")
    print(format_findings(after))
    return EXIT_FINDINGS if any(f.severity == "error" for f in after) else EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `fix` to the parser."""
    from nets.fix_rules import WEIGHTINGS

    p = sub.add_parser("fix", help="repair what the doctor finds in a net of your own; writes a new folder")
    p.add_argument("experiment", nargs="?", help="an experiment YAML with net: prototxt:")
    p.add_argument("--prototxt", help="your train (or train_val) prototxt")
    p.add_argument("--solver", help="your solver prototxt (base_lr is rescaled with the loss normalization)")
    p.add_argument("--data", help="the data stage's output dir (stats.json: classes, ignore label, class weights)")
    p.add_argument("--weights", help="the caffemodel the run loads (its layers are never re-initialised)")
    p.add_argument("--out", required=True, help="new folder for the fixed files (an earlier fix's is replaced)")
    p.add_argument("--class-weighting", choices=WEIGHTINGS, default=WEIGHTINGS[0], help="H for class-imbalance")
    p.add_argument(
        "--normalize-loss",
        action="store_true",
        help="also rewrite a summed loss whose lr matches it (normalization VALID, same per-pixel step)",
    )
    p.add_argument("--static", action="store_true", help="skip the one-batch probe before and after")
    p.set_defaults(func=_fix)
