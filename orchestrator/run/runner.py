"""The parent side of `orchestrate run/resume`: prepare the run directory, pre-flight with the
doctor, then supervise the Caffe child (orchestrator.run.supervisor) and turn an abort into a verdict.
What the two sides share is in orchestrator.contract."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.datastats import STATS_FILE, read_stats
from common.errors import UserError
from common.findings import Finding, has_errors
from data_prep.build import INFOGAIN_FILE
from orchestrator.config import experiment as cfgmod
from orchestrator.config.schema import INT_MAX
from orchestrator.contract import EXIT_BAD_INPUT, EXIT_OK, LOCK, MARKER, START_STATE, RunMeta, Status
from orchestrator.jsonio import read_jsonl
from orchestrator.run.supervisor import supervise
from orchestrator.rundir import RunDir, foreign_error


def _wait_for_builder(out: Path, poll_s: float = 1.0) -> None:
    """Two runs started together on one dataset: the second waits for the first's build (then
    finds the data fresh) instead of failing on its temp folder."""
    from data_prep.partials import live_builder

    said = False
    while (who := live_builder(out)) is not None:
        if not said:
            print(f"waiting for {who}, which is building {out}", flush=True)
            said = True
        time.sleep(poll_s)


def ensure_data(exp: cfgmod.Experiment) -> None:
    """Build the LMDBs from data.build's raw lists when they are missing or older than the lists."""
    b = exp.data.build
    if b is None:
        return
    from data_prep.build import build_dataset

    jobs = [(exp.data.train, b.train_list)] + ([(exp.data.val, b.val_list)] if exp.data.val and b.val_list else [])
    for out, lst in jobs:
        lst_path = Path(b.root) / lst
        stats = Path(out) / STATS_FILE
        _wait_for_builder(Path(out))
        if stats.exists() and (not lst_path.exists() or stats.stat().st_mtime >= lst_path.stat().st_mtime):
            continue
        print(f"building {out} from {lst_path}", flush=True)
        build_dataset(
            Path(out),
            num_classes=b.num_classes,
            ignore_label=b.ignore_label,
            list_file=lst_path,
            root=Path(b.root),
            overwrite=stats.exists(),
            encoded=b.encoded,
            quiet=True,
            allow_lossy_labels=b.allow_lossy_labels,
            class_names=b.class_names,
            label_map=b.label_map,
            resize=b.size or None,
        )


def make_nets(exp: cfgmod.Experiment, run: RunDir) -> tuple[RunMeta, list[Finding]]:
    """Write train/val/deploy prototxts into the run dir; return the net's meta (classes, loss...)
    and what setting up the net found (a user's net: how validation will go)."""
    import nets

    if exp.net.prototxt:
        from orchestrator.run.usernet import user_net_meta

        return user_net_meta(exp, run)
    stats = read_stats(exp.data.train)
    num_classes = exp.net.num_classes or int(stats["num_classes"])
    ignore = exp.net.ignore_label if exp.net.ignore_label is not None else stats.get("ignore_label")
    mean = tuple(stats["mean_bgr"]) if stats.get("mean_bgr") else None
    a = exp.data.augment

    def source(d: str, batch: int, train: bool) -> nets.DataSource:
        aug: dict[str, Any] = (
            dict(
                mirror=a.mirror,
                crop=tuple(a.crop) if a.crop else None,
                scale=tuple(a.scale) if a.scale else None,
                jitter=a.jitter,
            )
            if train
            else {}
        )
        return nets.DataSource(
            images=str(Path(d) / "images"),
            labels=str(Path(d) / "labels"),
            batch_size=batch,
            kind=exp.data.layer,
            mean_bgr=mean,
            seed=exp.seed,
            shuffle=train,
            **aug,
        )

    val_src = source(exp.data.val, exp.data.val_batch_size, False) if exp.data.val else None
    n = exp.net
    from orchestrator.run.class_weights import infogain_file

    h = (
        infogain_file(n.class_weighting, Path(exp.data.train) / INFOGAIN_FILE, stats, run.root)
        if n.loss == "infogain"
        else None
    )
    g = nets.generate(
        n.arch,
        num_classes=num_classes,
        train_data=source(exp.data.train, exp.data.batch_size, True),
        val_data=val_src,
        deploy_shape=(int(stats.get("height", 64)), int(stats.get("width", 64))),
        width=n.width,
        depth=n.depth,
        batch_norm=n.batch_norm,
        filler=n.filler,
        loss=n.loss,
        normalization=n.normalization,
        ignore_label=ignore,
        learn_upsample=n.learn_upsample,
        infogain_file=h,
        skips=n.skips,
        input_norm=n.input_norm,
    )
    g.write(run.root)
    meta = RunMeta.from_dict(g.meta)
    meta.class_names = exp.data.class_names or stats.get("class_names")
    val_n = int(read_stats(exp.data.val)["num_records"]) if exp.data.val else 0
    meta.val_images = min(val_n, exp.validation.max_images or val_n)
    return meta, []


def solver_text(exp: cfgmod.Experiment, run: RunDir, has_val: bool, base: str | Path | None = None) -> str:
    """solver.prototxt: the schema's fields (on top of the fields of `base`, the user's solver
    file or the run's own on resume), this folder's paths; Caffe's own testing and
    snapshotting are off, the hooks do both."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    from orchestrator.config.solverfile import solver_param

    s, p = exp.solver, solver_param(base)
    p.train_net = str(run.train_net)
    if has_val:
        p.test_net.append(str(run.val_net))
        p.test_iter.append(1)
        p.test_interval = min(s.max_iter + 1, INT_MAX)  # never: the hooks validate (an int32 in Caffe)
        p.test_initialization = False
    for key, value in s.caffe_fields().items():
        if key == "stepvalue":  # repeated: replaced, never appended to the file's own
            del p.stepvalue[:]
            p.stepvalue.extend(value)
        else:
            setattr(p, key, value)
    p.display, p.snapshot = 0, 0
    p.snapshot_prefix = str(run.caffe_prefix)
    p.random_seed = exp.seed
    p.solver_mode = caffe_pb2.SolverParameter.GPU if exp.gpu_id is not None else caffe_pb2.SolverParameter.CPU
    p.device_id = exp.gpu_id or 0
    return text_format.MessageToString(p)


def preflight(exp: cfgmod.Experiment, run: RunDir, meta: RunMeta) -> list[Finding]:
    """The doctor on the run's own nets and solver (static rules + a one-batch probe in a child)."""
    from nets.doctor import diagnose

    # a user net's data may come from elsewhere: the data stage's stats only where they exist
    stats = read_stats(exp.data.train, key="data.train", required=not exp.net.prototxt) or None
    return data_checks(exp, stats) + diagnose(
        str(run.train_net),
        val_prototxt=str(run.val_net) if run.val_net.exists() else None,
        solver=str(run.solver),
        weights=exp.weights,
        data_stats=stats,
        meta=meta.to_dict(),
        dynamic=True,
        surgery=exp.surgery.bilinear,
    )


def data_checks(exp: cfgmod.Experiment, train_stats: dict | None) -> list[Finding]:
    """The data stage's checks (all-ignore images, absent classes, weight span, crop, aspect, train/val
    duplicates) on the experiment's data dirs, where they come from the data stage."""
    from data_prep.checks import data_findings

    if not train_stats:
        return []
    val = read_stats(exp.data.val, key="data.val", required=False) if exp.data.val else None
    crop = exp.data.augment.crop if exp.data.layer == "paired" else None
    return data_findings(
        train_stats,
        val or None,
        crop=(crop[0], crop[1]) if crop else None,
        train_dir=Path(exp.data.train),
        val_dir=Path(exp.data.val) if exp.data.val and val else None,
    )


def refuse_empty(*given: tuple[str, str | None]) -> None:
    """An empty file parses as an empty message: a caffemodel of no layers (it loads nothing, and
    the run trains from scratch unnoticed), a solver of defaults, a net without layers. Refused
    by name (`given`: what names it, e.g. 'weights:' or '--solver', and the path)."""
    for what, path in given:
        if path and Path(path).is_file() and Path(path).stat().st_size == 0:
            raise UserError(f"{what} {path}: the file is empty", f"give {what.rstrip(':')} the path of the real file")


def check_inputs(exp: cfgmod.Experiment) -> None:
    """Everything a run reads, checked before anything is created (UserError naming it)."""
    if exp.weights and exp.weights.endswith(".solverstate"):
        raise UserError(
            f"weights: {exp.weights} is a solver state, not weights",
            "give a .caffemodel as weights; to continue a run use orchestrate resume RUN_DIR",
        )
    if exp.weights and not Path(exp.weights).is_file():
        raise UserError(f"weights: {exp.weights} not found", "give the path of a .caffemodel")
    for key, path in (("net.prototxt", exp.net.prototxt), ("net.val_prototxt", exp.net.val_prototxt)):
        if path and not Path(path).is_file():
            raise UserError(f"{key}: {path} not found", f"give the path of your net's prototxt as {key}")
    refuse_empty(
        ("weights:", exp.weights),
        ("net.prototxt:", exp.net.prototxt),
        ("net.val_prototxt:", exp.net.val_prototxt),
        ("solver.prototxt:", exp.solver.prototxt),
    )
    b = exp.data.build
    if b is not None:
        lists = [("data.build.train_list", b.train_list)] + (
            [("data.build.val_list", b.val_list)] if b.val_list else []
        )
        for key, lst in lists:
            if not (Path(b.root) / lst).is_file():
                raise UserError(
                    f"{key}: {Path(b.root) / lst} not found",
                    "check data.build.root and the list names (paths inside the lists are read "
                    "relative to data.build.root)",
                )
        return
    if exp.net.prototxt:
        return
    for key, d in (("data.train", exp.data.train), ("data.val", exp.data.val)):
        if d:
            read_stats(d, key=key)


def open_run_dir(path: str, fresh: bool) -> tuple[RunDir, bool]:
    """The run directory, locked and empty but for its marker; (run, created here).

    Only a folder we created (marker) that holds nothing but what a run writes is ever emptied,
    and what is removed is said; a run that never trained (stopped in pre-flight) is replaced
    without --fresh, one that trained only with --fresh."""
    run = RunDir(path)
    if run.root.exists() and not run.root.is_dir():
        raise UserError(f"{run.root} is a file, not a run directory", "choose another --run-dir")
    created = not run.root.exists()
    if not created and any(p.name != LOCK for p in run.root.iterdir()):
        if not run.is_ours:
            verb = "delete" if fresh else "use"
            raise UserError(
                f"{run.root} exists and was not created by orchestrate run (no {MARKER} marker): refusing to {verb} it",
                "choose another --run-dir (or another name:)",
            )
        foreign = run.foreign_files()
        if foreign:  # a marker copied along with other files: never delete those
            raise foreign_error(run.root, foreign)
        run.acquire_lock()
        trained = bool(run.snapshot_dirs() or read_jsonl(run.metrics))
        if trained and not fresh:
            raise UserError(
                f"{run.root} already holds a run",
                f"resume it with `orchestrate resume {run.root}`, "
                "pass --fresh to delete it and start over, or choose --run-dir",
            )
        removed = run.clear()
        if removed:
            why = "--fresh" if fresh else "a run that never trained"
            print(f"{why}: removed from {run.root}: {', '.join(removed)}", file=sys.stderr)
    else:
        run.acquire_lock()
    run.create()
    return run, created


def _discard(run: RunDir, created: bool) -> None:
    """Undo a start that failed before training: nothing half-made stays behind."""
    if created:
        shutil.rmtree(run.root, ignore_errors=True)
        return
    for p in list(run.root.iterdir()) if run.root.exists() else []:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def prepare(
    exp: cfgmod.Experiment, run_dir: str, fresh: bool, start: tuple[Path, int] | None = None
) -> tuple[RunDir, list[Finding]]:
    """Create the run directory with everything the worker needs; returns the pre-flight findings.
    `start` is a solver state (and its iteration) to continue from, copied into the run.
    The inputs are checked first; a failure on the way removes what this call made."""
    check_inputs(exp)
    run, created = open_run_dir(run_dir, fresh)
    try:
        run.config.write_text(cfgmod.to_yaml(exp))
        ensure_data(exp)
        meta, notes = make_nets(exp, run)
        if start is not None:
            from orchestrator.run.statecheck import check_state_fits

            # refused here, the run directory goes again: nothing of this start is left
            check_state_fits(start[0], run.train_net, exp.solver.type)
            shutil.copyfile(start[0], run.root / START_STATE)
            meta.start_state, meta.start_iter = START_STATE, start[1]
        meta.write(run.meta)
        run.solver.write_text(solver_text(exp, run, run.val_net.exists(), exp.solver.prototxt))
        findings = notes + preflight(exp, run, meta)
        run.findings.write_text(json.dumps([f.to_dict() for f in findings], indent=2))
    except BaseException:
        _discard(run, created)
        raise
    return run, findings


def run_experiment(
    exp: cfgmod.Experiment,
    run_dir: str,
    *,
    force: bool = False,
    fresh: bool = False,
    from_snapshot: str | None = None,
    snapshot_weights: str | None = None,
) -> int:
    """`orchestrate run`: prepare, pre-flight (errors stop unless force), train in a child.
    `from_snapshot` continues a `caffe train` snapshot (its weights become `weights`)."""
    start = None
    if from_snapshot:
        from orchestrator.config.solverfile import caffe_snapshot

        state, weights, it = caffe_snapshot(from_snapshot, snapshot_weights)
        if it >= exp.solver.max_iter:
            raise UserError(
                f"--from-snapshot: {state.name} is at iteration {it}, solver.max_iter is {exp.solver.max_iter}",
                f"raise solver.max_iter above {it} (--set solver.max_iter=N)",
            )
        exp.weights, start = str(weights), (state, it)
    elif snapshot_weights:
        raise UserError("--weights goes with --from-snapshot", "put start weights in the experiment's weights: key")
    run, findings = prepare(exp, run_dir, fresh, start)
    for f in findings:
        if f.severity != "info":
            print(str(f), file=sys.stderr)
    if has_errors(findings) and not force:
        run.write_summary(
            status=Status.FAILED,
            stop_reason="pre-flight: the doctor found errors (use --force to train anyway)",
            iterations=0,
            name=exp.name,
            findings=[f.to_dict() for f in findings],
        )
        print(
            f"\nstopped before training: {sum(f.severity == 'error' for f in findings)} error finding(s); "
            f"see {run.summary}. Fix them and run the same command again (nothing was trained), "
            "or pass --force",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    from orchestrator.run.console import start_lines

    print("\n".join(start_lines(exp, run, findings, force)), flush=True)
    return supervise(run)


def resume_run(path: str, overrides: Sequence[str] = ()) -> int:
    """`orchestrate resume RUN_DIR [--set k=v]`: continue from the newest intact snapshot."""
    from orchestrator.run.resume import plan_resume

    p = Path(path)
    if p.suffix in (".caffemodel", ".solverstate") or p.is_file():
        raise UserError(
            f"{path} is a file; resume needs the run directory (it holds the solver state, "
            "the weights and the hooks' state)",
            "give the run directory, e.g. orchestrate resume runs/demo",
        )
    plan = plan_resume(path, list(overrides))
    if plan is None:
        return EXIT_OK
    run, exp, iteration, notes, keep_solver_lr = plan
    # this folder's paths and the new settings; the other fields of the run's own solver stay.
    # Both files are made before either is written, and put back when the resume fails before
    # training a step: a failed resume leaves the run as it found it.
    old = {f: f.read_bytes() for f in (run.config, run.solver) if f.exists()}
    new = {run.solver: solver_text(exp, run, run.val_net.exists(), run.solver), run.config: cfgmod.to_yaml(exp)}
    for f, text in new.items():
        f.write_text(text)
    from orchestrator.run.console import resume_lines

    print("\n".join(resume_lines(exp, run, iteration)), flush=True)
    rc = supervise(run, resume=iteration, notes=notes, keep_solver_lr=keep_solver_lr)
    if rc == Status.FAILED.exit_code and run.trained_iterations() <= iteration:
        for f, data in old.items():
            f.write_bytes(data)
        print(f"(config.yaml and solver.prototxt of {run.root} are as they were before this resume)", file=sys.stderr)
    return rc
