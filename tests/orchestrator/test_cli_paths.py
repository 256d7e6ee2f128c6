"""Every CLI verb x hostile paths (issue 22): each path argument given a missing file, an empty
one, a folder, binary garbage, an unreadable path (a symlink loop and a FIFO: both refuse root as
well, where chmod 000 would not), a path through a file (`file/x`) and a name over 255 bytes.
Each cell: exit 2, the path and a fix in the message, no traceback, nothing created. In-process
(main() with capsys) for speed; one short real run serves the verbs that need a run directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main
from tests.orchestrator.conftest import experiment, orchestrate, write_exp

pytestmark = pytest.mark.caffe


def _missing(d: Path) -> Path:
    return d / "missing"


def _empty(d: Path) -> Path:
    (d / "empty").write_bytes(b"")
    return d / "empty"


def _folder(d: Path) -> Path:
    (d / "folder").mkdir()
    return d / "folder"


def _binary(d: Path) -> Path:
    (d / "binary").write_bytes(bytes(range(256)) * 8 + b"\x00\xff\xfe")
    return d / "binary"


def _loop(d: Path) -> Path:
    """A symlink to itself: every open fails with ELOOP, for root too."""
    os.symlink("loop", d / "loop")
    return d / "loop"


def _fifo(d: Path) -> Path:
    """A named pipe: opening it to read would wait for a writer forever."""
    os.mkfifo(d / "fifo")
    return d / "fifo"


def _through_file(d: Path) -> Path:
    (d / "file").write_text("x\n")
    return d / "file" / "x"


def _too_long(d: Path) -> Path:
    return d / ("n" * 300)


FILE_KINDS: dict[str, Callable[[Path], Path]] = {
    "missing": _missing,
    "empty": _empty,
    "folder": _folder,
    "binary": _binary,
    "loop": _loop,
    "fifo": _fifo,
    "through-file": _through_file,
    "too-long": _too_long,
}
DIR_KINDS = {k: FILE_KINDS[k] for k in ("missing", "empty", "binary", "loop", "fifo", "through-file", "too-long")}
OUT_KINDS = {k: FILE_KINDS[k] for k in ("empty", "binary", "loop", "fifo", "through-file", "too-long")}


@pytest.fixture(scope="module")
def ctx(synth_lmdb: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Valid arguments for the other places of each command line: an experiment, a list, a run."""
    tmp = tmp_path_factory.mktemp("paths")
    exp = experiment(synth_lmdb, solver={"max_iter": 4}, validation={"enabled": False}, snapshot={"interval": 4})
    exp_file = write_exp(tmp, exp)
    run = tmp / "run"
    r = orchestrate("run", str(exp_file), "--run-dir", str(run), "--force")
    assert r.returncode == 0, r.stderr[-2000:]
    sweep = tmp / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "s", "base": str(exp_file), "space": {"solver.base_lr": [0.1]}}))
    raw = synth_lmdb / "raw"
    return {
        "EXP": str(exp_file),
        "RUN": str(run),
        "LIST": str(raw / "val.txt"),
        "IMAGES": str(raw / "images"),
        "LABELS": str(raw / "labels"),
        "NET": str(run / "train.prototxt"),
        "SWEEP": str(sweep),
    }


BUILD = ["--num-classes", "5", "--ignore-label", "255", "--quiet", "--workers", "1"]


def _build(*args: str) -> list[str]:
    """A `data build` command line with the classes every cell needs (and --out OUT unless given)."""
    out = [] if "--out" in args else ["--out", "OUT"]
    return ["data", "build", *args, *out, *BUILD]


# (command line with P for the hostile path and OUT for a fresh output folder, the kinds to try)
CELLS: dict[str, tuple[list[str], dict[str, Callable[[Path], Path]]]] = {
    "validate EXP": (["validate", "P"], FILE_KINDS),
    "run EXP": (["run", "P", "--run-dir", "OUT"], FILE_KINDS),
    "run --from-snapshot": (["run", "EXP", "--from-snapshot", "P", "--run-dir", "OUT"], FILE_KINDS),
    "check EXP": (["check", "P"], FILE_KINDS),
    "check --prototxt": (["check", "--prototxt", "P", "--static"], FILE_KINDS),
    "check --data": (["check", "--prototxt", "NET", "--data", "P", "--static"], DIR_KINDS),
    "check --solver": (["check", "--prototxt", "NET", "--solver", "P", "--static"], FILE_KINDS),
    "check --weights": (["check", "--prototxt", "NET", "--weights", "P", "--static"], FILE_KINDS),
    "data build --list": (_build("--list", "P"), FILE_KINDS),
    "data build --palette": (_build("--list", "LIST", "--palette", "P"), FILE_KINDS),
    "data build --images": (_build("--images", "P", "--labels", "LABELS"), DIR_KINDS),
    "data build --labels": (_build("--images", "IMAGES", "--labels", "P"), DIR_KINDS),
    "data build --root": (_build("--list", "LIST", "--root", "P"), DIR_KINDS),
    "data build --val-list": (_build("--list", "LIST", "--val-list", "P"), FILE_KINDS),
    "data build --label-map": (_build("--list", "LIST", "--label-map", "P"), FILE_KINDS),
    "data build --class-names": (_build("--list", "LIST", "--class-names", "P"), FILE_KINDS),
    "data build --out": (_build("--list", "LIST", "--out", "P"), OUT_KINDS),
    "data synth --out": (["data", "synth", "--out", "P", "--train", "2", "--val", "1"], OUT_KINDS),
    "run --run-dir": (["run", "EXP", "--run-dir", "P"], OUT_KINDS),
    "resume RUN_DIR": (["resume", "P"], DIR_KINDS),
    "runs FOLDER": (["runs", "P"], DIR_KINDS),
    "predict RUN_DIR": (["predict", "P", "--list", "LIST", "--out", "OUT"], DIR_KINDS),
    "predict --list": (["predict", "RUN", "--list", "P", "--out", "OUT"], FILE_KINDS),
    "predict --images": (["predict", "RUN", "--images", "P", "--out", "OUT"], DIR_KINDS),
    "predict --out": (["predict", "RUN", "--list", "LIST", "--out", "P"], OUT_KINDS),
    "predict --labels": (["predict", "RUN", "--images", "IMAGES", "--labels", "P", "--out", "OUT"], DIR_KINDS),
    "sweep FILE": (["sweep", "P", "--out", "OUT"], FILE_KINDS),
    "sweep --resume": (["sweep", "--resume", "P"], DIR_KINDS),
    "fix --prototxt": (["fix", "--prototxt", "P", "--out", "OUT", "--static"], FILE_KINDS),
    "fix --out": (["fix", "--prototxt", "NET", "--out", "P", "--static"], OUT_KINDS),
}
PARAMS = [(cell, kind) for cell, (_, kinds) in CELLS.items() for kind in kinds]


def _tree(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


@pytest.mark.parametrize(("cell", "kind"), PARAMS, ids=[f"{c}-{k}" for c, k in PARAMS])
def test_hostile_path(cell: str, kind: str, ctx, tmp_path, capsys, monkeypatch):
    argv, kinds = CELLS[cell]
    bad = kinds[kind](tmp_path)
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # default outputs (runs/, sweeps/) would land here
    before = _tree(tmp_path)
    rc = main([{"P": str(bad), "OUT": str(out), **ctx}.get(a, a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    assert bad.name[:40] in err and "fix:" in err and "Traceback" not in err, err[-2000:]
    assert _tree(tmp_path) == before, "created: " + ", ".join(sorted(_tree(tmp_path) - before))


BOMB = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)
)


@pytest.mark.parametrize("content", [BOMB, "- a list\n", "{unclosed\n", ""])
def test_hostile_files_inside_a_run_or_sweep_folder(content: str, ctx, tmp_path, capsys):
    """The run's config.yaml (resume, predict) and a sweep folder's sweep.yaml (sweep --resume) are
    read like any experiment: bounded, a clear error naming the file."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(ctx["RUN"], run)
    (run / "config.yaml").write_text(content)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / ".segorch-sweep").write_text("orchestrate sweep\n")
    (sweep / "sweep.yaml").write_text(content)
    for argv, bad in (
        (["resume", str(run)], run / "config.yaml"),
        (["predict", str(run), "--list", ctx["LIST"], "--out", str(tmp_path / "pred")], run / "config.yaml"),
        (["sweep", "--resume", str(sweep)], sweep / "sweep.yaml"),
    ):
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and str(bad) in err and "fix:" in err and len(err) < 2000, err[-2000:]
    assert not (tmp_path / "pred").exists()


KEY_CELLS = {
    "weights": FILE_KINDS,
    "net.prototxt": FILE_KINDS,
    "solver.prototxt": FILE_KINDS,
    "data.train": DIR_KINDS,
    "data.val": DIR_KINDS,
}
KEY_PARAMS = [(key, kind) for key, kinds in KEY_CELLS.items() for kind in kinds]


@pytest.mark.parametrize(("key", "kind"), KEY_PARAMS, ids=[f"{k}-{v}" for k, v in KEY_PARAMS])
def test_hostile_path_in_the_experiment(key: str, kind: str, ctx, tmp_path, capsys, monkeypatch):
    """The experiment's own path keys, through `run`: refused before anything is created or trained."""
    from orchestrator.config.schema import set_dotted

    bad = KEY_CELLS[key][kind](tmp_path)
    tree = yaml.safe_load(Path(ctx["EXP"]).read_text())
    set_dotted(tree, key, str(bad))
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(tree))
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    rc = main(["run", str(exp), "--run-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    assert bad.name[:40] in err and "fix:" in err and "Traceback" not in err, err[-2000:]
    assert _tree(tmp_path) == before, "created: " + ", ".join(sorted(_tree(tmp_path) - before))
