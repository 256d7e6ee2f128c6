"""Child process of the doctor's dynamic check: build a net in Caffe, run one forward and
one backward pass layer by layer on a real batch, print per-layer statistics as JSON.

    python -m nets.probe PROTOTXT [--weights W] [--phase TRAIN|TEST] [--seed N]

Caffe aborts this process (glog CHECK -> SIGABRT) on a net that does not fit together; the
parent (`nets.dynamic`) turns that into a finding. Before each layer the probe writes a
`segorch-probe: forward NAME` line to stderr, so a crash can be blamed on its layer.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

MARK = "segorch-probe:"


def _stats(a: Any) -> dict[str, Any]:
    import numpy as np

    finite = bool(np.isfinite(a).all())
    return {"shape": list(a.shape), "count": int(a.size), "finite": finite,
            "asum": float(np.abs(a).sum()) if finite else None}


def _mark(what: str, name: str) -> None:
    sys.stderr.write(f"{MARK} {what} {name}\n")
    sys.stderr.flush()


def _fill_inputs(net: Any, seed: int) -> None:
    """Input layers have no data of their own: image-like noise, zeros for labels."""
    import numpy as np

    rng = np.random.RandomState(seed)
    for name, layer in zip(net._layer_names, net.layers):
        if layer.type == "Input":
            for top in net.top_names[name]:
                blob = net.blobs[top]
                blob.data[...] = 0 if "label" in top else rng.uniform(-100, 100, blob.data.shape)


def run(prototxt: str, weights: str | None, phase: str, seed: int) -> dict[str, Any]:
    """Build, (load weights), forward and backward; return the statistics."""
    import caffe

    caffe.set_mode_cpu()
    caffe.set_random_seed(seed)
    _mark("build", os.path.basename(prototxt))
    net = caffe.Net(prototxt, getattr(caffe, phase))
    result: dict[str, Any] = {"phase": phase, "layers": [], "params": {}, "backward": False}
    if weights:
        from nets.weights import transplant

        _mark("weights", os.path.basename(weights))
        result["weights"] = transplant(net, weights)
    _fill_inputs(net, seed)
    names = list(net._layer_names)
    finite = True
    for i, name in enumerate(names):
        _mark("forward", name)
        if net.layers[i].type != "Input":
            net._forward(i, i)
        tops = {t: _stats(net.blobs[t].data) for t in net.top_names[name]}
        finite = finite and all(s["finite"] for s in tops.values())
        result["layers"].append({"name": name, "type": net.layers[i].type,
                                 "bottoms": list(net.bottom_names[name]), "tops": tops})
    if finite:
        # a NaN in max pooling leaves its argmax at -1 and Caffe's backward then writes
        # outside the blob: only go backward on finite values
        net.clear_param_diffs()
        for i in range(len(names) - 1, -1, -1):
            _mark("backward", names[i])
            net._backward(i, i)
        result["backward"] = True
    for name, blobs in net.params.items():
        result["params"][name] = [{"data": _stats(b.data), "diff": _stats(b.diff)} for b in blobs]
    return result


def main(argv: list[str] | None = None) -> int:
    """Print the probe's JSON on one stdout line; exit without Caffe's teardown."""
    ap = argparse.ArgumentParser(prog="python -m nets.probe", description=__doc__.splitlines()[0])
    ap.add_argument("prototxt")
    ap.add_argument("--weights")
    ap.add_argument("--phase", choices=("TRAIN", "TEST"), default="TRAIN")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    result = run(args.prototxt, args.weights, args.phase, args.seed)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # Caffe's prefetch threads (and a heap hurt by a bad net) can crash at interpreter exit
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
