"""The child process that owns Caffe during a run: `python -m orchestrator.worker RUN_DIR [--resume]`.

The parent (orchestrator.runner) prepared the run directory; this process builds the solver,
does surgery, restores a snapshot when resuming, and runs the loop with its hooks. If Caffe
aborts (glog CHECK), this process dies and the parent writes the verdict.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any

from common.errors import UserError
from common.findings import Finding
from orchestrator import config as cfgmod
from orchestrator import loop, rules, surgery
from orchestrator.hooks.data_state import DataStateHook
from orchestrator.hooks.divergence import DivergenceHook
from orchestrator.hooks.early_stop import EarlyStopHook, LrPlateauHook
from orchestrator.hooks.progress import ProgressHook
from orchestrator.hooks.signals import SignalHook
from orchestrator.hooks.snapshot import SnapshotHook
from orchestrator.hooks.stats import StatsHook
from orchestrator.hooks.validation import ValidationHook
from orchestrator.hooks.writers import MetricsWriter, SummaryWriter
from orchestrator.rundir import RunDir, read_jsonl

EXIT_CODES = {"completed": 0, "early_stopped": 0, "failed": 2, "diverged": 3, "interrupted": 130}


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
    """Bilinear kernels into the upsampling Deconvolutions (or the layers named in surgery.layers)."""
    from nets.prototxt import load_net
    if not exp.surgery.bilinear:
        return []
    param = load_net(train_prototxt)
    deconvs = {l.name: l for l in param.layer if l.type == "Deconvolution"}
    names = exp.surgery.layers or [n for n, l in deconvs.items() if max(list(l.convolution_param.stride) or [1]) > 1]
    out = []
    for name in names:
        if name not in deconvs or name not in net.params:
            raise UserError(f"surgery.layers: '{name}' is not a Deconvolution with weights in {train_prototxt}",
                            f"name one of: {', '.join(deconvs) or 'none'}")
        group = deconvs[name].convolution_param.group or 1
        blob = net.params[name][0]
        blob.data[...] = surgery.bilinear_weights(blob.data.shape, group, name)
        if not surgery.is_bilinear(blob.data, group, name):
            raise RuntimeError(f"surgery on {name} did not take effect")
        out.append(Finding("info", "surgery", name, f"bilinear kernel {blob.data.shape[2]}x{blob.data.shape[3]} "
                           f"set on {blob.data.shape[0]} channels (group {group}) and verified", "none needed"))
    return out


def build_hooks(solver: Any, exp: cfgmod.Experiment, run: RunDir, meta: dict[str, Any],
                preflight: list[dict[str, Any]]) -> list[loop.Hook]:
    """The hooks in their order: statistics before the rules, validation before early stop and snapshots."""
    c = exp.checks
    thresholds = rules.Thresholds(c.loss_factor, c.loss_window, c.warmup, c.saturation_loss,
                                  c.update_ratio_max, c.update_ratio_min, c.zero_blobs)
    hooks: list[loop.Hook] = [SignalHook(), DataStateHook(solver), StatsHook(c.stats_interval),
                              DivergenceHook(thresholds, meta.get("loss_normalization"))]
    if exp.validation.enabled and meta.get("val_images"):
        monitor = exp.early_stop.metric if exp.early_stop.enabled else "mean_iu"
        hooks.append(ValidationHook(exp.validation.interval, meta["val_images"], exp.data.val_batch_size,
                                    meta["num_classes"], meta.get("ignore_label"), monitor))
    if exp.lr_on_plateau.enabled:
        p = exp.lr_on_plateau
        hooks.append(LrPlateauHook(p.metric, p.patience, p.min_delta, p.factor, p.min_lr))
    if exp.early_stop.enabled:
        hooks.append(EarlyStopHook(exp.early_stop.metric, exp.early_stop.patience, exp.early_stop.min_delta))
    hooks += [MetricsWriter(exp.progress.log_interval), ProgressHook(exp.progress.quiet)]
    s = exp.snapshot
    hooks.append(SnapshotHook(s.interval, s.keep_last, s.keep_best,
                              lambda: {h.name: h.state_dict() for h in hooks}))
    hooks.append(SummaryWriter(preflight))
    return hooks


def restore(solver: Any, run: RunDir, hooks: list[loop.Hook]) -> int:
    """Load the newest complete snapshot into the solver and hooks; trim the logs after it."""
    latest = run.latest_snapshot()
    if latest is None:
        raise UserError(f"{run.root}: no complete snapshot to resume from", "start again with orchestrate run")
    it, snap = latest
    solver.net.copy_from(str(snap / "weights.caffemodel"))
    solver.restore(str(snap / "state.solverstate"))
    saved = json.loads((snap / "hooks.json").read_text())["hooks"]
    for h in hooks:
        if h.name in saved:
            h.load_state_dict(saved[h.name])
    run.truncate_after(run.metrics, it)
    run.truncate_after(run.val, it)
    return it


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) the training described by RUN_DIR; the exit code follows the status."""
    ap = argparse.ArgumentParser(prog="orchestrator.worker")
    ap.add_argument("run_dir")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    run = RunDir(args.run_dir)
    import yaml
    exp = cfgmod.from_dict(yaml.safe_load(run.config.read_text()), source=str(run.config))
    meta = json.loads(run.meta.read_text())
    preflight = json.loads(run.findings.read_text()) if run.findings.exists() else []
    import caffe
    set_device(exp)
    solver = caffe.get_solver(str(run.solver))
    hooks = build_hooks(solver, exp, run, meta, preflight)
    ctx = loop.Context(solver=solver, exp=exp, run=run, meta=meta)
    if args.resume:
        ctx.start_iter = restore(solver, run, hooks)
        print(f"resumed from iteration {ctx.start_iter}", flush=True)
    else:
        if exp.weights:  # VGG16's fc6/fc7 are reshaped into FCN's convolutional ones
            from nets.weights import transplant
            transplant(solver.net, exp.weights)
        ctx.findings += apply_surgery(solver.net, str(run.train_net), exp)
        ctx.start_iter = 0
    run.write_summary(status="running", stop_reason=None, iterations=ctx.start_iter, name=exp.name)
    try:
        loop.train(ctx, hooks)
    except KeyboardInterrupt:
        pass
    return EXIT_CODES.get(ctx.status, 2)


def last_val(run: RunDir) -> dict[str, Any] | None:
    """The newest validation record (for the parent's closing line)."""
    recs = read_jsonl(run.val)
    return recs[-1] if recs else None


def _exit_now(code: int) -> None:
    """Leave without running C++ destructors: after non-finite values Caffe's heap may be corrupt
    (MaxPooling's backward writes at index -1 when its max mask never set on NaN), and tearing the
    net down would then abort a run whose verdict is already written."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    try:
        _exit_now(main())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        _exit_now(2)
    except Exception:
        traceback.print_exc()
        _exit_now(2)
