"""FCN-8s (VGG16) at 500x500, batch 1, on one device: `orchestrate run` against `caffe train` on
the same solver and nets, images/s, and the FLOP/s a training step achieves against the card's
FP32 peak.

As in bench/bench_overhead.py, each tool runs N1 and N2 iterations and the time difference over
N2 - N1 iterations is the per-iteration cost (start-up, the doctor's probe and net set-up
cancel). On one GPU the two tools cannot share the device fairly, so they run one after the
other, in alternating order each round; each ratio is the median of the rounds' ratios (ours
it/s over caffe's: 1.00 is no overhead). Two configurations: the default checks, and
statistics of every blob every iteration.

FLOPs come from the net's own layer shapes: 2 x multiply-adds of every Convolution,
Deconvolution and InnerProduct forward; backward adds the same again for each weight gradient
(learned layers) and each input gradient (all but the layer on the data); element-wise layers,
pooling and the loss are left out (under 1 %). Peak FP32 = SMs x FP32 lanes per SM x 2 x the
maximum SM clock (from `caffe device_query` and nvidia-smi).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.bench_overhead import ENV, caffe_cmd, ours_cmd  # noqa: E402
from bench.common import result_line  # noqa: E402

# FP32 lanes per SM by compute capability (NVIDIA's CUDA C++ Programming Guide, arithmetic throughput)
FP32_LANES = {(7, 0): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128, (8, 9): 128, (9, 0): 128, (10, 0): 128, (12, 0): 128}
CONFIGS = {"default": [], "stats-every-iter": ["--set", "checks.stats_interval=1"]}


def experiment(tmp: Path, data: Path, arch: str, device: str) -> Path:
    """The benchmark's experiment: one net, batch 1, no validation (caffe train runs none)."""
    import yaml

    exp = {
        "name": f"{arch}-bench",
        "seed": 0,
        "device": device,
        "data": {"train": str(data / "train"), "batch_size": 1},
        "net": {"arch": arch},
        "solver": {
            "type": "SGD",
            "base_lr": 1e-4,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "lr_policy": "fixed",
            "max_iter": 1,
        },
    }
    p = tmp / "exp.yaml"
    p.write_text(yaml.safe_dump(exp))
    return p


def timed(cmd: list[str]) -> float:
    """Wall seconds of one command run to completion (it must succeed)."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=ENV, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"exit {r.returncode}: {' '.join(cmd)}\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}")
    return time.perf_counter() - t0


def per_iteration(
    tmp: Path, exp: Path, extra: list[str], gpu_id: int | None, n1: int, n2: int, caffe_first: bool
) -> dict[str, float]:
    """Seconds per iteration of caffe train and orchestrate run (N2 - N1 differencing)."""
    gpu = [f"--gpu={gpu_id}"] if gpu_id is not None else []

    t: dict[tuple[str, int], float] = {}
    for n in (n2, n1):
        for tool in ("caffe", "ours") if caffe_first else ("ours", "caffe"):
            t[tool, n] = timed(
                caffe_cmd(tmp, n) + gpu if tool == "caffe" else ours_cmd(exp, tmp / f"ours{n}", n, extra)
            )
    return {tool: (t[tool, n2] - t[tool, n1]) / (n2 - n1) for tool in ("caffe", "ours")}


def step_flops(prototxt: Path) -> dict[str, float]:
    """Forward and forward+backward FLOPs of one iteration, from the net's layer shapes."""
    import caffe
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    caffe.set_mode_cpu()
    spec = {layer.name: layer for layer in text_format.Parse(prototxt.read_text(), caffe_pb2.NetParameter()).layer}
    net = caffe.Net(str(prototxt), caffe.TRAIN)
    fwd = bwd = 0.0
    for name, layer in zip(net._layer_names, net.layers, strict=True):
        if layer.type not in ("Convolution", "Deconvolution", "InnerProduct"):
            continue
        w = net.params[name][0].data.shape
        bottom, top = net.blobs[net.bottom_names[name][0]], net.blobs[net.top_names[name][0]]
        if layer.type == "Convolution":
            macs = top.count * int(w[1] * w[2] * w[3])
        elif layer.type == "Deconvolution":
            macs = bottom.count * int(w[1] * w[2] * w[3])
        else:
            macs = top.count * int(w[1])
        params = spec[name].param
        learns = not params or params[0].lr_mult != 0
        fwd += 2 * macs
        bwd += 2 * macs * (int(learns) + int(net.bottom_names[name][0] != "data"))
    return {"forward": fwd, "step": fwd + bwd}


def summarize(rounds: list[dict[str, float]], flops: float) -> dict[str, Any]:
    """Median seconds per iteration of each tool over the rounds, as ratio, images/s and FLOP/s."""
    caffe_s = statistics.median(s["caffe"] for s in rounds)
    ours_s = statistics.median(s["ours"] for s in rounds)
    return {
        "ratio": statistics.median(s["caffe"] / s["ours"] for s in rounds),
        "caffe_images_per_s": 1 / caffe_s,
        "ours_images_per_s": 1 / ours_s,
        "caffe_flops_per_s": flops / caffe_s,
        "ours_flops_per_s": flops / ours_s,
        "rounds": rounds,
    }


def fp32_peak(device_query: str, gpu_id: int) -> dict[str, Any] | None:
    """The card's FP32 peak from `caffe device_query`'s text and nvidia-smi's maximum SM clock."""
    sms = re.search(r"Number of multiprocessors:\s*(\d+)", device_query)
    major = re.search(r"Major revision number:\s*(\d+)", device_query)
    minor = re.search(r"Minor revision number:\s*(\d+)", device_query)
    clk = subprocess.run(
        ["nvidia-smi", "-i", str(gpu_id), "--query-gpu=clocks.max.sm,name", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
    )
    if not (sms and major and minor) or clk.returncode != 0:
        return None
    mhz, name = [x.strip() for x in clk.stdout.strip().split(",", 1)]
    lanes = FP32_LANES.get((int(major.group(1)), int(minor.group(1))), 128)
    flops = int(sms.group(1)) * lanes * 2 * float(mhz) * 1e6
    return {
        "name": name,
        "sms": int(sms.group(1)),
        "fp32_lanes_per_sm": lanes,
        "max_sm_clock_mhz": float(mhz),
        "fp32_peak_flops": flops,
    }


def _report(res: dict[str, Any], gpu_id: int | None, a: argparse.Namespace) -> None:
    """Images/s and FLOP/s per configuration (share of the card's FP32 peak when known), and the ratio lines."""
    if gpu_id is not None and a.device_query and a.device_query.exists():
        res["peak"] = fp32_peak(a.device_query.read_text(), gpu_id)
    peak = (res.get("peak") or {}).get("fp32_peak_flops")
    for name, c in res["configs"].items():
        share = (
            f", {100 * c['caffe_flops_per_s'] / peak:.1f} % of the FP32 peak {peak / 1e12:.1f} TFLOP/s" if peak else ""
        )
        print(
            f"{name}: caffe train {c['caffe_images_per_s']:.2f} img/s ({c['caffe_flops_per_s'] / 1e12:.2f} TFLOP/s"
            f"{share}); orchestrate run {c['ours_images_per_s']:.2f} img/s ({c['ours_flops_per_s'] / 1e12:.2f} "
            "TFLOP/s)"
        )
        print(result_line(f"{'gpu' if gpu_id is not None else 'cpu'}-{a.arch}-overhead-{name}", c["ratio"]))


def _args() -> argparse.Namespace:
    """The command line (the device, the data, how many iterations and rounds, the budget)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="gpu:0", help="gpu:N or cpu (the dry run)")
    ap.add_argument("--data", type=Path, default=REPO / "data" / "fcn500", help="a data stage output with train/")
    ap.add_argument("--arch", default="fcn8s")
    ap.add_argument("--n1", type=int, default=5)
    ap.add_argument("--n2", type=int, default=45)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {', '.join(CONFIGS)}")
    ap.add_argument("--device-query", type=Path, help="saved output of `caffe device_query` (for the peak)")
    ap.add_argument(
        "--budget",
        type=float,
        default=1e9,
        help="seconds: start no round that would end after this (the numbers so far are kept)",
    )
    ap.add_argument("--out", type=Path, help="write the numbers as JSON (after every round)")
    return ap.parse_args()


def main() -> int:
    """Reference run, FLOPs, rounds per configuration, the peak; print and write the numbers."""
    a = _args()
    t_start = time.time()
    gpu_id = int(a.device.split(":")[1]) if a.device.startswith("gpu") else None
    res: dict[str, Any] = {
        "device": a.device,
        "arch": a.arch,
        "data": str(a.data),
        "n1": a.n1,
        "n2": a.n2,
        "rounds": a.rounds,
        "configs": {},
    }
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        exp = experiment(tmp, a.data.resolve(), a.arch, a.device)
        # the reference run dir gives caffe train exactly our solver and nets
        timed(ours_cmd(exp, tmp / "ref", 1))
        flops = step_flops(tmp / "ref" / "train.prototxt")
        res["flops_forward"], res["flops_step"] = flops["forward"], flops["step"]
        print(
            f"{a.arch}: {flops['forward'] / 1e9:.1f} GFLOP forward, {flops['step'] / 1e9:.1f} GFLOP per "
            "training step (batch 1)",
            flush=True,
        )
        round_s = 0.0
        for name in a.configs.split(","):
            rounds: list[dict[str, float]] = []
            for r in range(a.rounds):
                t0 = time.time()
                if round_s and t0 + round_s > t_start + a.budget:
                    print(f"{name} round {r + 1}: skipped, it would end after the {a.budget:.0f} s budget", flush=True)
                    break
                sec = per_iteration(tmp, exp, CONFIGS[name], gpu_id, a.n1, a.n2, caffe_first=r % 2 == 0)
                round_s = time.time() - t0
                rounds.append(sec)
                print(
                    f"{name} round {r + 1}: caffe train {1 / sec['caffe']:.2f} it/s, orchestrate run "
                    f"{1 / sec['ours']:.2f} it/s, ratio {sec['caffe'] / sec['ours']:.3f} ({round_s:.0f} s)",
                    flush=True,
                )
                res["configs"][name] = summarize(rounds, flops["step"])
                if a.out:
                    a.out.write_text(json.dumps(res, indent=1))
    _report(res, gpu_id, a)
    if a.out:
        a.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
