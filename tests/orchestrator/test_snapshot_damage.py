"""The snapshot damage matrix: every file of a snapshot x {missing, empty, truncated, garbage}
x {newest, older} x {manifest present, absent}. Resume and predict take the newest intact
snapshot, name the damaged file, rename the damaged snapshot `.corrupt`, never rewrite it and
never traceback.

One small run is trained once (2 snapshots); each cell works on a copy of it. Every cell goes
through resume's own planning (verification, quarantine, relinking: no Caffe child) and
predict's snapshot choice in this process; one cell per damage kind x manifest state also runs
the real `orchestrate resume` and `orchestrate predict` on Caffe."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from orchestrator.contract import HOOKS, MANIFEST, STATE, WEIGHTS
from orchestrator.predict.predict import choose_snapshot
from orchestrator.run.resume import plan_resume
from orchestrator.rundir import RunDir
from tests.orchestrator.conftest import experiment, orchestrate, write_exp

pytestmark = pytest.mark.caffe

NEWEST, OLDER = 20, 10
KINDS = ("missing", "empty", "truncated", "garbage")
FILES = (WEIGHTS, STATE, HOOKS, MANIFEST)
CELLS = [
    (f, kind, pos, manifest)
    for manifest in ("present", "absent")
    for f in FILES
    for kind in KINDS
    for pos in ("newest", "older")
    if not (f == MANIFEST and manifest == "absent")
]
# one cell per damage kind x manifest state runs the real CLI (files and positions rotate)
REAL = {
    (WEIGHTS, "missing", "newest", "present"),
    (HOOKS, "empty", "newest", "present"),
    (STATE, "truncated", "older", "present"),
    (MANIFEST, "garbage", "older", "present"),
    (HOOKS, "missing", "older", "absent"),
    (STATE, "empty", "newest", "absent"),
    (WEIGHTS, "truncated", "newest", "absent"),
    (STATE, "garbage", "older", "absent"),
}


@pytest.fixture(scope="module")
def base_run(synth_lmdb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 20-iteration run with snapshots iter_10 and iter_20 (the best)."""
    tmp = tmp_path_factory.mktemp("damage")
    exp = experiment(
        synth_lmdb, solver={"max_iter": NEWEST}, validation={"interval": 20}, snapshot={"interval": 10, "keep_last": 2}
    )
    run = tmp / "run"
    r = orchestrate("run", str(write_exp(tmp, exp)), "--run-dir", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in (run / "snapshots").glob("iter_*")) == ["iter_10", "iter_20"]
    return run


def damage(run: Path, cell: tuple[str, str, str, str]) -> tuple[Path, bytes | None]:
    """Apply a cell to a run copy; (the damaged file, its bytes now: None when missing)."""
    name, kind, pos, manifest = cell
    if manifest == "absent":
        for m in (run / "snapshots").glob(f"iter_*/{MANIFEST}"):
            m.unlink()
    f = run / "snapshots" / f"iter_{NEWEST if pos == 'newest' else OLDER}" / name
    data = f.read_bytes()
    if kind == "missing":
        f.unlink()
        return f, None
    new = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "garbage": random.Random("/".join(cell)).randbytes(len(data)),
    }[kind]
    f.write_bytes(new)
    return f, new


def expected(cell: tuple[str, str, str, str]) -> tuple[int, int | None]:
    """(the snapshot taken, the one found damaged): a deleted manifest is no damage (the
    snapshot is checked by parsing its files instead)."""
    name, kind, pos, _ = cell
    if name == MANIFEST and kind == "missing":
        return NEWEST, None
    return (OLDER, NEWEST) if pos == "newest" else (NEWEST, OLDER)


def copy(base: Path, tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name / "run"
    shutil.copytree(base, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def quarantined(run: Path, it: int) -> Path:
    return run / "snapshots" / f"iter_{it}.corrupt"


def check_summary_best(run: Path) -> None:
    """summary.json's best snapshot names a folder that exists: iter_N.corrupt (and why) once set aside."""
    best = json.loads((run / "summary.json").read_text())["best"]
    assert (run / best["snapshot"]).is_dir(), best
    assert best["snapshot"].endswith(".corrupt") == ("snapshot_damaged" in best), best


def check_resume_plan(run: Path, cell: tuple[str, str, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    name, _, _, _ = cell
    f, now = damage(run, cell)
    take, bad = expected(cell)
    plan = plan_resume(str(run), ["solver.max_iter=30"])
    assert plan is not None
    rd, _, iteration, notes, _ = plan
    assert rd.lock_fd is not None
    os.close(rd.lock_fd)
    err = capsys.readouterr().err
    assert iteration == take
    check_summary_best(run)
    if bad is None:
        assert not list((run / "snapshots").glob("*.corrupt"))
        assert not [n for n in notes if n.code.startswith("snapshot-")]
        return
    assert name in err and f"snapshots/iter_{bad}" in err, err
    assert any(name in n.message and n.code.startswith("snapshot-") for n in notes)
    moved = quarantined(run, bad) / name
    assert (not moved.exists()) if now is None else moved.read_bytes() == now  # never rewritten
    kept = run / "snapshots" / f"iter_{take}"
    assert kept.is_dir() and (kept / MANIFEST).is_file()  # relinked, manifest (re)written only here
    assert json.loads((kept / MANIFEST).read_text())[STATE]["size"] == (kept / STATE).stat().st_size


def check_predict_choice(run: Path, cell: tuple[str, str, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """predict --snapshot best: the best (iter_20) when it is whole, else the newest intact."""
    name, _, pos, _ = cell
    damage(run, cell)
    take, bad = expected(cell)
    it, folder = choose_snapshot(RunDir(run), "best")
    err = capsys.readouterr().err
    assert it == take and folder.name == f"iter_{take}"
    check_summary_best(run)
    if bad == NEWEST:  # the best itself was damaged: named and set aside
        assert name in err and quarantined(run, NEWEST).is_dir(), err
    if pos == "older":  # predict reads only the snapshot it uses: an older one waits for resume
        assert not quarantined(run, NEWEST).exists()


@pytest.mark.parametrize("cell", CELLS, ids=["-".join(c) for c in CELLS])
def test_every_cell(base_run, tmp_path, capsys, cell):
    check_resume_plan(copy(base_run, tmp_path, "resume"), cell, capsys)
    check_predict_choice(copy(base_run, tmp_path, "predict"), cell, capsys)


def no_traceback(out: str) -> None:
    assert "Traceback" not in out, out[-3000:]


@pytest.mark.parametrize("cell", sorted(REAL), ids=["-".join(c) for c in sorted(REAL)])
def test_real_resume_and_predict(base_run, synth_lmdb, tmp_path, cell):
    name = cell[0]
    take, bad = expected(cell)
    run = copy(base_run, tmp_path, "resume")
    damage(run, cell)
    r = orchestrate("resume", str(run), "--set", f"solver.max_iter={NEWEST + 2}")
    no_traceback(r.stdout + r.stderr)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resumed from iteration {take}" in r.stdout
    assert name in r.stderr and quarantined(run, bad).is_dir(), r.stderr[-2000:]
    assert json.loads((run / "summary.json").read_text())["iterations"] == NEWEST + 2

    run = copy(base_run, tmp_path, "predict")
    damage(run, cell)
    line = (synth_lmdb / "raw" / "val.txt").read_text().splitlines()[0]
    (tmp_path / "one.txt").write_text(line + "\n")
    out = tmp_path / "pred"
    r = orchestrate(
        "predict", str(run), "--list", str(tmp_path / "one.txt"), "--root", str(synth_lmdb / "raw"), "--out", str(out)
    )
    no_traceback(r.stdout + r.stderr)
    used = OLDER if bad == NEWEST else NEWEST
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"snapshots/iter_{used}" in r.stdout
    if bad == NEWEST:
        assert name in r.stderr and quarantined(run, NEWEST).is_dir()
    check_summary_best(run)


def test_a_damaged_snapshot_asked_for_by_name_is_refused(base_run, tmp_path):
    run = copy(base_run, tmp_path, "named")
    damage(run, (WEIGHTS, "truncated", "older", "absent"))
    out = tmp_path / "pred"
    r = orchestrate("predict", str(run), "--images", str(tmp_path), "--out", str(out), "--snapshot", "iter_10")
    no_traceback(r.stdout + r.stderr)
    assert r.returncode == 2 and WEIGHTS in r.stderr and "iter_10" in r.stderr
    assert quarantined(run, OLDER).is_dir() and not out.exists()


def edit_proto(f: Path, kind: str, change: object) -> None:
    from caffe.proto import caffe_pb2

    msg = getattr(caffe_pb2, kind)()
    msg.ParseFromString(f.read_bytes())
    change(msg)  # type: ignore[operator]
    f.write_bytes(msg.SerializeToString())


def drop_last_layer_with_blobs(net: object) -> None:
    layers = net.layer  # type: ignore[attr-defined]
    del layers[max(i for i, x in enumerate(layers) if len(x.blobs))]


@pytest.mark.parametrize(
    "name, kind, change, says",
    [  # files that parse, but not as Caffe wrote them (a cut at a message boundary, an edit)
        (STATE, "SolverState", lambda s: s.history.pop(), "history blobs"),
        (STATE, "SolverState", lambda s: setattr(s, "iter", 999), "iteration 999"),
        (STATE, "SolverState", lambda s: s.history[0].data.pop(), "history blob 0 is cut"),
        (WEIGHTS, "NetParameter", drop_last_layer_with_blobs, "do not fit"),
        (WEIGHTS, "NetParameter", lambda n: next(x for x in n.layer if x.blobs).blobs[0].data.pop(), "numbers"),
    ],
)
def test_a_manifest_less_snapshot_is_checked_beyond_parsing(base_run, tmp_path, name, kind, change, says):
    run = copy(base_run, tmp_path, "proto")
    for m in (run / "snapshots").glob(f"iter_*/{MANIFEST}"):
        m.unlink()
    edit_proto(run / "snapshots" / f"iter_{NEWEST}" / name, kind, change)
    found, damaged = RunDir(run).intact_snapshot(check_older=True)
    assert found is not None and found[0] == OLDER
    assert len(damaged) == 1 and name in damaged[0][1] and says in damaged[0][1], damaged


def test_predict_renames_nothing_while_a_run_owns_the_folder(base_run, tmp_path, capsys):
    run = copy(base_run, tmp_path, "live")
    damage(run, (WEIGHTS, "truncated", "newest", "present"))
    owner = RunDir(run)
    fd = owner.acquire_lock()  # a run or resume at work in the folder
    try:
        it, _ = choose_snapshot(RunDir(run), "best")
    finally:
        os.close(fd)
    assert it == OLDER and WEIGHTS in capsys.readouterr().err
    assert (run / "snapshots" / f"iter_{NEWEST}").is_dir() and not quarantined(run, NEWEST).exists()
