"""The console of `orchestrate sweep`: words from the first second (the doctor, Ray starting),
one line per trial start, validation and end (read from the run dirs), and nothing of Ray's
own: no token-authentication notice, no escape codes on a terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time

import pytest
import yaml

from orchestrator.sweep.watch import trial_events
from tests.conftest import REPO
from tests.orchestrator.conftest import experiment


def test_trial_events_from_a_run_dir(tmp_path):
    run = tmp_path / "trial_000"
    run.mkdir()
    seen: dict = {}
    assert trial_events("trial_000", run, seen, 3, 0) == []
    (tmp_path / "trial_000.log").write_text("")
    assert trial_events("trial_000", run, seen, 3, 0) == ["trial_000: launched (pre-flight checks, then training)"]
    (run / "metrics.jsonl").write_text('{"iter": 1, "loss": 1.0}\n')
    (run / "val.jsonl").write_text('{"iter": 25, "mean_iu": 0.5}\n')
    assert trial_events("trial_000", run, seen, 3, 0) == ["trial_000: training", "trial_000: val @ 25: mIoU 0.500"]
    (run / "val.jsonl").write_text('{"iter": 25, "mean_iu": 0.5}\n{"iter": 50, "mean_iu": 0.625}\n')
    summary = {"status": "diverged", "stop_reason": "loss-explosion", "train_seconds": 12.3, "best": None}
    (run / "summary.json").write_text(json.dumps(summary))
    assert trial_events("trial_000", run, seen, 3, 1) == [
        "trial_000: val @ 50: mIoU 0.625",
        "trial_000: diverged (loss-explosion), no validation, 12 s  [2/3 trials done]",
    ]
    assert trial_events("trial_000", run, seen, 3, 2) == []  # each event once


@pytest.mark.caffe
@pytest.mark.ray
@pytest.mark.slow
def test_a_local_sweep_on_a_terminal_says_what_happens_and_nothing_of_rays(synth_lmdb, tmp_path):
    base = experiment(synth_lmdb, solver={"max_iter": 20}, validation={"interval": 10}, snapshot={"interval": 10})
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    sweep = {"name": "t", "base": str(tmp_path / "base.yaml"), "space": {"solver.base_lr": {"grid": [0.002]}}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    leader, follower = pty.openpty()  # a terminal, as a person runs it
    cmd = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "sweep",
        str(tmp_path / "sweep.yaml"),
        "--out",
        str(tmp_path / "o"),
    ]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks, first = [], None
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the terminal closed: the sweep ended
            break
        if not data:
            break
        first = first if first is not None else time.monotonic() - t0
        chunks.append(data)
    assert proc.wait(timeout=600) == 0
    text = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    lines = text.splitlines()
    assert lines[0].startswith("sweep t: 1 trial(s); checking 1 distinct net(s) with the doctor")
    assert first is not None and first < 15  # words at once, not after Ray has started
    order = ["starting Ray (local)", "trial_000: launched", "trial_000: training", "trial_000: val @ 10: mIoU"]
    order += ["[1/1 trials done]", "best:"]
    where = [next(i for i, x in enumerate(lines) if o in x) for o in order]
    assert where == sorted(where), text
    assert "Token authentication" not in text and "\x1b" not in text, text
