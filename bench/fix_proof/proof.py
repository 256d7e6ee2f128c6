"""The proof of `orchestrate fix` on the seed user's net (README, "orchestrate fix"): the seed's
net shape (tests/nets/data/seed_train_val.prototxt, seed_solver.prototxt) given a data stage's
LMDBs, trained the same number of iterations before and after `fix`; both runs' curves side by
side in one PNG and the numbers in a JSON.

    python bench/fix_proof/proof.py --data /tmp/camvid120 --iters 1500 --out /tmp/fixproof/runs \
        --png docs/fix_proof_camvid.png
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "tests" / "nets" / "data"


def seed_for(data: Path, out: Path) -> tuple[Path, Path]:
    """The seed's net and solver for this data: its LMDBs, its class count and ignore label (the
    seed user's net had the right ones for their own data); every other choice as the seed's."""
    stats = json.loads((data / "train" / "stats.json").read_text())
    n, ignore = stats["num_classes"], stats["ignore_label"]
    text = "".join(x for x in (SEED / "seed_train_val.prototxt").read_text().splitlines(True) if not x.startswith("#"))
    phases = text.split("include { phase: TEST }", 1)
    train = (
        phases[0].replace("IMAGES", str(data / "train" / "images")).replace("LABELS", str(data / "train" / "labels"))
    )
    val = (
        phases[1].replace("IMAGES", str(data / "val" / "images"), 1).replace("LABELS", str(data / "val" / "labels"), 1)
    )
    text = train + "include { phase: TEST }" + val
    text = text.replace("num_output: 4 ", f"num_output: {n} ").replace(
        "normalize: false", f"normalize: false ignore_label: {ignore}"
    )
    text = text.replace(
        "include { phase: TEST } }", f"include {{ phase: TEST }} accuracy_param {{ ignore_label: {ignore} }} }}"
    )
    out.mkdir(parents=True, exist_ok=True)
    net, solver = out / "seed_train_val.prototxt", out / "seed_solver.prototxt"
    net.write_text(text)
    solver.write_text((SEED / "seed_solver.prototxt").read_text().replace("NET", str(net)))
    return net, solver


def experiment(name: str, data: Path, net: Path, solver: Path, iters: int, val_every: int) -> dict[str, Any]:
    """The run's experiment. The unfixed net's layers are all zero, which the run's divergence
    rules stop at iteration 10 (dead-top); the rule is off for it, so it trains as many
    iterations as the fixed one."""
    return {
        "name": name,
        "seed": 0,
        "device": "cpu",
        "data": {"train": str(data / "train"), "val": str(data / "val"), "batch_size": 4},
        "net": {"prototxt": str(net)},
        "solver": {"prototxt": str(solver), "max_iter": iters},
        "checks": {"stats_interval": max(10, iters // 20), "zero_blobs": name != "before"},
        "validation": {"interval": val_every},
        "snapshot": {"interval": iters, "keep_last": 1},
        "progress": {"quiet": True},
    }


def orchestrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, capture_output=True, text=True)


def run(exp: dict[str, Any], where: Path) -> dict[str, Any]:
    """`orchestrate run --force` on the experiment; its losses, val mIoU and seconds."""
    path = where / f"{exp['name']}.yaml"
    path.write_text(yaml.safe_dump(exp))
    t0 = time.monotonic()
    r = orchestrate("run", str(path), "--run-dir", str(where / exp["name"]), "--force", "--fresh")
    seconds = time.monotonic() - t0
    rd = where / exp["name"]
    metrics = [json.loads(x) for x in (rd / "metrics.jsonl").read_text().splitlines() if x.strip()]
    val = [json.loads(x) for x in (rd / "val.jsonl").read_text().splitlines() if x.strip()]
    losses = [(m["iter"], m["loss"]) for m in metrics if "loss" in m]
    return {
        "rc": r.returncode,
        "seconds": round(seconds, 1),
        "iterations": losses[-1][0] if losses else 0,
        "loss": losses,
        "val": [(v["iter"], v["mean_iu"]) for v in val],
        "stderr": r.stderr[-2000:],
    }


def prove(data: Path, iters: int, out: Path, val_every: int) -> dict[str, Any]:
    """Check, fix, and train before and after; the numbers for README."""
    net, solver = seed_for(data, out / "seed")
    check = orchestrate("check", "--prototxt", str(net), "--solver", str(solver), "--data", str(data / "train"))
    fixed = out / "fixed"
    fix = orchestrate(
        "fix", "--prototxt", str(net), "--solver", str(solver), "--data", str(data / "train"), "--out", str(fixed)
    )
    before = run(experiment("before", data, net, solver, iters, val_every), out)
    after = run(
        experiment("after", data, fixed / "train_val.prototxt", fixed / "solver.prototxt", iters, val_every), out
    )
    return {
        "check_rc": check.returncode,
        "check_errors": check.stdout.count("ERROR "),
        "fix_rc": fix.returncode,
        "fix_stdout": fix.stdout,
        "before": before,
        "after": after,
    }


def plot(result: dict[str, Any], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("before", "after"), strict=True):
        r = result[key]
        it, loss = zip(*r["loss"], strict=True) if r["loss"] else ((), ())
        ax.plot(it, loss, color="tab:blue", lw=0.8, label="train loss")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss", color="tab:blue")
        ax2 = ax.twinx()
        if r["val"]:
            vi, miou = zip(*r["val"], strict=True)
            ax2.plot(vi, miou, "o-", color="tab:red", label="val mIoU")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("val mIoU", color="tab:red")
        best = max((m for _, m in r["val"]), default=0.0)
        ax.set_title(f"{key} fix: best val mIoU {best:.3f}")
    fig.suptitle(title)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="data stage output with train/ and val/")
    p.add_argument("--iters", type=int, default=1500)
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--out", required=True)
    p.add_argument("--png")
    a = p.parse_args()
    out = Path(a.out)
    result = prove(Path(a.data), a.iters, out, a.val_every)
    (out / "proof.json").write_text(json.dumps(result, indent=1))
    if a.png:
        plot(result, Path(a.png), f"the seed's net on {Path(a.data).name}, {a.iters} iterations each")
    for key in ("before", "after"):
        r = result[key]
        print(key, r["rc"], r["seconds"], r["loss"][:1], r["loss"][-1:], max((m for _, m in r["val"]), default=None))


if __name__ == "__main__":
    main()
