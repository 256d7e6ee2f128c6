"""The contract between the parent (orchestrator.run.runner, orchestrator.run.supervisor) and the Caffe
child (orchestrator.train.worker): the run's statuses and their exit codes, the verdict the child
sends on a pipe, the child's command line, what net_meta.json holds, and the run directory's
file and snapshot names. Both sides import this module and nothing else of each other; it
imports nothing heavy (no Caffe, no numpy), so the parent never loads the hooks.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, get_args

from common.errors import EXIT_BAD_INPUT, EXIT_OK, UserError
from common.findings import Finding
from common.jsonfile import read_json_object

WORKER_MODULE = "orchestrator.train.worker"  # the child: `python -m WORKER_MODULE` + WorkerArgs.argv()
VERDICT_ENV = "SEGORCH_VERDICT_FD"  # the child writes its Verdict to this file descriptor
EXIT_FINDINGS = 1  # `check` / `doctor-env`: the doctor found errors, something required is missing
EXIT_BROKEN_PIPE = 141  # stdout's reader left (`orchestrate ... | head`): quiet, like a tool ended by SIGPIPE

# the scores of a validation (orchestrator.metrics.scores, val.jsonl, eval.json) that early stop,
# lr-on-plateau and sweeps may monitor and TensorBoard plots
MetricName = Literal["mean_iu", "pixel_accuracy", "mean_accuracy", "fw_iu"]
METRIC_NAMES: tuple[str, ...] = get_args(MetricName)


class Status(StrEnum):
    """A run's status in summary.json; the worker's exit code follows it."""

    RUNNING = "running"
    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"
    FAILED = "failed"

    @property
    def exit_code(self) -> int:
        """0 done as asked, 2 failed, 3 diverged, 130 interrupted (like a shell's SIGINT)."""
        codes = {"completed": EXIT_OK, "early_stopped": EXIT_OK, "diverged": 3, "interrupted": 130}
        return codes.get(self.value, EXIT_BAD_INPUT)

    @property
    def finished(self) -> bool:
        """Done as asked: resume leaves the run alone unless a change asks it to go on."""
        return self in (Status.COMPLETED, Status.EARLY_STOPPED)

    @property
    def weights_sound(self) -> bool:
        """The last weights are worth a final validation and snapshot (not diverged, not failed)."""
        return self.finished or self is Status.INTERRUPTED


@dataclass(frozen=True)
class Verdict:
    """What the child tells the parent on the verdict pipe: it arrives even when the disk is
    full and summary.json could not be written. `file` names the file a write failed on."""

    status: Status
    stop_reason: str | None = None
    file: str | None = None

    def encode(self) -> bytes:
        return (
            json.dumps({"status": self.status.value, "stop_reason": self.stop_reason, "file": self.file}) + "\n"
        ).encode()

    @classmethod
    def decode(cls, text: str) -> Verdict | None:
        """The first line's verdict; None when it is missing, unreadable or not a final status."""
        lines = [x for x in text.splitlines() if x.strip()]
        try:
            d = json.loads(lines[0]) if lines else None
            status = Status(d["status"]) if isinstance(d, dict) else None
        except (json.JSONDecodeError, KeyError, ValueError):
            return None
        if status is None or status is Status.RUNNING or not isinstance(d, dict):
            return None
        return cls(status, d.get("stop_reason"), d.get("file"))


@dataclass(frozen=True)
class WorkerArgs:
    """The child's command line: the run directory, the snapshot iteration to resume, findings
    the parent adds to the run's (what a resume changed), and whether the solver file's base_lr
    wins over the one lr-on-plateau restores (the user changed solver.base_lr on resume)."""

    run_dir: str
    resume: int | None = None
    notes: tuple[Finding, ...] = ()
    keep_solver_lr: bool = False

    def argv(self) -> list[str]:
        """`python -m WORKER_MODULE` plus these arguments."""
        out = ["-m", WORKER_MODULE, self.run_dir]
        out += ["--resume", str(self.resume)] if self.resume is not None else []
        out += ["--keep-solver-lr"] if self.keep_solver_lr else []
        return out + (["--notes", json.dumps([n.to_dict() for n in self.notes])] if self.notes else [])

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> WorkerArgs:
        import argparse

        ap = argparse.ArgumentParser(prog=WORKER_MODULE)
        ap.add_argument("run_dir")
        ap.add_argument("--resume", type=int, metavar="ITER", help="restore snapshots/iter_ITER first")
        ap.add_argument("--notes", default="[]", help="JSON list of findings to add (resume changes)")
        ap.add_argument("--keep-solver-lr", action="store_true", help="the solver file's base_lr wins (set on resume)")
        a = ap.parse_args(argv)
        notes = tuple(Finding.from_dict(d) for d in json.loads(a.notes))
        return cls(a.run_dir, a.resume, notes, a.keep_solver_lr)


def class_labels(names: list[str] | None, num_classes: int) -> list[str]:
    """What reports, pictures, predict and TensorBoard call each of `num_classes` classes: its
    name where one is known, else `class <id>` (the one fallback)."""
    names = list(names or [])[:num_classes]
    return names + [f"class {i}" for i in range(len(names), num_classes)]


PREDICT_WORKER_MODULE = "orchestrator.predict.worker"  # predict's child: `python -m ... JOB_FILE`
TTA_MAX_SCALE = 4.0  # test-time augmentation scales (validation.tta, predict --tta): 4x is 16 passes' time


@dataclass(frozen=True)
class EnsembleModel:
    """One more snapshot whose class probabilities `predict --ensemble` averages with the job's
    own: its run, weights and what its data stage says about the images (each net keeps its own
    preprocessing)."""

    run: str
    weights: str
    snapshot: str  # run-relative snapshot folder
    resize: tuple[int, int] | None = None
    mean_bgr: tuple[float, ...] | None = None
    input_size: tuple[int, int] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EnsembleModel:
        tuples = {k: tuple(d[k]) if d.get(k) is not None else None for k in ("resize", "mean_bgr", "input_size")}
        given: dict[str, Any] = {**d, **tuples}  # an unknown key is refused (TypeError), as PredictJob's
        return cls(**given)


@dataclass(frozen=True)
class PredictJob:
    """What `orchestrate predict` (orchestrator.predict.predict) hands its Caffe child
    (orchestrator.predict.worker) in JOB_FILE: the snapshot, the images, and what the run and
    its data stage say about them (classes, resize, palette, mean, input size)."""

    run: str  # the run directory
    weights: str  # the snapshot's caffemodel
    iteration: int
    snapshot: str  # run-relative snapshot folder (eval.json, the confusion matrix's title)
    pairs: tuple[tuple[str, str | None, str], ...]  # (image, label or None, where: file and line)
    device: str = "cpu"  # cpu or gpu:N
    eval: bool = False
    batch: int = 1
    quiet: bool = False
    num_classes: int | None = None  # None: the net's score channels
    ignore_label: int | None = None
    class_names: tuple[str, ...] | None = None
    resize: tuple[int, int] | None = None  # the data stage's (width, height)
    palette: str | None = None  # the data stage's palette file (colour-coded labels)
    mean_bgr: tuple[float, ...] | None = None  # the data stage's mean
    input_size: tuple[int, int] | None = None  # (H, W) of the data stage's images: a derived deploy net's input
    tta: str | None = None  # test-time augmentation in --tta syntax (orchestrator.predict.tta.parse); None: off
    ensemble: tuple[EnsembleModel, ...] = ()  # more snapshots averaged with this one (predict --ensemble)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> PredictJob:
        """The job as to_json wrote it (JSON's lists back to tuples)."""
        d = json.loads(text)
        d["pairs"] = tuple((str(i), lab, str(w)) for i, lab, w in d["pairs"])
        for k in ("class_names", "resize", "mean_bgr", "input_size"):
            d[k] = tuple(d[k]) if d.get(k) is not None else None
        d["ensemble"] = tuple(EnsembleModel.from_dict(m) for m in d.get("ensemble", ()))
        return cls(**d)


# ------------------------------------------------------------------ run directory names
MARKER = ".segorch-run"  # written when `orchestrate run` creates the folder: only such a folder is ever emptied
LOCK = ".lock"
RESERVE = ".reserve"  # disk space held during a run, freed to write the verdict when the run fills the disk
START_STATE = "start.solverstate"  # `run --from-snapshot`: the `caffe train` state the run continues from
RUN_FILES = {
    "config": "config.yaml",
    "train_net": "train.prototxt",
    "val_net": "val.prototxt",
    "deploy_net": "deploy.prototxt",
    "solver": "solver.prototxt",
    "metrics": "metrics.jsonl",
    "val": "val.jsonl",
    "summary": "summary.json",
    "report": "report.md",
    "curves": "curves.png",
    "log": "caffe.log",
    "meta": "net_meta.json",
    "findings": "findings.json",
    "snapshots": "snapshots",
    "partial": "snapshots/.partial",
    "best": "best",
    "tb": "tb",
}  # best: the best validation's pictures; tb: TensorBoard events
BEST_INFO, CONFUSION = "best.json", "confusion.png"  # in best/: which iteration and images; the matrix
EVAL_FILE = "eval.json"  # predict --eval's scores in its --out folder (beside CONFUSION)
JOB_FILE = "job.json"  # predict's PredictJob for its child, in the partial --out folder
# a snapshot folder snapshots/iter_<N>/ holds these, and manifest.json with their sizes and sha256
WEIGHTS, STATE, HOOKS, MANIFEST = "weights.caffemodel", "state.solverstate", "hooks.json", "manifest.json"
SNAP_FILES = (WEIGHTS, STATE, HOOKS)
CAFFE_PREFIX = "snap"  # Caffe's snapshot_prefix inside RUN_FILES["partial"]
_SNAP_RE = re.compile(r"^iter_(\d+)$")


def snapshot_name(iteration: int) -> str:
    """The folder name of the snapshot at `iteration` (relative to snapshots/)."""
    return f"iter_{iteration}"


def snapshot_iteration(name: str) -> int | None:
    """The iteration of a snapshot folder name, None for anything else (iter_N.tmp, .corrupt)."""
    m = _SNAP_RE.match(name)
    return int(m.group(1)) if m else None


def snapshot_relpath(iteration: int) -> str:
    """The snapshot's path relative to the run directory (summary.json: the run dir stays relocatable)."""
    return f"{RUN_FILES['snapshots']}/{snapshot_name(iteration)}"


def caffe_snapshot_files(prefix: Path, iteration: int) -> tuple[Path, Path]:
    """(caffemodel, solverstate) that Caffe's solver.snapshot() writes for `prefix` at `iteration`."""
    base = f"{prefix}_iter_{iteration}"
    return Path(base + ".caffemodel"), Path(base + ".solverstate")


# ------------------------------------------------------------------ net_meta.json
META_VERSION = 1


@dataclass
class RunMeta:
    """What net_meta.json holds: what the worker needs about the net that its prototxt does not
    say. `net` keeps every other key as found (a generated net's arch, loss, filler...; a user
    net's `# segorch-meta:` header): informative, written back flat as it came, never read."""

    num_classes: int | None = None
    ignore_label: int | None = None
    class_names: list[str] | None = None
    val_images: int = 0  # images one validation pass covers; 0: no validation
    loss_normalization: str | None = None  # for the divergence diagnosis
    start_state: str | None = None  # `run --from-snapshot`: START_STATE in the run dir
    start_iter: int | None = None
    net: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunMeta:
        """Known keys become fields, the rest goes to `net` (files written before a field
        existed lack it: its default holds)."""
        known = {f.name for f in fields(cls)} - {"net"}
        meta = cls(
            **{k: v for k, v in d.items() if k in known},
            net={k: v for k, v in d.items() if k not in known and k != "meta_version"},
        )
        meta.val_images = int(meta.val_images or 0)
        return meta

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON object, as net_meta.json has always held it, plus `meta_version`."""
        d = asdict(self)
        return {**d.pop("net"), **d, "meta_version": META_VERSION}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def read(cls, path: Path) -> RunMeta:
        """net_meta.json of a run (any version so far); UserError naming the file when it is
        missing, damaged, or written by a newer version."""
        fix = "start the run again with orchestrate run --fresh"
        try:
            d = read_json_object(path, str(path), fix)
        except FileNotFoundError:
            raise UserError(f"{path} is missing", fix) from None
        version = d.get("meta_version", 1)
        if not isinstance(version, int) or version > META_VERSION:
            raise UserError(
                f"{path} was written by a newer segorch (meta_version {version!r}, this one reads {META_VERSION})",
                "continue this run with the version that started it",
            )
        return cls.from_dict(d)
