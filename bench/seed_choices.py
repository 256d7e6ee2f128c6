"""The CamVid recipe's net trained with the seed's choices, for the README's comparison.

Takes a finished `orchestrate run experiments/camvid.yaml` run directory, strips every
Convolution/Deconvolution filler (Caffe then fills with 0), makes the loss unnormalized, and
trains it with the seed's solver (SGD, lr 1e-11, fixed policy, no bilinear surgery) through
`orchestrate run --force` (with the all-zero-blob stop off, so it trains to the end), so the
doctor's findings and the outcome land in a run directory.

    .venv/bin/python bench/seed_choices.py runs/camvid [--iters 250]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def seed_net(src: Path, dst: Path) -> None:
    """Copy a prototxt with the seed's mistakes: no fillers on convs, normalization NONE."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    net = text_format.Parse(src.read_text(), caffe_pb2.NetParameter())
    for layer in net.layer:
        if layer.type in ("Convolution", "Deconvolution"):
            layer.convolution_param.ClearField("weight_filler")
            layer.convolution_param.ClearField("bias_filler")
        if layer.type in ("SoftmaxWithLoss", "InfogainLoss"):
            layer.loss_param.normalization = caffe_pb2.LossParameter.NONE
    dst.write_text(text_format.MessageToString(net))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--iters", type=int, default=250)
    a = ap.parse_args()
    src = Path(a.run_dir)
    out = REPO / "runs" / "camvid_seed_nets"
    out.mkdir(parents=True, exist_ok=True)
    seed_net(src / "train.prototxt", out / "train.prototxt")
    seed_net(src / "val.prototxt", out / "val.prototxt")
    sets = {
        "net.prototxt": out / "train.prototxt",
        "net.val_prototxt": out / "val.prototxt",
        "net.num_classes": 11,
        "net.ignore_label": 11,
        "validation.max_images": 101,
        "solver.type": "SGD",
        "solver.base_lr": "1e-11",
        "solver.lr_policy": "fixed",
        "solver.momentum": 0.99,
        "solver.max_iter": a.iters,
        "validation.interval": a.iters,
        "surgery.bilinear": "false",
        "checks.zero_blobs": "false",
        "name": "camvid_seed",
    }
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", "experiments/camvid.yaml", "--force", "--fresh", "--quiet"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    return subprocess.run(cmd, cwd=REPO).returncode


if __name__ == "__main__":
    sys.exit(main())
