"""GPU numerics: the same net with the same weights and inputs, forward and backward on the CPU
and on the GPU; every blob's output and gradient and every parameter's gradient must agree.

Nets: the compact FCN with BatchNorm (batch statistics, TRAIN phase) and FCN-8s (VGG16 with
its Deconvolution and Crop layers) at a small input. Data layers are replaced by Input layers
fed with the same random images and labels (some pixels ignored); Dropout is removed (its
masks come from different RNGs on the two devices).

Tolerance, per blob, as the relative L2 error |gpu - cpu| / |cpu|: outputs (forward data)
<= 1e-4, gradients (blob and parameter diffs) <= 1e-3. Float32 sums run in different orders on
the two devices; a ReLU input within rounding of zero can flip, hence the looser gradient bound.

`--dry` runs both sides on the CPU (every step but the GPU: the differences must be 0).
Prints one line per net and `numerics-<net> PASS|FAIL`; `--out` writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np

TOL_DATA, TOL_DIFF = 1e-4, 1e-3
CLASSES = 5
# name -> (generator arguments, input N x H x W)
NETS: dict[str, tuple[dict[str, Any], tuple[int, int, int]]] = {
    "compact-bn": (dict(arch="compact", width=16, depth=3, batch_norm=True), (2, 64, 64)),
    "fcn8s": (dict(arch="fcn8s"), (1, 64, 64)),
}


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """|a - b| / |b| in the L2 norm (0 when both are 0)."""
    num = float(np.linalg.norm((a.astype(np.float64) - b.astype(np.float64)).ravel()))
    den = float(np.linalg.norm(b.astype(np.float64).ravel()))
    return num / den if den > 0 else num


def input_net(train_prototxt: str, shape: tuple[int, int, int]) -> str:
    """The generated train net with its data layers replaced by one Input layer (data, label)
    and without Dropout."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    net = text_format.Parse(train_prototxt, caffe_pb2.NetParameter())
    layers = [layer for layer in net.layer if layer.type not in ("Data", "Python", "Dropout")]
    n, h, w = shape
    inp = caffe_pb2.LayerParameter(name="input", type="Input", top=["data", "label"])
    inp.input_param.shape.add().dim.extend([n, 3, h, w])
    inp.input_param.shape.add().dim.extend([n, 1, h, w])
    del net.layer[:]
    net.layer.extend([inp, *layers])
    return text_format.MessageToString(net)


def snapshot(net: Any) -> dict[str, np.ndarray]:
    """Copies of every blob's data/diff and every parameter's data/diff."""
    out = {}
    for name, b in net.blobs.items():
        out[f"blob {name} data"] = b.data.copy()
        out[f"blob {name} diff"] = b.diff.copy()
    for name, ps in net.params.items():
        for i, p in enumerate(ps):
            out[f"param {name}/{i} data"] = p.data.copy()
            out[f"param {name}/{i} diff"] = p.diff.copy()
    return out


def forward_backward(
    prototxt: Path, weights: dict[str, list[np.ndarray]] | None, image: np.ndarray, label: np.ndarray, gpu: bool
) -> tuple[dict[str, list[np.ndarray]], dict[str, np.ndarray]]:
    """One forward/backward pass on the chosen device, from `weights` (None: the fillers');
    returns the starting weights and everything after the pass."""
    import caffe

    if gpu:
        caffe.set_device(0)
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()
    net = caffe.Net(str(prototxt), caffe.TRAIN)
    if weights is not None:
        for name, ps in net.params.items():
            for p, w in zip(ps, weights[name], strict=True):
                p.data[...] = w
    start = {name: [p.data.copy() for p in ps] for name, ps in net.params.items()}
    for ps in net.params.values():
        for p in ps:
            p.diff[...] = 0
    net.blobs["data"].data[...] = image
    net.blobs["label"].data[...] = label
    net.forward()
    net.backward()
    return start, snapshot(net)


def compare(cpu: dict[str, np.ndarray], gpu: dict[str, np.ndarray]) -> dict[str, Any]:
    """Worst relative errors of outputs (blob data; parameter data, where only BatchNorm's
    running sums can differ) and of gradients (blob and parameter diffs)."""
    worst: dict[str, tuple[float, str]] = {"data": (0.0, ""), "diff": (0.0, "")}
    for key, c in cpu.items():
        kind = "diff" if key.endswith("diff") else "data"
        e = rel_err(gpu[key], c)
        if e > worst[kind][0] or not np.isfinite(e):
            worst[kind] = (e, key)
    grads = [k for k in cpu if k.startswith("param") and k.endswith("diff")]
    live = sum(1 for k in grads if np.any(cpu[k]))
    return {
        "max_rel_err_data": worst["data"][0],
        "where_data": worst["data"][1],
        "max_rel_err_diff": worst["diff"][0],
        "where_diff": worst["diff"][1],
        "loss_cpu": float(cpu["blob loss data"]),
        "loss_gpu": float(gpu["blob loss data"]),
        "arrays_compared": len(cpu),
        "param_grads_nonzero": live,
        "param_grads": len(grads),
        # a pass where no gradient reached any parameter would prove nothing
        "pass": bool(worst["data"][0] <= TOL_DATA and worst["diff"][0] <= TOL_DIFF and live > 0),
    }


def check_net(name: str, tmp: Path, dry: bool) -> dict[str, Any]:
    """Build one net, run it on both sides, compare."""
    import nets

    args, (n, h, w) = NETS[name]
    g = nets.generate(
        num_classes=CLASSES, train_data=nets.DataSource("unused", "unused", n), val_data=None, ignore_label=255, **args
    )
    p = tmp / f"{name}.prototxt"
    p.write_text(input_net(g.train, (n, h, w)))
    rng = np.random.default_rng(0)
    image = rng.uniform(-60, 60, (n, 3, h, w)).astype(np.float32)
    label = rng.integers(0, CLASSES, (n, 1, h, w)).astype(np.float32)
    label[rng.random(label.shape) < 0.05] = 255
    weights, cpu = forward_backward(p, None, image, label, gpu=False)
    _, other = forward_backward(p, weights, image, label, gpu=not dry)
    res = compare(cpu, other)
    res.update(net=name, input=[n, 3, h, w], device="cpu (dry run)" if dry else "gpu")
    return res


def main() -> int:
    """Check each net; exit 1 when one is out of tolerance."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry", action="store_true", help="both sides on the CPU (no GPU needed)")
    ap.add_argument("--out", type=Path, help="write the results as JSON")
    ap.add_argument("--nets", default=",".join(NETS), help=f"comma-separated subset of {', '.join(NETS)}")
    a = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as t:
        for name in a.nets.split(","):
            r = check_net(name, Path(t), a.dry)
            results.append(r)
            print(
                f"{name} {tuple(r['input'])}: loss cpu {r['loss_cpu']:.6f} {r['device']} {r['loss_gpu']:.6f}; "
                f"outputs max rel err {r['max_rel_err_data']:.2e} ({r['where_data'] or '-'}, tol {TOL_DATA:.0e}); "
                f"gradients {r['max_rel_err_diff']:.2e} ({r['where_diff'] or '-'}, tol {TOL_DIFF:.0e}); "
                f"{r['arrays_compared']} arrays, "
                f"{r['param_grads_nonzero']}/{r['param_grads']} parameter gradients non-zero",
                flush=True,
            )
            print(f"numerics-{name} {'PASS' if r['pass'] else 'FAIL'}", flush=True)
    if a.out:
        a.out.write_text(json.dumps({"tol_data": TOL_DATA, "tol_diff": TOL_DIFF, "nets": results}, indent=1))
    return 0 if all(r["pass"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
