"""The parent/worker contract: statuses and exit codes, the verdict line, the worker's command
line, net_meta.json across versions, and the run directory's names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import UserError
from common.findings import Finding
from orchestrator.contract import (
    META_VERSION,
    RunMeta,
    Status,
    Verdict,
    WorkerArgs,
    caffe_snapshot_files,
    snapshot_iteration,
    snapshot_name,
    snapshot_relpath,
)
from orchestrator.rundir import RunDir
from tests.conftest import REPO


def test_status_exit_codes_and_kinds() -> None:
    assert {s.value: s.exit_code for s in Status} == {
        "running": 2,
        "completed": 0,
        "early_stopped": 0,
        "diverged": 3,
        "interrupted": 130,
        "failed": 2,
    }
    assert {s for s in Status if s.finished} == {Status.COMPLETED, Status.EARLY_STOPPED}
    assert {s for s in Status if s.weights_sound} == {Status.COMPLETED, Status.EARLY_STOPPED, Status.INTERRUPTED}
    assert f"{Status.EARLY_STOPPED}" == "early_stopped" and Status("diverged") is Status.DIVERGED


def test_verdict_line() -> None:
    v = Verdict(Status.FAILED, "OSError: no space left", "/run/summary.json")
    assert Verdict.decode(v.encode().decode()) == v
    assert json.loads(v.encode()) == {
        "status": "failed",
        "stop_reason": "OSError: no space left",
        "file": "/run/summary.json",
    }
    # the first line counts; a torn, unknown or non-final verdict is no verdict
    first = Verdict.decode(Verdict(Status.COMPLETED).encode().decode() + '{"status": "failed"}\n')
    assert first is not None and first.status is Status.COMPLETED
    for bad in ("", "\n", '{"status": "runn', '{"status": "done"}', '{"status": "running"}', "[1]", '{"x": 1}'):
        assert Verdict.decode(bad) is None, bad


def test_worker_args_round_trip() -> None:
    note = Finding("info", "resume-changes", None, "m", "none needed", {"solver.base_lr": [0.1, 0.2]})
    args = WorkerArgs("/runs/a", 40, (note,))
    argv = args.argv()
    assert argv[:3] == ["-m", "orchestrator.train.worker", "/runs/a"]
    assert WorkerArgs.parse(argv[2:]) == args
    assert WorkerArgs.parse(WorkerArgs("/runs/b").argv()[2:]) == WorkerArgs("/runs/b", None, ())
    # keeping the user's lr is the parent's typed decision, not read from a finding's data
    assert not WorkerArgs.parse(argv[2:]).keep_solver_lr
    kept = WorkerArgs("/runs/a", 40, (), keep_solver_lr=True)
    assert "--keep-solver-lr" in kept.argv() and WorkerArgs.parse(kept.argv()[2:]) == kept


START = "start.solverstate"
# net_meta.json as `orchestrate run` wrote it before RunMeta (a generated compact net, from --from-snapshot)
OLD_META = {
    "arch": "compact",
    "num_classes": 5,
    "ignore_label": 255,
    "loss": "softmax",
    "loss_normalization": "VALID",
    "batch_norm": False,
    "filler": "msra",
    "learn_upsample": False,
    "data_kind": "lmdb",
    "infogain_file": None,
    "backbone": "compact",
    "width": 16,
    "depth": 3,
    "total_stride": 8,
    "input_scale": 0.00390625,
    "upsample_layers": ["upscore"],
    "class_names": ["a", "b", "c", "d", "e"],
    "val_images": 12,
    "start_state": "start.solverstate",
    "start_iter": 40,
}


def test_run_meta_reads_old_files_and_keeps_every_key(tmp_path: Path) -> None:
    p = tmp_path / "net_meta.json"
    p.write_text(json.dumps(OLD_META))
    meta = RunMeta.read(p)
    assert (meta.num_classes, meta.ignore_label, meta.val_images, meta.loss_normalization) == (5, 255, 12, "VALID")
    assert meta.class_names == ["a", "b", "c", "d", "e"] and (meta.start_state, meta.start_iter) == (START, 40)
    assert meta.net["upsample_layers"] == ["upscore"] and "num_classes" not in meta.net
    meta.write(p)
    again = json.loads(p.read_text())
    assert again == {**OLD_META, "meta_version": META_VERSION}  # flat as before, nothing lost
    assert RunMeta.read(p) == meta


def test_run_meta_tolerates_missing_and_future_keys(tmp_path: Path) -> None:
    p = tmp_path / "net_meta.json"
    p.write_text(json.dumps({"num_classes": 3, "new_field": {"x": 1}, "val_images": None}))
    meta = RunMeta.read(p)
    assert meta.val_images == 0 and meta.ignore_label is None and meta.start_state is None
    assert meta.to_dict()["new_field"] == {"x": 1}  # kept on the way through


@pytest.mark.parametrize(
    "text,words",
    [
        ("{not json", "is not readable JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"meta_version": 99}', "written by a newer segorch"),
    ],
)
def test_run_meta_bad_files_name_the_file(tmp_path: Path, text: str, words: str) -> None:
    p = tmp_path / "net_meta.json"
    p.write_text(text)
    with pytest.raises(UserError, match=words) as e:
        RunMeta.read(p)
    assert str(p) in str(e.value)
    with pytest.raises(UserError, match="is missing"):
        RunMeta.read(tmp_path / "absent.json")


def test_snapshot_names(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert snapshot_name(40) == "iter_40" and snapshot_iteration("iter_40") == 40
    assert snapshot_iteration("iter_40.tmp") is None and snapshot_iteration("iter_x") is None
    assert run.snapshot_dir(40) == run.snapshots / "iter_40" and snapshot_relpath(40) == "snapshots/iter_40"
    # what Caffe's solver.snapshot() writes for snapshot_prefix P: P_iter_N.caffemodel / .solverstate
    assert run.caffe_snapshot(7) == (run.partial / "snap_iter_7.caffemodel", run.partial / "snap_iter_7.solverstate")
    assert caffe_snapshot_files(Path("/x/p"), 3) == (Path("/x/p_iter_3.caffemodel"), Path("/x/p_iter_3.solverstate"))


def test_parent_never_imports_the_worker_or_its_hooks() -> None:
    code = (
        "import sys, orchestrator.run.runner, orchestrator.run.resume; "
        "print(sorted(m for m in sys.modules if m.startswith(('orchestrator.train.worker', 'orchestrator.train.hooks', "
        "'orchestrator.train.loop', 'caffe'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_predict_job_round_trips_through_its_file() -> None:
    """PredictJob is what predict's parent writes and its child reads: every field survives
    the JSON file, lists come back as tuples, and an unknown key is refused (not ignored)."""
    from orchestrator.contract import EnsembleModel, PredictJob

    member = EnsembleModel("/s", "/s/w.caffemodel", "snapshots/iter_9", (24, 20), (1.0, 2.0, 3.0), (20, 24))
    job = PredictJob(
        run="/r",
        weights="/r/snapshots/iter_4/weights.caffemodel",
        iteration=4,
        snapshot="snapshots/iter_4",
        pairs=(("a.png", "a_L.png", "list.txt:1"), ("b.png", None, "b.png")),
        eval=True,
        batch=2,
        num_classes=3,
        ignore_label=255,
        class_names=("sky", "road", "car"),
        resize=(480, 360),
        mean_bgr=(104.0, 117.0, 123.0),
        input_size=(360, 480),
        ensemble=(member, EnsembleModel("/t", "/t/w.caffemodel", "snapshots/iter_1")),
    )
    assert PredictJob.from_json(job.to_json()) == job
    assert PredictJob.from_json(PredictJob("/r", "w", 0, "s", ()).to_json()).class_names is None
    with pytest.raises(TypeError):
        PredictJob.from_json(json.dumps({**json.loads(job.to_json()), "colour": 1}))
    raw = json.loads(job.to_json())
    with pytest.raises(TypeError):
        PredictJob.from_json(json.dumps({**raw, "ensemble": [{**raw["ensemble"][0], "colour": 1}]}))
