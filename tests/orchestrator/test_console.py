"""The console of `orchestrate run` on real Caffe: a few lines at the start (run dir, device,
BLAS threads, images, net, the doctor's verdict), one line per validation that stays (with the
worst classes by name), and the command that comes next (predict after a finished run,
resume after Ctrl-C)."""

from __future__ import annotations

import io
import signal
from pathlib import Path

from data_prep.progress import Progress
from orchestrator.metrics import validation_line
from tests.orchestrator.conftest import experiment, orchestrate, write_exp
from tests.orchestrator.test_resume import start, wait_for_iter


def test_start_lines_validation_lines_and_the_predict_command(synth_lmdb, tmp_path):
    run = tmp_path / "run"
    exp = experiment(synth_lmdb, progress={"quiet": False})
    r = orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert f"run dir:  {run}" in out
    assert "device:   cpu, BLAS threads " in out
    assert "data:     40 train images, 12 val images each validation" in out
    assert "net:      generated compact (width 8, depth 2)" in out and "background, disk, square" in out
    assert "doctor:   " in out
    # the start lines come before the first bar line; each validation has its own line
    assert out.index("doctor:") < out.index("train [")
    vals = [line for line in out.splitlines() if line.startswith("val @ ")]
    assert [v.split(":")[0] for v in vals] == ["val @ 20", "val @ 40"]
    assert "mIoU " in vals[0] and "pixel acc " in vals[0] and "worst: " in vals[0]
    assert any(name in vals[0].split("worst: ")[1] for name in ("background", "disk", "square", "triangle", "diamond"))
    assert f"orchestrate predict {run} --images" in out


def ctrl_c_run(data: Path, tmp_path: Path) -> tuple[Path, int, str, str]:
    """A 400-iteration run (a snapshot every 10) stopped with Ctrl-C past iteration 15: its run
    dir, exit code, stdout and stderr."""
    run = tmp_path / "run"
    exp = experiment(data, solver={"max_iter": 400}, snapshot={"interval": 10}, validation={"interval": 200})
    proc = start(write_exp(tmp_path, exp), run)
    wait_for_iter(run, 15, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return run, proc.returncode, out, err


def test_ctrl_c_says_how_to_continue(synth_lmdb, tmp_path):
    run, rc, out, err = ctrl_c_run(synth_lmdb, tmp_path)
    assert rc == 130, err[-2000:]
    assert f"continue with: orchestrate resume {run}" in out


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_note_stays_above_the_bar_on_a_terminal():
    term = Terminal()
    bar = Progress(10, "train", unit="it", stream=term)
    bar.set(5, detail="loss 0.5", force=True)
    bar.note(
        validation_line(
            {"iter": 5, "mean_iu": 0.5, "pixel_accuracy": 0.9, "per_class_iu": [0.9, 0.1, None]}, ["a", "b", "c"]
        )
    )
    bar.set(6, force=True)
    parts = term.getvalue().split("\r")  # each draw starts with a carriage return
    assert "5/10" in parts[1] and not parts[1].endswith("\n")  # the bar, redrawn in place
    # the note ends its own line (a bar longer than it is blanked out) and names the worst class
    assert parts[2].endswith("\n") and parts[2].strip() == "val @ 5: mIoU 0.500  pixel acc 0.900  worst: b 0.10, a 0.90"
    assert "6/10" in parts[3]  # the bar again, below the note


def test_validate_notes_data_that_does_not_exist_yet(synth_lmdb, tmp_path):
    exp = experiment(synth_lmdb)
    exp["data"] = {
        "train": str(tmp_path / "lmdb" / "train"),
        "val": str(tmp_path / "lmdb" / "val"),
        "build": {"root": str(synth_lmdb / "raw"), "train_list": "train.txt", "val_list": "nope.txt", "num_classes": 5},
    }
    r = orchestrate("validate", str(write_exp(tmp_path, exp)))
    assert r.returncode == 0, r.stderr  # a note, not an error
    assert f"note: data.train {tmp_path / 'lmdb' / 'train'} does not exist yet: `orchestrate run` builds it" in r.stdout
    assert "note: data.val" in r.stdout and "nor its source data.build list" in r.stdout
    r = orchestrate("validate", str(write_exp(tmp_path, experiment(synth_lmdb))))
    assert r.returncode == 0 and "note:" not in r.stdout


def test_resume_says_where_it_continues(synth_lmdb, tmp_path):
    run, _, _, _ = ctrl_c_run(synth_lmdb, tmp_path)
    r = orchestrate("resume", str(run), "--set", "solver.max_iter=30")
    assert r.returncode == 0, r.stderr[-2000:]
    [first] = [x for x in r.stdout.splitlines() if x.startswith("resuming: ")]
    assert first.startswith("resuming: from the snapshot at iteration ") and first.endswith(" to 30")
    assert f"run dir:  {run}" in r.stdout and "doctor:   " in r.stdout
