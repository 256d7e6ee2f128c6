"""`orchestrate predict`, `runs` and `sweep`: using, comparing and searching over runs."""

from __future__ import annotations

import argparse

from orchestrator.contract import EXIT_OK


def _predict(args: argparse.Namespace) -> int:
    from orchestrator.predict.predict import predict

    return predict(
        args.run_dir,
        out=args.out,
        images=args.images,
        labels=args.labels,
        list_file=args.list,
        root=args.root,
        snapshot=args.snapshot,
        device=args.device,
        evaluate=args.eval,
        batch=args.batch,
        quiet=args.quiet,
        tta=args.tta,
        ensemble=args.ensemble or (),
    )


def _runs(args: argparse.Namespace) -> int:
    from orchestrator.runs_table import runs_table

    print(runs_table(args.folder))
    return EXIT_OK


def _sweep(args: argparse.Namespace) -> int:
    from orchestrator.sweep.driver import sweep

    return sweep(args.sweep, address=args.address, max_concurrent=args.max_concurrent, out=args.out, resume=args.resume)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add predict, runs and sweep to the parser."""
    p = sub.add_parser("predict", help="segment images with a run's snapshot (overlays, --eval metrics)")
    p.add_argument("run_dir", help="the run directory whose snapshot segments the images (e.g. runs/demo)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR", help="a folder of images")
    src.add_argument("--list", metavar="FILE", help="'image [label]' lines, as for orchestrate data build")
    p.add_argument("--labels", metavar="DIR", help="with --images: labels matched by file stem")
    p.add_argument("--root", help="with --list: the folder its paths are relative to (default: the list's)")
    p.add_argument("--out", required=True, help="output folder (new, empty, or an earlier prediction)")
    p.add_argument("--snapshot", default="best", help="best (default; else the newest), last, or iter_N")
    p.add_argument("--device", default="cpu", help="cpu or gpu:N")
    p.add_argument("--eval", action="store_true", help="score against the labels: eval.json, confusion.png")
    p.add_argument("--batch", type=int, default=1, help="images per forward pass (same-size images)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--tta",
        metavar="SPEC",
        help="test-time augmentation: average the softmax over a horizontal flip and/or scales, "
        "e.g. flip or flip,scales=0.75,1,1.25 (one forward pass per view)",
    )
    p.add_argument(
        "--ensemble",
        metavar="RUN_DIR[:SNAPSHOT]",
        action="append",
        help="average the class probabilities with another run's snapshot (best, last or iter_N; "
        "default best); repeat for more (one forward pass per view per snapshot)",
    )
    p.set_defaults(func=_predict)
    p = sub.add_parser("runs", help="a table of the runs under a folder (status, best mIoU, time)")
    p.add_argument("folder", nargs="?", default="runs", help="a folder of run directories (default runs)")
    p.set_defaults(func=_runs)
    p = sub.add_parser("sweep", help="trials of an experiment over a search space, on Ray (local or --address)")
    p.add_argument("sweep", nargs="?", help="the sweep YAML (base experiment, space, scheduler)")
    p.add_argument("--address", help="an existing Ray cluster (ray start --head prints it); default: a local Ray")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: as Ray's resources allow)")
    p.add_argument("--out", help="the sweep folder (default sweeps/<name>)")
    p.add_argument("--resume", metavar="DIR", help="continue an interrupted sweep; finished trials are kept")
    p.set_defaults(func=_sweep)
