"""Sub-commands of `orchestrate` other than `data`: run, resume, validate, check, doctor-env."""

from __future__ import annotations

import argparse
import json
import tempfile
from typing import Any

from common.errors import UserError
from orchestrator.contract import EXIT_FINDINGS, EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from orchestrator.config import experiment as config
    from orchestrator.run import runner

    exp = config.load_experiment(args.experiment, args.set or [])
    if args.quiet:
        exp.progress.quiet = True
    return runner.run_experiment(
        exp,
        args.run_dir or f"runs/{exp.name}",
        force=args.force,
        fresh=args.fresh,
        from_snapshot=args.from_snapshot,
        snapshot_weights=args.weights,
    )


def _resume(args: argparse.Namespace) -> int:
    from orchestrator.run import runner

    return runner.resume_run(args.run_dir, args.set or [])


def _validate(args: argparse.Namespace) -> int:
    from orchestrator.config import experiment as config
    from orchestrator.run.console import path_notes

    exp = config.load_experiment(args.experiment, args.set or [])
    print(f"{args.experiment}: valid experiment '{exp.name}'")
    for note in path_notes(exp):  # paths are checked when the run starts; say now what is missing
        print(f"note: {note}")
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from nets.doctor import diagnose, format_findings

    if args.prototxt:
        from nets.prototxt import load_data_stats
        from orchestrator.run.runner import refuse_empty

        refuse_empty(
            ("--prototxt", args.prototxt),
            ("--val-prototxt", args.val_prototxt),
            ("--solver", args.solver),
            ("--weights", args.weights),
        )
        stats = load_data_stats(args.data) if args.data else None
        findings = diagnose(
            args.prototxt,
            val_prototxt=args.val_prototxt,
            solver=args.solver,
            weights=args.weights,
            data_stats=stats,
            dynamic=not args.static,
        )
    elif args.experiment:
        if args.data:
            raise UserError("check: --data goes with --prototxt", "an experiment names its data under data:")
        from orchestrator.config import experiment as config
        from orchestrator.run import runner

        exp = config.load_experiment(args.experiment, args.set or [])
        with tempfile.TemporaryDirectory(prefix="orchestrate-check-") as tmp:
            _, findings = runner.prepare(exp, tmp, fresh=True)
    else:
        raise UserError("check needs an experiment YAML or --prototxt NET", "orchestrate check experiments/demo.yaml")
    if args.json:
        print(json.dumps([f.to_dict() for f in findings], indent=2))
    else:
        print(format_findings(findings))
    return EXIT_FINDINGS if any(f.severity == "error" for f in findings) else EXIT_OK


def _doctor_env(args: argparse.Namespace) -> int:
    from orchestrator.cli.envinfo import check_environment, version_text

    print(version_text())
    bad = 0
    for what, ok, how in check_environment():
        optional = "optional" in what
        print(f"  [{'ok' if ok else ('--' if optional else 'MISSING')}] {what}" + ("" if ok else f": {how}"))
        bad += not ok and not optional
    return EXIT_FINDINGS if bad else EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add run/resume/validate/check/doctor-env to the parser."""
    sets: dict[str, Any] = dict(
        action="append", metavar="dotted.key=value", help="override a config key (type-checked)"
    )
    p = sub.add_parser("run", help="train an experiment (YAML) in a supervised Caffe child process")
    p.add_argument("experiment", help="the experiment YAML (e.g. experiments/demo.yaml)")
    p.add_argument("--run-dir", help="default runs/<name>")
    p.add_argument("--set", **sets)
    p.add_argument("--force", action="store_true", help="train even when the doctor finds errors")
    p.add_argument("--fresh", action="store_true", help="delete an existing run directory first")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--from-snapshot",
        metavar="X.solverstate",
        help="start from a snapshot of `caffe train` (iteration, solver history, weights)",
    )
    p.add_argument(
        "--weights",
        metavar="X.caffemodel",
        help="with --from-snapshot: the snapshot's weights (default: the state's learned_net)",
    )
    p.set_defaults(func=_run)
    p = sub.add_parser("resume", help="continue a run from its newest intact snapshot")
    p.add_argument("run_dir", help="the run directory to continue (e.g. runs/demo)")
    p.add_argument("--set", **sets)
    p.set_defaults(func=_resume)
    p = sub.add_parser("validate", help="check an experiment file against the schema (all errors at once)")
    p.add_argument("experiment", help="the experiment YAML to check (nothing is built or trained)")
    p.add_argument("--set", **sets)
    p.set_defaults(func=_validate)
    p = sub.add_parser("check", help="the doctor: find the classic Caffe mistakes in a net")
    p.add_argument("experiment", nargs="?", help="an experiment YAML whose nets to check (or use --prototxt)")
    p.add_argument("--prototxt", help="a train (or train_val) prototxt, yours or generated")
    p.add_argument("--val-prototxt")
    p.add_argument("--solver")
    p.add_argument("--weights", help="a caffemodel (pretrained backbone or earlier training) the run will load")
    p.add_argument("--data", help="the data stage's output dir (its stats.json: classes, ignore label) for --prototxt")
    p.add_argument("--set", **sets)
    p.add_argument("--static", action="store_true", help="skip the one-batch forward/backward probe")
    p.add_argument("--json", action="store_true", help="print the findings as a JSON list")
    p.set_defaults(func=_check)
    p = sub.add_parser("doctor-env", help="say what is missing from the installation and how to fix it")
    p.set_defaults(func=_doctor_env)
