"""The cost of test-time augmentation (orchestrator.predict.tta) on the demo: a 100-iteration
demo run on fresh synthetic data, then its deploy net segments the 50 val images without TTA
and with each setting, in interleaved rounds (this VM's speed drifts, so each round compares
settings timed a moment apart). Prints ms per image per setting, the val mIoU of each
(`predict --eval`'s definitions), and `tta-SETTING ratio=X.XX`: the time without TTA divided by
the time with it (1/passes would be the cost of the forward passes alone).
Usage: .venv/bin/python bench/bench_tta.py [--rounds N]"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.common import result_line  # noqa: E402

SETTINGS = ("off", "flip", "scales=0.75,1,1.25", "flip,scales=0.75,1,1.25")


def _train(tmp: Path) -> Path:
    """A 100-iteration demo run on fresh synthetic data (about 30 s on 2 cores)."""
    env = {**os.environ, "GLOG_minloglevel": "2"}
    cli = [sys.executable, "-m", "orchestrator.cli"]
    subprocess.run([*cli, "data", "synth", "--out", str(tmp / "synth")], cwd=REPO, env=env, check=True)
    exp = (REPO / "experiments" / "demo.yaml").read_text().replace("data/synth", str(tmp / "synth"))
    (tmp / "demo.yaml").write_text(exp)
    sets = ["solver.max_iter=100", "validation.enabled=false", "early_stop.enabled=false", "progress.quiet=true"]
    args = [*cli, "run", str(tmp / "demo.yaml"), "--run-dir", str(tmp / "run")]
    subprocess.run(args + [a for s in sets for a in ("--set", s)], cwd=REPO, env=env, check=True)
    return tmp / "run"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    import caffe
    import numpy as np
    from PIL import Image

    from orchestrator import metrics
    from orchestrator.predict.forward import DeployNet
    from orchestrator.predict.tta import parse

    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        run = _train(tmp)
        caffe.set_mode_cpu()
        weights = sorted((run / "snapshots").glob("iter_*"))[-1] / "weights.caffemodel"
        net = DeployNet(run, tmp, (64, 64), None, weights=str(weights))
        lines = (tmp / "synth" / "val.txt").read_text().split("\n")
        pairs = [x.split() for x in lines if x.strip()]
        imgs = [np.asarray(Image.open(tmp / "synth" / i).convert("RGB"))[:, :, ::-1].copy() for i, _ in pairs]
        labels = [np.asarray(Image.open(tmp / "synth" / lab)) for _, lab in pairs]
        times: dict[str, list[float]] = {s: [] for s in SETTINGS}
        preds: dict[str, list[np.ndarray]] = {}
        for _ in range(args.rounds):
            for spec in SETTINGS:
                t0 = time.perf_counter()
                preds[spec] = [net.classes([im], parse(spec))[0] for im in imgs]
                times[spec].append((time.perf_counter() - t0) / len(imgs))
        base = statistics.median(times["off"])
        for spec in SETTINGS:
            ms = statistics.median(times[spec]) * 1000
            conf = np.sum([metrics.confusion(p, lab, 5, 255) for p, lab in zip(preds[spec], labels, strict=True)], 0)
            miou = metrics.scores(conf)["mean_iu"]
            print(f"{spec:26s} {parse(spec).views:2d} passes  {ms:6.2f} ms/image  val mIoU {miou:.4f}")
        for spec in SETTINGS[1:]:
            print(result_line(f"tta-{spec.replace('=', '-').replace(',', '_')}", base / statistics.median(times[spec])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
