"""Child process of the doctor's dynamic check: build a net in Caffe, run one forward and
one backward pass layer by layer on a real batch, print per-layer statistics as JSON. It runs
the net the run runs: the same weights (`nets.weights.transplant`) and bilinear surgery.

    python -m nets.probe PROTOTXT [--weights W] [--phase TRAIN|TEST] [--seed N] [--no-surgery]

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

from common.child import flush_and_exit
from nets import bilinear
from nets.graph import CLASS_LOSSES, in_phase
from nets.prototxt import load_net

MARK = "segorch-probe:"
# layers whose first bottom's values reach their tops unchanged (a label stays a label)
VALUE_MOVERS = frozenset({"Crop", "Reshape", "Flatten", "Split"})


def _stats(a: Any) -> dict[str, Any]:
    import numpy as np

    finite = bool(np.isfinite(a).all())
    return {
        "shape": list(a.shape),
        "count": int(a.size),
        "finite": finite,
        "asum": float(np.abs(a).sum()) if finite else None,
    }


def _mark(what: str, name: str) -> None:
    sys.stderr.write(f"{MARK} {what} {name}\n")
    sys.stderr.flush()


def label_inputs(param: Any, phase: str) -> dict[str, dict[str, Any]]:
    """The blobs the net reads as labels, whatever their names: blob -> {"scores": the blobs
    whose channels are the classes, "ignore": the ignore label every reader shares (or None),
    "kind": "class" | "infogain" | "target"}. Found by what consumes them: the bottoms beyond
    the first of the losses and accuracies, and what a layer that only moves values (a Crop of
    the label to the scores, as valid-convolution U-Nets do; Reshape, Flatten, Split) reads to
    make one."""
    out: dict[str, dict[str, Any]] = {}
    layers = list(in_phase(param, phase))
    for layer in layers:
        classy = layer.type in CLASS_LOSSES or layer.type == "Accuracy"
        if not (classy or layer.type.endswith("Loss")) or len(layer.bottom) < 2:
            continue
        p = layer.accuracy_param if layer.type == "Accuracy" else layer.loss_param
        ignore = int(p.ignore_label) if p.HasField("ignore_label") else None
        for k, blob in enumerate(layer.bottom[1:], start=1):
            kind = "infogain" if layer.type == "InfogainLoss" and k == 2 else ("class" if classy else "target")
            entry = out.setdefault(blob, {"scores": [], "readers": [], "ignore": ignore, "kind": kind})
            entry["scores"].append(layer.bottom[0])
            entry["readers"].append(layer.name)
            if entry["ignore"] != ignore:
                entry["ignore"] = None  # a reader without it would index with the ignore value
    for layer in reversed(layers):
        made = [out[t] for t in layer.top if t in out]
        if layer.type in VALUE_MOVERS and made and layer.bottom and layer.bottom[0] not in out:
            out[layer.bottom[0]] = made[0]
    return out


def fill_inputs(net: Any, param: Any, seed: int, phase: str = "TRAIN") -> None:
    """Input layers have no data of their own: labels get valid class indices in [0, classes)
    and some ignore_label pixels, infogain matrices the identity, other targets values in
    [0, 1], images noise in [-100, 100]."""
    import numpy as np

    rng = np.random.RandomState(seed)
    labels = label_inputs(param, phase)
    for name, layer in zip(net._layer_names, net.layers, strict=True):
        if layer.type != "Input":
            continue
        for top in net.top_names[name]:
            data, spec = net.blobs[top].data, labels.get(top)
            if spec is None:
                data[...] = rng.uniform(-100, 100, data.shape)
            elif spec["kind"] == "infogain":
                data[...] = np.eye(data.shape[-2], data.shape[-1]) if data.ndim >= 2 else 1
            elif spec["kind"] == "target":
                data[...] = rng.uniform(0, 1, data.shape)
            else:
                data[...] = rng.randint(0, max(1, _classes(net, spec)), data.shape)
                if spec["ignore"] is not None:
                    data[rng.uniform(size=data.shape) < 0.1] = spec["ignore"]


def _classes(net: Any, spec: dict[str, Any]) -> int:
    """The fewest class channels among the scores a label is compared with."""
    return min(net.blobs[s].data.shape[1] for s in spec["scores"])


def guard_labels(net: Any, spec: dict[str, Any] | None, blob: str) -> dict[str, Any] | None:
    """Label values Caffe cannot take (outside [0, classes), not the ignore label) make its
    loss read past its probabilities: replace them (by the ignore label, else 0) so the probe
    goes on, and return what they were."""
    import numpy as np

    if spec is None or spec["kind"] != "class":
        return None
    data, classes, ignore = net.blobs[blob].data, _classes(net, spec), spec["ignore"]
    bad = (data < 0) | (data >= classes)
    if ignore is not None:
        bad &= data != ignore
    if not bad.any():
        return None
    values = [float(v) for v in np.unique(data[bad])[:10]]
    data[bad] = ignore if ignore is not None else 0
    return {"readers": spec["readers"], "classes": classes, "ignore": ignore, "count": int(bad.sum()), "values": values}


def run(prototxt: str, weights: str | None, phase: str, seed: int, surgery: bool = True) -> dict[str, Any]:
    """Build, (load weights, bilinear surgery), forward and backward; return the statistics."""
    import caffe

    caffe.set_mode_cpu()
    caffe.set_random_seed(seed)
    _mark("build", os.path.basename(prototxt))
    param = load_net(prototxt)
    net = caffe.Net(prototxt, getattr(caffe, phase))
    result: dict[str, Any] = {"phase": phase, "layers": [], "params": {}, "backward": False}
    if weights:
        from nets.weights import transplant

        _mark("weights", os.path.basename(weights))
        result["weights"] = transplant(net, weights)
    # the run's surgery, after the weights as in the run, and not on layers the weights gave
    done = result.get("weights", {"copied": [], "reshaped": []})
    loaded = set(done["copied"]) | {r["layer"] for r in done["reshaped"]}
    targets = bilinear.surgery_targets(param) if surgery else []
    result["surgery"] = bilinear.apply(net, param, [n for n in targets if n in net.params and n not in loaded])
    fill_inputs(net, param, seed, phase)
    labels, result["labels"] = label_inputs(param, phase), {}
    names = list(net._layer_names)
    finite = True
    for i, name in enumerate(names):
        _mark("forward", name)
        if net.layers[i].type != "Input":
            net._forward(i, i)
        for top in net.top_names[name]:
            bad = guard_labels(net, labels.get(top), top)
            if bad:
                result["labels"][top] = bad
        tops = {t: _stats(net.blobs[t].data) for t in net.top_names[name]}
        finite = finite and all(s["finite"] for s in tops.values())
        result["layers"].append(
            {"name": name, "type": net.layers[i].type, "bottoms": list(net.bottom_names[name]), "tops": tops}
        )
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
    ap.add_argument("--no-surgery", action="store_true", help="leave the upsampling layers to their fillers")
    args = ap.parse_args(argv)
    result = run(args.prototxt, args.weights, args.phase, args.seed, surgery=not args.no_surgery)
    sys.stdout.write(json.dumps(result) + "\n")
    flush_and_exit(0)


if __name__ == "__main__":
    sys.exit(main())
