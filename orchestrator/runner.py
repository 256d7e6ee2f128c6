"""The parent side of `orchestrate run/resume`: prepare the run directory, pre-flight with the
doctor, then supervise the Caffe child (orchestrator.worker) and turn an abort into a verdict."""
from __future__ import annotations

import ctypes
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from common.child import quiet_glog_env, result_from_log
from common.errors import UserError
from common.findings import Finding, has_errors
from orchestrator import config as cfgmod
from orchestrator.rundir import RunDir, read_jsonl
from orchestrator.worker import EXIT_CODES, last_val

EXIT_BAD_INPUT = 2


def read_stats(data_dir: str) -> dict[str, Any]:
    """The data stage's stats.json of an output dir (UserError naming the dir when absent)."""
    p = Path(data_dir) / "stats.json"
    if not p.exists():
        raise UserError(f"data dir {data_dir}: no stats.json (not built by `orchestrate data build`)",
                        "build it with orchestrate data build, or add data.build to the experiment")
    return json.loads(p.read_text())


def ensure_data(exp: cfgmod.Experiment) -> None:
    """Build the LMDBs from data.build's raw lists when they are missing or older than the lists."""
    b = exp.data.build
    if b is None:
        return
    from data_prep.build import build_dataset
    jobs = [(exp.data.train, b.train_list)] + ([(exp.data.val, b.val_list)] if exp.data.val and b.val_list else [])
    for out, lst in jobs:
        lst_path = Path(b.root) / lst
        stats = Path(out) / "stats.json"
        if stats.exists() and (not lst_path.exists() or stats.stat().st_mtime >= lst_path.stat().st_mtime):
            continue
        print(f"building {out} from {lst_path}", flush=True)
        build_dataset(Path(out), num_classes=b.num_classes, ignore_label=b.ignore_label, list_file=lst_path,
                      root=Path(b.root), overwrite=stats.exists(), encoded=b.encoded, quiet=True,
                      **({"resize": tuple(int(v) for v in b.resize.lower().split("x"))} if b.resize else {}))


def make_nets(exp: cfgmod.Experiment, run: RunDir) -> dict[str, Any]:
    """Write train/val/deploy prototxts into the run dir; return the net's meta (classes, loss...)."""
    import nets
    from nets.prototxt import read_meta
    if exp.net.prototxt:
        shutil.copyfile(exp.net.prototxt, run.train_net)
        if exp.net.val_prototxt:
            shutil.copyfile(exp.net.val_prototxt, run.val_net)
        meta = read_meta(run.train_net.read_text()) or {}
        meta.setdefault("num_classes", exp.net.num_classes)
        meta.setdefault("ignore_label", exp.net.ignore_label)
        meta["val_images"] = exp.validation.max_images or 0
        return meta
    stats = read_stats(exp.data.train)
    num_classes = exp.net.num_classes or int(stats["num_classes"])
    ignore = exp.net.ignore_label if exp.net.ignore_label is not None else stats.get("ignore_label")
    mean = tuple(stats["mean_bgr"]) if stats.get("mean_bgr") else None
    a = exp.data.augment

    def source(d: str, batch: int, train: bool) -> nets.DataSource:
        aug = dict(mirror=a.mirror, crop=tuple(a.crop) if a.crop else None,
                   scale=tuple(a.scale) if a.scale else None) if train else {}
        return nets.DataSource(images=str(Path(d) / "images"), labels=str(Path(d) / "labels"), batch_size=batch,
                               kind=exp.data.layer, mean_bgr=mean, seed=exp.seed, shuffle=train, **aug)
    val_src = source(exp.data.val, exp.data.val_batch_size, False) if exp.data.val else None
    n = exp.net
    g = nets.generate(n.arch, num_classes=num_classes, train_data=source(exp.data.train, exp.data.batch_size, True),
                      val_data=val_src, deploy_shape=(int(stats.get("height", 64)), int(stats.get("width", 64))),
                      width=n.width, depth=n.depth, batch_norm=n.batch_norm, filler=n.filler, loss=n.loss,
                      normalization=n.normalization, ignore_label=ignore, learn_upsample=n.learn_upsample,
                      infogain_file=str(Path(exp.data.train) / "infogain_H.binaryproto") if n.loss == "infogain" else None)
    g.write(run.root)
    meta = dict(g.meta)
    meta["class_names"] = stats.get("class_names")
    val_n = int(read_stats(exp.data.val)["num_records"]) if exp.data.val else 0
    meta["val_images"] = min(val_n, exp.validation.max_images or val_n)
    return meta


def solver_text(exp: cfgmod.Experiment, run: RunDir, has_val: bool) -> str:
    """solver.prototxt: Caffe's own testing and snapshotting are off; hooks do both."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    s, p = exp.solver, caffe_pb2.SolverParameter()
    p.train_net = str(run.train_net)
    if has_val:
        p.test_net.append(str(run.val_net))
        p.test_iter.append(1)
        p.test_interval = s.max_iter + 1
        p.test_initialization = False
    p.type, p.base_lr, p.lr_policy, p.gamma, p.power = s.type, s.base_lr, s.lr_policy, s.gamma, s.power
    p.stepsize, p.momentum, p.weight_decay, p.iter_size = s.stepsize, s.momentum, s.weight_decay, s.iter_size
    p.stepvalue.extend(s.stepvalue)
    if s.type == "Adam":
        p.momentum2 = s.momentum2
    p.clip_gradients, p.max_iter, p.display, p.snapshot = s.clip_gradients, s.max_iter, 0, 0
    p.snapshot_prefix = str(run.partial / "snap")
    p.random_seed = exp.seed
    p.solver_mode = caffe_pb2.SolverParameter.GPU if exp.gpu_id is not None else caffe_pb2.SolverParameter.CPU
    p.device_id = exp.gpu_id or 0
    return text_format.MessageToString(p)


def preflight(exp: cfgmod.Experiment, run: RunDir, meta: dict[str, Any]) -> list[Finding]:
    """The doctor on the run's own nets and solver (static rules + a one-batch probe in a child)."""
    from nets.doctor import diagnose
    stats = read_stats(exp.data.train) if not exp.net.prototxt else None
    return diagnose(str(run.train_net), val_prototxt=str(run.val_net) if run.val_net.exists() else None,
                    solver=str(run.solver), weights=exp.weights, data_stats=stats, meta=meta, dynamic=True)


def prepare(exp: cfgmod.Experiment, run_dir: str, force: bool, fresh: bool) -> tuple[RunDir, list[Finding]]:
    """Create the run directory with everything the worker needs; returns the pre-flight findings."""
    run = RunDir(run_dir)
    if run.root.exists() and any(run.root.iterdir()):
        if not fresh:
            raise UserError(f"{run.root} already exists", f"resume it with `orchestrate resume {run.root}`, "
                            "pass --fresh to start over, or choose --run-dir")
        shutil.rmtree(run.root)
    if exp.weights and exp.weights.endswith(".solverstate"):
        raise UserError(f"weights: {exp.weights} is a solver state, not weights",
                        "give a .caffemodel as weights; to continue a run use orchestrate resume RUN_DIR")
    if exp.weights and not Path(exp.weights).is_file():
        raise UserError(f"weights: {exp.weights} not found", "give the path of a .caffemodel")
    run.create()
    run.config.write_text(cfgmod.to_yaml(exp))
    ensure_data(exp)
    meta = make_nets(exp, run)
    run.meta.write_text(json.dumps(meta, indent=2))
    run.solver.write_text(solver_text(exp, run, run.val_net.exists()))
    findings = preflight(exp, run, meta)
    run.findings.write_text(json.dumps([f.to_dict() for f in findings], indent=2))
    return run, findings


def _die_with_parent() -> None:
    """In the child: receive SIGKILL when the parent dies, so no orphan keeps training."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def abort_finding(code_hint: str, res: Any) -> Finding:
    """Caffe's last fatal line (or the signal) as a finding with a fix."""
    msg = res.fatal or f"the Caffe process ended with {res.signal_name or f'exit code {res.returncode}'}"
    text = msg.lower()
    if "cuda" in text or "cpu-only" in text or "no_gpu" in text or "gpu" in text:
        return Finding("error", "gpu-unavailable", res.layer, f"Caffe could not use the GPU: {msg}",
                       "set device: cpu, or build with CAFFE_GPU=1 on a machine with a working NVIDIA driver")
    if res.fatal:
        return Finding("error", "net-invalid", res.layer, f"Caffe aborted ({res.fatal_source}): {msg}",
                       "fix the layer named in Caffe's message (shapes, crop offsets, bottoms) and run again")
    return Finding("error", code_hint, None, msg, "see caffe.log in the run directory; "
                   "continue from the last snapshot with orchestrate resume RUN_DIR")


def supervise(run: RunDir, resume: bool) -> int:
    """Run the worker child; forward SIGINT/SIGTERM; write the verdict if it dies without one."""
    offset = run.log.stat().st_size if run.log.exists() else 0
    with open(run.log, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.worker", str(run.root)] + (["--resume"] if resume else []),
                                stderr=log, env=quiet_glog_env(), preexec_fn=_die_with_parent)
    forward = lambda signum, frame: proc.send_signal(signum)  # noqa: E731
    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        rc = proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    summary = run.summary_data()
    if rc in EXIT_CODES.values() and summary.get("status") not in (None, "running"):
        _closing_line(run, summary)
        return rc
    res = result_from_log(rc, run.log, offset)
    f = abort_finding("child-died", res)
    findings = summary.get("findings", []) + [f.to_dict()]
    bad = _first_non_finite(run)
    if bad is not None:  # Caffe crashed on the NaNs it produced: that is a divergence, not a bug
        d = Finding("error", "diverged", None, f"diverged at iteration {bad}: the loss became non-finite and "
                    f"Caffe then crashed ({res.signal_name or rc})", "lower solver.base_lr (try 10x smaller), keep "
                    "the loss normalized (VALID), or set solver.clip_gradients", {"iteration": bad})
        run.write_summary(status="diverged", stop_reason=f"non-finite loss at iteration {bad}",
                          iterations=bad, findings=findings + [d.to_dict()])
        print(f"\nstatus: diverged\n{d}", file=sys.stderr)
        return EXIT_CODES["diverged"]
    run.write_summary(status="failed", stop_reason=f"{f.code}: {f.message}", findings=findings)
    try:
        from orchestrator import report
        report.write_all(run)
    except Exception:  # the verdict matters more than the pictures
        pass
    print(f"\nrun failed: {f}\nrun directory: {run.root}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _first_non_finite(run: RunDir) -> int | None:
    """Iteration of the first non-finite loss in metrics.jsonl (JSON null), if any."""
    for rec in read_jsonl(run.metrics):
        if rec.get("loss") is None:
            return int(rec["iter"])
    return None


def _closing_line(run: RunDir, summary: dict[str, Any]) -> None:
    val = last_val(run)
    best = summary.get("best") or {}
    bm = (best.get("metrics") or {}).get("mean_iu")
    print(f"\nstatus: {summary['status']} ({summary.get('stop_reason')})")
    if val:
        print(f"val mIoU: {val['mean_iu']:.4f} at iteration {val['iter']}" + (f" (best {bm:.4f} at {best['iteration']})" if bm is not None else ""))
    print(f"curves: {run.curves}\nreport: {run.report}\nsummary: {run.summary}")
    for f in summary.get("findings", []):
        if f["severity"] == "error":
            print(f"  {f['severity']} {f['code']} [{f.get('layer')}]: {f['message']}\n    fix: {f['fix']}")


def run_experiment(exp: cfgmod.Experiment, run_dir: str, *, force: bool = False, fresh: bool = False) -> int:
    """`orchestrate run`: prepare, pre-flight (errors stop unless force), train in a child."""
    run, findings = prepare(exp, run_dir, force, fresh)
    for f in findings:
        if f.severity != "info":
            print(str(f), file=sys.stderr)
    if has_errors(findings) and not force:
        run.write_summary(status="failed", stop_reason="pre-flight: the doctor found errors (use --force to train anyway)",
                          iterations=0, name=exp.name, findings=[f.to_dict() for f in findings])
        print(f"\nstopped before training: {sum(f.severity == 'error' for f in findings)} error finding(s); "
              f"see {run.summary}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return supervise(run, resume=False)


def resume_run(path: str) -> int:
    """`orchestrate resume RUN_DIR`: continue from the newest complete snapshot."""
    p = Path(path)
    if p.suffix in (".caffemodel", ".solverstate") or p.is_file():
        raise UserError(f"{path} is a file; resume needs the run directory (it holds the solver state, "
                        "the weights and the hooks' state)", "give the run directory, e.g. orchestrate resume runs/demo")
    from orchestrator.rundir import require_run_dir
    run = require_run_dir(path)
    if run.latest_snapshot() is None:
        raise UserError(f"{run.root}: no complete snapshot to resume from", "start again with orchestrate run --fresh")
    return supervise(run, resume=True)

