"""The child process that owns Caffe during a run: `python -m orchestrator.train.worker RUN_DIR [--resume ITER]`
(orchestrator.contract.WorkerArgs).

The parent (orchestrator.run.runner) prepared the run directory; this process builds the solver,
does surgery, restores a snapshot when resuming, and runs the loop with its hooks. If Caffe
aborts (glog CHECK), this process dies and the parent writes the verdict.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from common.child import die_with_parent, flush_and_exit
from common.datastats import read_stats
from common.errors import UserError
from common.findings import Finding
from common.tempfiles import through_temp_file
from orchestrator.config import experiment as cfgmod
from orchestrator.contract import HOOKS, STATE, VERDICT_ENV, WEIGHTS, RunMeta, Status, Verdict, WorkerArgs
from orchestrator.jsonio import read_json
from orchestrator.predict.tta import TTA
from orchestrator.rundir import RunDir
from orchestrator.train import loop, surgery
from orchestrator.train.hooks.data_state import DataStateHook
from orchestrator.train.hooks.divergence import DivergenceHook
from orchestrator.train.hooks.early_stop import EarlyStopHook, LrPlateauHook
from orchestrator.train.hooks.pictures import BestPicturesHook
from orchestrator.train.hooks.progress import ProgressHook
from orchestrator.train.hooks.signals import SignalHook
from orchestrator.train.hooks.snapshot import SnapshotHook
from orchestrator.train.hooks.stats import StatsHook
from orchestrator.train.hooks.tensorboard import TensorBoardHook
from orchestrator.train.hooks.validation import ValidationHook
from orchestrator.train.hooks.writers import MetricsWriter, SummaryWriter


def set_device(exp: cfgmod.Experiment) -> None:
    """CPU or gpu:N; on a machine without a usable GPU Caffe aborts here (the parent reports it)."""
    import caffe

    if exp.gpu_id is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(exp.gpu_id)
        caffe.set_mode_gpu()
    caffe.set_random_seed(exp.seed)


def apply_surgery(net: Any, train_prototxt: str, exp: cfgmod.Experiment) -> list[Finding]:
    """Bilinear kernels into the upsampling Deconvolutions (or the layers named in surgery.layers).
    What it cannot do well is a finding, never an exception: the layer keeps its filler's weights."""
    from nets.prototxt import load_net

    if not exp.surgery.bilinear:
        return []
    return surgery.run_surgery(net, load_net(train_prototxt), exp.surgery.layers, exp.weights)


def build_hooks(solver: Any, exp: cfgmod.Experiment, meta: RunMeta, preflight: list[dict[str, Any]]) -> list[loop.Hook]:
    """The hooks in their order, which is the order of the step's facts (loop.Context): the
    producers (signals, data state, statistics, rules, validation), the hooks that react to a
    validation (pictures, lr-on-plateau, early stop: loop's after_validation event), the writers,
    the snapshot, the summary last. What each hook needs before it, it declares (Hook.after);
    loop.check_order refuses a list that breaks it."""
    hooks: list[loop.Hook] = [
        SignalHook(),
        DataStateHook(solver),
        StatsHook(exp.checks.stats_interval),
        DivergenceHook(exp.checks, meta.loss_normalization),
    ]
    if exp.validation.enabled and meta.val_images:
        monitor = exp.early_stop.metric if exp.early_stop.enabled else "mean_iu"
        hooks.append(
            ValidationHook(
                exp.validation.interval,
                meta.val_images,
                exp.data.val_batch_size,
                meta.num_classes,
                meta.ignore_label,
                monitor,
                TTA(exp.validation.tta.flip, tuple(exp.validation.tta.scales)),
            )
        )
        if exp.data.val and meta.num_classes:
            hooks.append(BestPicturesHook(exp.data.val, exp.validation.pictures, meta, _mean_bgr(exp.data.val)))
    if exp.lr_on_plateau.enabled:
        p = exp.lr_on_plateau
        hooks.append(LrPlateauHook(p.metric, p.patience, p.min_delta, p.factor, p.min_lr))
    if exp.early_stop.enabled:
        hooks.append(EarlyStopHook(exp.early_stop.metric, exp.early_stop.patience, exp.early_stop.min_delta))
    hooks += [MetricsWriter(exp.progress.log_interval), ProgressHook(exp.progress.quiet, class_names=meta.class_names)]
    if exp.progress.tensorboard:
        hooks.append(TensorBoardHook(exp.progress.log_interval, exp.snapshot.interval, meta.class_names))
    s = exp.snapshot
    hooks.append(SnapshotHook(s.interval, s.keep_last, s.keep_best, lambda: {h.name: h.state_dict() for h in hooks}))
    hooks.append(SummaryWriter(preflight))
    return hooks


def _mean_bgr(data_dir: str) -> list[float] | None:
    """The data stage's mean of a data dir (for a user net whose val layer names none)."""
    return read_stats(data_dir, key="data.val", required=False).get("mean_bgr")


def data_sources(train_prototxt: str) -> dict[str, str]:
    """Data layer name -> the LMDB it reads, in the TRAIN phase of the run's train net."""
    from nets.graph import in_phase
    from nets.prototxt import load_net

    return {
        x.name: x.data_param.source
        for x in in_phase(load_net(train_prototxt), "TRAIN")
        if x.type == "Data" and x.data_param.source
    }


def skip_data_batches(net: Any, batches: int, sources: dict[str, str]) -> int:
    """Advance Caffe's own Data layers (sequential LMDB readers without saved state) by the
    batches the restored iterations consumed, so a resumed run reads the same records in the
    same order as an uninterrupted one. A Data layer is back at its first record every
    records / gcd(records, batch) batches, so at most that many are read. Returns how many."""
    import lmdb

    done = 0
    for i, (name, layer) in enumerate(zip(net._layer_names, net.layers, strict=True)):
        if layer.type != "Data" or list(net.bottom_names[name]):
            continue
        batch, period = net.blobs[net.top_names[name][0]].num, 0
        try:
            with lmdb.open(sources[name], readonly=True, lock=False) as env:
                records = int(env.stat()["entries"])
            period = records // math.gcd(records, batch)
        except (KeyError, lmdb.Error, ZeroDivisionError):
            pass
        n = batches % period if period else batches
        for _ in range(n):
            net._forward(i, i)
        done = max(done, n)
    return done


def restore_state(solver: Any, state_file: Path) -> None:
    """Caffe's solver.restore without its learned_net: the weights are already loaded, and the
    path inside the state may belong to another folder (a moved run, a `caffe train` run)."""
    from caffe.proto import caffe_pb2

    state = caffe_pb2.SolverState()
    state.ParseFromString(state_file.read_bytes())
    state.ClearField("learned_net")
    through_temp_file(state.SerializeToString(), ".solverstate", solver.restore)


def restore(solver: Any, run: RunDir, hooks: list[loop.Hook], iteration: int, exp: cfgmod.Experiment) -> list[Finding]:
    """Load snapshot `iteration` (chosen and verified by the parent) into the solver and hooks,
    put Caffe's Data layers back at the same record, and trim the logs after it; what of the
    hooks' state could not be matched, as warnings."""
    snap = run.snapshot_dir(iteration)
    if not snap.is_dir():
        raise UserError(f"{snap}: snapshot not found", "resume with orchestrate resume RUN_DIR")
    solver.net.copy_from(str(snap / WEIGHTS))
    restore_state(solver, snap / STATE)
    found = loop.restore_hooks(hooks, json.loads((snap / HOOKS).read_text())["hooks"])
    skip_data_batches(solver.net, iteration * exp.solver.iter_size, data_sources(str(run.train_net)))
    run.truncate_after(run.metrics, iteration)
    run.truncate_after(run.val, iteration)
    return found


def start_fresh(ctx: loop.Context, meta: RunMeta) -> None:
    """A new run: the weights file, the surgery, and with `run --from-snapshot` Caffe's own
    iteration and solver history."""
    exp, solver = ctx.exp, ctx.solver
    if exp.weights:  # VGG16's fc6/fc7 are reshaped into FCN's convolutional ones
        from nets.weights import transplant

        transplant(solver.net, exp.weights)
    ctx.findings += apply_surgery(solver.net, str(ctx.run.train_net), exp)
    ctx.start_iter = 0
    if meta.start_state:
        restore_state(solver, ctx.run.root / meta.start_state)
        ctx.start_iter = int(solver.iter)
        skip_data_batches(solver.net, ctx.start_iter * exp.solver.iter_size, data_sources(str(ctx.run.train_net)))
        ctx.findings.append(
            Finding(
                "info",
                "from-snapshot",
                None,
                f"continued a Caffe snapshot at iteration {ctx.start_iter} (weights {exp.weights})",
                "none needed",
                {"iteration": ctx.start_iter},
            )
        )
        print(f"continuing from iteration {ctx.start_iter}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) the training described by RUN_DIR; the exit code follows the status."""
    die_with_parent()
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # a sweep's stop counts from the first step on (SignalHook)
    args = WorkerArgs.parse(argv)
    run = RunDir(args.run_dir)
    import yaml

    exp = cfgmod.from_dict(yaml.safe_load(run.config.read_text()), source=str(run.config))
    meta = RunMeta.read(run.meta)
    preflight = read_json(run.findings, [])  # damaged: the run goes on without the pre-flight's
    import caffe

    set_device(exp)
    solver = caffe.get_solver(str(run.solver))
    hooks = build_hooks(solver, exp, meta, preflight)
    ctx = loop.Context(solver=solver, exp=exp, run=run)
    if args.resume is not None:
        ctx.findings += restore(solver, run, hooks, args.resume, exp)
        ctx.start_iter = args.resume
        if args.keep_solver_lr:  # the user set a new solver.base_lr on resume (the parent decided)
            for h in hooks:
                if isinstance(h, LrPlateauHook):
                    h.keep_solver_lr()
        print(f"resumed from iteration {ctx.start_iter}", flush=True)
    else:
        start_fresh(ctx, meta)
    ctx.findings += args.notes
    run.write_summary(
        status=Status.RUNNING, stop_reason=None, iterations=ctx.start_iter, max_iter=exp.solver.max_iter, name=exp.name
    )
    try:
        loop.train(ctx, hooks)
    except KeyboardInterrupt:
        pass
    except Exception as e:  # the hooks' after_train wrote what they could; the parent hears why
        tell_parent(Verdict(ctx.status, ctx.stop_reason or f"{type(e).__name__}: {e}", getattr(e, "filename", None)))
        raise
    tell_parent(Verdict(ctx.status, ctx.stop_reason))
    return ctx.status.exit_code


_told: list[bool] = []


def tell_parent(verdict: Verdict) -> None:
    """The verdict on the pipe the parent gave us (VERDICT_ENV): it arrives even when the disk
    is full and summary.json could not be written. The first verdict wins."""
    fd = os.environ.get(VERDICT_ENV)
    if _told or not fd:
        return
    _told.append(True)
    try:
        os.write(int(fd), verdict.encode())
    except OSError:
        pass


if __name__ == "__main__":
    try:
        flush_and_exit(main())
    except UserError as e:
        tell_parent(Verdict(Status.FAILED, str(e)))
        print(f"error: {e}", file=sys.stderr)
        flush_and_exit(Status.FAILED.exit_code)
    except Exception as exc:
        tell_parent(Verdict(Status.FAILED, f"{type(exc).__name__}: {exc}", getattr(exc, "filename", None)))
        try:
            traceback.print_exc()
        except OSError:
            pass
        flush_and_exit(Status.FAILED.exit_code)
