"""Interop with Caffe's own command line: a run's snapshot resumes under `caffe train`, a
`caffe train` snapshot continues under `orchestrate run --from-snapshot`, and the user's own
solver.prototxt is kept field for field."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from orchestrator.jsonio import read_jsonl
from tests.conftest import REPO
from tests.orchestrator.conftest import experiment, orchestrate, synth_splits, user_net, write_exp

pytestmark = pytest.mark.caffe


def caffe_tool() -> Path:
    """The `caffe` binary of the build that pycaffe comes from."""
    built = Path((REPO / ".venv" / "caffe-dir").read_text().strip())
    for p in (built / "src" / "build" / "tools" / "caffe", built / "build" / "tools" / "caffe"):
        if p.is_file():
            return p
    pytest.skip(f"no caffe binary under {built}")


@pytest.fixture(scope="module")
def one_batch_lmdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 synthetic images: with batch_size 8 every batch is the whole set, so any two readers
    see the same batch at every iteration, whatever their position."""
    return synth_splits(tmp_path_factory.mktemp("onebatch"), seed=2, train=8, val=4)


def caffe_train(solver: Path, snapshot: Path, cwd: Path) -> dict[int, float]:
    """Run Caffe's own `caffe train --snapshot`; {iteration after the step: loss} from its display."""
    r = subprocess.run(
        [str(caffe_tool()), "train", "--solver", str(solver), "--snapshot", str(snapshot)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"GLOG_logtostderr": "1", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    # "Iteration 40 (...), loss = 0.123" is logged after the forward/backward of step 41
    return {
        int(m.group(1)) + 1: float(m.group(2))
        for m in re.finditer(r"Iteration (\d+)(?: \([^)]*\))?, loss = ([-\d.e+naif]+)", r.stderr)
    }


def display_solver(run: Path, out: Path, max_iter: int) -> Path:
    """The run's solver.prototxt with Caffe's display on and its snapshots sent elsewhere."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    p = text_format.Parse((run / "solver.prototxt").read_text(), caffe_pb2.SolverParameter())
    p.display, p.max_iter, p.snapshot_prefix = 1, max_iter, str(out / "caffe_snap")
    p.ClearField("test_net")
    p.ClearField("test_iter")
    p.ClearField("test_interval")
    path = out / "solver_display.prototxt"
    path.write_text(text_format.MessageToString(p))
    return path


def test_caffe_train_resumes_our_snapshot_like_orchestrate_resume(one_batch_lmdb, tmp_path):
    exp = experiment(
        one_batch_lmdb, solver={"type": "SGD", "base_lr": 0.01, "max_iter": 40}, validation={"interval": 40}
    )
    exp["data"]["batch_size"] = 8
    run = tmp_path / "run"
    assert orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run)).returncode == 0
    snap = run / "snapshots" / "iter_40" / "state.solverstate"
    ours_dir = tmp_path / "ours"
    shutil.copytree(run, ours_dir)
    r = orchestrate("resume", str(ours_dir), "--set", "solver.max_iter=45")
    assert r.returncode == 0, r.stderr[-2000:]
    ours = {m["iter"]: m["loss"] for m in read_jsonl(ours_dir / "metrics.jsonl") if m["iter"] > 40}
    # Caffe's binary, from another working directory, from the original run's snapshot
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    theirs = caffe_train(display_solver(run, elsewhere, 45), snap, elsewhere)
    # (Caffe logs one more forward pass after its last step: 46 is that one)
    assert sorted(ours) == [41, 42, 43, 44, 45] and set(ours) <= set(theirs)
    np.testing.assert_allclose([theirs[i] for i in range(41, 46)], [ours[i] for i in range(41, 46)], rtol=1e-5)
    # the restored weights are the run's, not fresh ones: the loss continues from iteration 40's
    assert (
        abs(theirs[41] - read_jsonl(run / "metrics.jsonl")[-1]["loss"])
        < 0.5 * read_jsonl(run / "metrics.jsonl")[0]["loss"]
    )


USER_SOLVER = """# the user's solver, with fields our YAML schema does not have
net: "train.prototxt"
type: "SGD"
base_lr: 0.005
lr_policy: "step"
stepsize: 12
gamma: 0.5
momentum: 0.9
weight_decay: 0.0002
regularization_type: "L1"
average_loss: 5
display: 5
max_iter: 20
snapshot: 20
snapshot_prefix: "snap/user"
solver_mode: CPU
"""


def test_caffe_train_run_continues_under_orchestrate_with_the_users_solver(one_batch_lmdb, tmp_path):
    work = tmp_path / "user"
    work.mkdir()
    (work / "train.prototxt").write_text(user_net(one_batch_lmdb, 8))
    (work / "solver.prototxt").write_text(USER_SOLVER)
    (work / "snap").mkdir()
    r = subprocess.run(
        [str(caffe_tool()), "train", "--solver", "solver.prototxt"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env={"GLOG_logtostderr": "1"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    caffe_losses = [float(x) for x in re.findall(r"Iteration \d+(?: \([^)]*\))?, loss = ([-\d.e+]+)", r.stderr)]
    state = work / "snap" / "user_iter_20.solverstate"
    assert state.is_file()
    exp = {
        "name": "cont",
        "data": {"train": str(one_batch_lmdb / "train")},
        "net": {"prototxt": str(work / "train.prototxt"), "num_classes": 5, "ignore_label": 255},
        "solver": {"prototxt": str(work / "solver.prototxt"), "max_iter": 30},
        "snapshot": {"interval": 10},
        "progress": {"quiet": True},
    }
    run = tmp_path / "run"
    # learned_net is relative to where caffe train ran: found beside the state
    r = orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run), "--from-snapshot", str(state))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "continuing from iteration 20" in r.stdout
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["iter"] for m in metrics] == list(range(21, 31))
    # the step policy goes on from Caffe's iteration: lr 0.005 * 0.5^(iter // 12) before each step
    assert [m["lr"] for m in metrics] == pytest.approx([0.0025] * 4 + [0.00125] * 6, rel=1e-6)
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    solver = text_format.Parse((run / "solver.prototxt").read_text(), caffe_pb2.SolverParameter())
    assert solver.regularization_type == "L1" and solver.average_loss == 5 and solver.stepsize == 12
    assert solver.weight_decay == pytest.approx(0.0002) and solver.max_iter == 30
    assert solver.train_net == str(run / "train.prototxt") and not solver.HasField("net")
    # the weights are caffe train's: the loss goes on from where it left off, not from the start
    assert metrics[0]["loss"] < 0.7 * caffe_losses[0], (metrics[0]["loss"], caffe_losses)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert any(f["code"] == "from-snapshot" for f in summary["findings"])


def test_validate_names_an_unknown_solver_field_with_its_line(tmp_path):
    (tmp_path / "solver.prototxt").write_text('base_lr: 0.01\nmax_iter: 10\nlr_polcy: "fixed"\n')
    exp = {
        "name": "x",
        "data": {"train": str(tmp_path)},
        "solver": {"prototxt": str(tmp_path / "solver.prototxt")},
        "seed": -1,
    }
    r = orchestrate("validate", str(write_exp(tmp_path, exp)))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "solver.prototxt" in r.stderr and "line 3" in r.stderr and "lr_polcy" in r.stderr
    assert "seed" in r.stderr  # every error at once


def test_from_snapshot_refuses_what_it_cannot_use(one_batch_lmdb, tmp_path):
    exp = write_exp(tmp_path, experiment(one_batch_lmdb))
    bogus = tmp_path / "x.solverstate"
    bogus.write_bytes(b"\x00garbage\xff" * 10)
    r = orchestrate("run", str(exp), "--run-dir", str(tmp_path / "r"), "--from-snapshot", str(bogus))
    assert r.returncode == 2 and "not a Caffe solver state" in r.stderr and not (tmp_path / "r").exists()
    r = orchestrate("run", str(exp), "--run-dir", str(tmp_path / "r"), "--from-snapshot", str(tmp_path / "none"))
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
