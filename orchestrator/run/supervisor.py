"""The parent's watch over the Caffe child (orchestrator.train.worker): start it with the run
directory's lock and a verdict pipe, forward SIGINT/SIGTERM, and afterwards make summary.json
and the console tell what happened in *this* invocation, also when the child was killed by
Caffe's abort or the disk is full."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from typing import Any

from common.child import ChildResult, die_with_parent_env, quiet_glog_env, result_from_log
from common.findings import Finding
from orchestrator.contract import EXIT_BAD_INPUT, VERDICT_ENV, Status, Verdict, WorkerArgs
from orchestrator.jsonio import io_error_text, read_jsonl
from orchestrator.rundir import RunDir, disk_nearly_full


def abort_finding(code_hint: str, res: ChildResult, disk_full: bool = False) -> Finding:
    """Caffe's last fatal line (or the signal) as a finding with a fix."""
    msg = res.fatal or f"the Caffe process ended with {res.signal_name or f'exit code {res.returncode}'}"
    text = msg.lower()
    if disk_full or "serializetoostream" in text or (res.fatal_source or "").startswith("io.cpp"):
        return Finding(
            "error",
            "write-failed",
            None,
            f"Caffe could not write a file in the run directory ({'no space left on device' if disk_full else msg})",
            "free disk space (or move the run directory) and continue with orchestrate resume RUN_DIR: "
            "the complete snapshots are intact",
        )
    attributed = _caffe_check(res, msg) if res.fatal else None
    if attributed is not None:
        return attributed
    if "out of memory" in text:
        return Finding(
            "error",
            "gpu-out-of-memory",
            res.layer,
            f"the GPU ran out of memory: {msg}",
            "use a smaller data.batch_size or crop (data.augment.crop), or a GPU with more memory",
        )
    if "cuda" in text or "cpu-only" in text or "no_gpu" in text or "gpu" in text:
        return Finding(
            "error",
            "gpu-unavailable",
            res.layer,
            f"Caffe could not use the GPU: {msg}",
            "set device: cpu, or build with CAFFE_GPU=1 on a machine with a working NVIDIA driver",
        )
    if res.fatal:
        return Finding(
            "error",
            "net-invalid",
            res.layer,
            f"Caffe aborted ({res.fatal_source}): {msg}",
            "fix the layer named in Caffe's message (shapes, crop offsets, bottoms) and run again"
            if res.layer
            else "see caffe.log in the run directory for what Caffe was doing",
        )
    return Finding(
        "error",
        code_hint,
        None,
        msg,
        "see caffe.log in the run directory; continue from the last snapshot with orchestrate resume RUN_DIR",
    )


# the sources of Caffe's solvers: their CHECKs are about solver settings, never a layer
_SOLVER_SOURCES = re.compile(r"^(sgd_solvers?\.(?:hpp|cpp)|solver\.cpp|solver_factory\.hpp|\w+_solver\.(?:cpp|cu))")


def _caffe_check(res: ChildResult, msg: str) -> Finding | None:
    """A Caffe CHECK that is not a layer's, pinned on what failed: a snapshot's history, a
    weights file, the solver's settings (None: leave it to the layer and device rules)."""
    src = res.fatal_source or ""
    if "history" in msg:
        m = re.search(r"\((\d+) vs\. (\d+)\)", msg)
        counts = f": the state holds {m.group(1)} history blobs, this net and solver need {m.group(2)}" if m else ""
        return Finding(
            "error",
            "snapshot-mismatch",
            None,
            f"the solver state does not fit this net or solver type ({src}: {msg}){counts}",
            "continue a state with the net and solver type that wrote it (Adam and AdaDelta keep two history "
            "blobs per weight, the others one); to start from its weights only, give the .caffemodel as weights:",
        )
    read = re.search(r"ReadProtoFromBinaryFile.*Failed to parse \w+ file: (\S+)", msg)
    if read:
        return Finding(
            "error",
            "weights-unreadable",
            None,
            f"Caffe could not read {read.group(1)} ({src}): {msg}",
            "the file is truncated or not a caffemodel: give an intact one (a run's own snapshots are "
            "checked against their manifest by orchestrate resume)",
        )
    if "Cannot copy param" in msg:
        return Finding(
            "error",
            "weights-mismatch",
            res.layer,
            f"the weights do not fit the net ({src}): {msg}",
            "give weights saved from this net, or rename the layer whose shape changed so it starts from its filler",
        )
    if _SOLVER_SOURCES.match(src):
        return Finding(
            "error",
            "solver-invalid",
            None,
            f"Caffe's solver refused its settings ({src}): {msg}",
            "fix the solver setting named in Caffe's message (orchestrate validate names the combinations "
            "Caffe refuses)",
        )
    return None


def _start(run: RunDir, args: WorkerArgs, verdict_w: int) -> subprocess.Popen[bytes]:
    env = {**quiet_glog_env(), **die_with_parent_env()}
    env[VERDICT_ENV] = str(verdict_w)
    fds = tuple(fd for fd in (verdict_w, run.lock_fd) if fd is not None)
    with open(run.log, "ab") as log:
        return subprocess.Popen([sys.executable, *args.argv()], stderr=log, env=env, pass_fds=fds)


def _read_verdict(fd: int) -> Verdict | None:
    chunks = []
    while True:
        block = os.read(fd, 65536)
        if not block:
            break
        chunks.append(block)
    os.close(fd)
    return Verdict.decode(b"".join(chunks).decode(errors="replace"))


def supervise(
    run: RunDir, resume: int | None = None, notes: list[Finding] | None = None, keep_solver_lr: bool = False
) -> int:
    """Run the worker child (resuming snapshot `resume`, adding `notes` to the run's findings,
    `keep_solver_lr`: WorkerArgs); forward SIGINT/SIGTERM; settle the verdict."""
    offset = run.log.stat().st_size if run.log.exists() else 0
    # this invocation starts as running: a stale status of an earlier one is never reported
    run.write_summary(status=Status.RUNNING, stop_reason=None)
    run.reserve_space()
    r, w = os.pipe()
    proc = _start(run, WorkerArgs(str(run.root), resume, tuple(notes or ()), keep_solver_lr), w)
    os.close(w)

    def forward(signum: int, frame: object) -> None:
        proc.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    try:
        rc = proc.wait()
    finally:
        for s, h in old.items():  # a sweep's stop (SIGUSR1) for a run that has ended: nothing to do
            signal.signal(s, signal.SIG_IGN if s == signal.SIGUSR1 else h)
    verdict = _read_verdict(r)
    try:
        return _settle(run, rc, verdict, offset)
    except OSError as e:  # the disk is full (or gone): say so in one line
        run.remove_temp_files()
        print(f"\nrun failed: {io_error_text(e)}\nrun directory: {run.root}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _settle(run: RunDir, rc: int, verdict: Verdict | None, offset: int) -> int:
    full = disk_nearly_full(run.root)  # before the reserve and the half-written snapshot are freed
    run.release_space()
    summary = run.summary_data()
    if verdict is not None and rc == verdict.status.exit_code:
        if summary.get("status") != verdict.status.value:  # the child could not write it (disk full?)
            run.remove_temp_files()
            summary = run.write_summary(status=verdict.status, stop_reason=verdict.stop_reason)
        if verdict.status is Status.FAILED:
            cause = verdict.stop_reason or "the worker failed"
            if verdict.file:
                cause += f" ({verdict.file})"
            print(f"\nrun failed: {cause}\nrun directory: {run.root}", file=sys.stderr)
            _findings_lines(summary)
            return rc
        closing_line(run, summary)
        return rc
    res = result_from_log(rc, run.log, offset)
    run.remove_temp_files()
    f = abort_finding("child-died", res, full)
    findings = summary.get("findings", []) + [f.to_dict()]
    bad = _first_non_finite(run)
    if bad is not None:  # Caffe crashed on the NaNs it produced: that is a divergence, not a bug
        d = Finding(
            "error",
            "diverged",
            None,
            f"diverged at iteration {bad}: the loss became non-finite and Caffe then crashed ({res.signal_name or rc})",
            "lower solver.base_lr (try 10x smaller), keep the loss normalized (VALID), or set solver.clip_gradients",
            {"iteration": bad},
        )
        run.write_summary(
            status=Status.DIVERGED,
            stop_reason=f"non-finite loss at iteration {bad}",
            iterations=bad,
            findings=findings + [d.to_dict()],
        )
        print(f"\nstatus: {Status.DIVERGED}\n{d}", file=sys.stderr)
        return Status.DIVERGED.exit_code
    # the child died without its verdict (kill -9, an abort): its logs tell how far it trained
    done = max(int(summary.get("iterations") or 0), run.trained_iterations())
    run.write_summary(status=Status.FAILED, stop_reason=f"{f.code}: {f.message}", findings=findings, iterations=done)
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
        if "loss" in rec and rec["loss"] is None:
            return int(rec["iter"])
    return None


def last_val(run: RunDir) -> dict[str, Any] | None:
    """The newest validation record (for the closing line)."""
    recs = read_jsonl(run.val)
    return recs[-1] if recs else None


def _findings_lines(summary: dict[str, Any]) -> None:
    for f in summary.get("findings", []):
        if f["severity"] == "error":
            print(f"  {f['severity']} {f['code']} [{f.get('layer')}]: {f['message']}\n    fix: {f['fix']}")


def closing_line(run: RunDir, summary: dict[str, Any]) -> None:
    """Status, val mIoU (and the best) and where the report is."""
    val = last_val(run)
    best = summary.get("best") or {}
    bm = (best.get("metrics") or {}).get("mean_iu")
    print(f"\nstatus: {summary['status']} ({summary.get('stop_reason')})")
    if val:
        print(
            f"val mIoU: {val['mean_iu']:.4f} at iteration {val['iter']}"
            + (f" (best {bm:.4f} at {best['iteration']})" if bm is not None else "")
        )
    print(f"curves: {run.curves}\nreport: {run.report}\nsummary: {run.summary}")
    _findings_lines(summary)
    from orchestrator.run.console import next_step

    step = next_step(run, summary)
    if step:
        print(step)
