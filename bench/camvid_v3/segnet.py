"""SegNet-Basic beside recipe v3 (README, "CamVid recipe v3"): the BVLC port of SegNet-Tutorial's
segnet_basic_train.prototxt that the tests train (tests/orchestrator/data/segnet_basic_bvlc.prototxt,
its header names the source and every change), rendered onto a data stage's LMDBs, with an
experiment file for `orchestrate run`.

SegNet-Tutorial's DenseImageData shuffled its list; two BVLC Data layers read an LMDB in order, so
the LMDBs given here should be built with --shuffle-seed (else every batch is four neighbouring
frames of one drive). Two solvers: `segnet` is SegNet-Tutorial's segnet_basic_solver (SGD, base_lr
0.1, momentum 0.9, weight decay 5e-4, fixed rate); `recipe` is recipe v3's (Adam 2e-3, poly 0.9 to
max_iter), so the architecture can be judged apart from the optimiser.

    .venv/bin/python bench/camvid_v3/segnet.py --data data/camvid-shuffled --out data/segnet-sgd \\
        --solver segnet --max-iter 400 --interval 100
    .venv/bin/python -m orchestrator.cli run data/segnet-sgd/experiment.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PORT = REPO / "tests" / "orchestrator" / "data" / "segnet_basic_bvlc.prototxt"
PREFIX = "camvid-120x90/"  # where the port's data sources point, relative to its user's folder
SOLVERS = {
    "segnet": {"type": "SGD", "base_lr": 0.1, "momentum": 0.9, "weight_decay": 0.0005, "lr_policy": "fixed"},
    "recipe": {"type": "Adam", "base_lr": 0.002, "lr_policy": "poly", "power": 0.9, "weight_decay": 0.0005},
}


def render(data: Path, split: str, port: Path = PORT) -> str:
    """A net of tests/orchestrator/data (sources under camvid-120x90/) reading `data`/<split>/{images,labels};
    the loss's infogain H stays train's."""
    text = port.read_text()
    for lmdb in ("images", "labels"):
        text = text.replace(f"{PREFIX}train/{lmdb}", f"{PREFIX}{split}/{lmdb}")
    return text.replace(PREFIX, f"{data.resolve()}/")


def experiment(name: str, data: Path, out: Path, solver: str, max_iter: int, interval: int) -> dict[str, object]:
    """The `orchestrate run` file: the rendered nets, the solver, validation and a snapshot at each interval."""
    return {
        "name": name,
        "seed": 0,
        "device": "cpu",
        "data": {"train": str((data / "train").resolve()), "val": str((data / "val").resolve())},
        "net": {"prototxt": str(out / "train.prototxt"), "val_prototxt": str(out / "val.prototxt")},
        "solver": {**SOLVERS[solver], "max_iter": max_iter},
        "validation": {"interval": interval, "pictures": 0},
        "snapshot": {"interval": interval, "keep_last": 50, "keep_best": True},
        "progress": {"quiet": True},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a data stage's output with train/ and val/")
    ap.add_argument("--out", type=Path, required=True, help="folder for the nets and experiment.yaml")
    ap.add_argument("--solver", choices=sorted(SOLVERS), default="segnet")
    ap.add_argument("--max-iter", type=int, required=True)
    ap.add_argument("--interval", type=int, required=True, help="iterations between validations (and snapshots)")
    ap.add_argument("--name", default=None, help="the run's name (default: segnet-basic-SOLVER)")
    a = ap.parse_args()
    missing = [p for p in (a.data / "train" / "images", a.data / "val" / "labels") if not p.is_dir()]
    if missing:
        print(f"error: {missing[0]} is not a data stage's LMDB; build it with orchestrate data build", file=sys.stderr)
        return 2
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        (out / f"{split}.prototxt").write_text(render(a.data, split))
    exp = experiment(a.name or f"segnet-basic-{a.solver}", a.data, out, a.solver, a.max_iter, a.interval)
    (out / "experiment.yaml").write_text(yaml.safe_dump(exp, sort_keys=False))
    print(f"wrote {out}/experiment.yaml: orchestrate run {out}/experiment.yaml")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
