"""Loading pretrained weights by layer name, VGG16 included: the classifier's fc6/fc7 are
InnerProduct layers whose weights have the same count as FCN's fc6/fc7 convolutions but
another shape, and Caffe's own `copy_from` aborts on that. `transplant` reshapes such blobs
in a copy of the caffemodel and lets Caffe copy it, so the fast C++ path reads the data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.tempfiles import through_temp_file
from nets.prototxt import load_weights


def _blob_shape(bp: Any) -> tuple[int, ...]:
    if len(bp.shape.dim):
        return tuple(int(d) for d in bp.shape.dim)
    return tuple(int(d) for d in (bp.num, bp.channels, bp.height, bp.width))


def _count(shape: tuple[int, ...]) -> int:
    c = 1
    for d in shape:
        c *= d
    return c


def plan(weights: Any, targets: dict[str, list[tuple[int, ...]]]) -> dict[str, Any]:
    """Decide, per source layer, copy / reshape / skip against the target param shapes
    (pure: NetParameter and shapes in, the plan out). Reshape needs equal counts."""
    from nets.prototxt import weight_blobs

    out: dict[str, Any] = {"copied": [], "reshaped": [], "skipped": [], "not_in_weights": []}
    source = weight_blobs(weights)
    for name, shapes in targets.items():
        if name not in source:
            out["not_in_weights"].append(name)
            continue
        blobs = source[name]
        if len(blobs) != len(shapes):
            out["skipped"].append(
                {"layer": name, "reason": f"{len(blobs)} blobs in the weights, {len(shapes)} in the net"}
            )
            continue
        src_shapes = [_blob_shape(b) for b in blobs]
        if src_shapes == [tuple(s) for s in shapes]:
            out["copied"].append(name)
        elif all(_count(a) == _count(tuple(b)) for a, b in zip(src_shapes, shapes, strict=True)):
            out["reshaped"].append({"layer": name, "from": src_shapes, "to": [list(s) for s in shapes]})
        else:
            out["skipped"].append(
                {"layer": name, "reason": f"shapes {src_shapes} in the weights, {[list(s) for s in shapes]} in the net"}
            )
    return out


def transplant(net: Any, weights_path: str | Path) -> dict[str, Any]:
    """Copy the weights of every same-named layer into a pycaffe `net`, reshaping blobs of
    equal count (fc6/fc7 -> convolutions) and skipping the others; returns what was done."""
    weights = load_weights(weights_path)
    targets = {name: [tuple(b.data.shape) for b in blobs] for name, blobs in net.params.items()}
    result = plan(weights, targets)
    reshape = {r["layer"]: r["to"] for r in result["reshaped"]}
    keep = set(result["copied"]) | set(reshape)
    for field in (weights.layer, weights.layers):
        # Caffe aborts on any same-named layer it cannot copy: keep only what it can
        for i in reversed(range(len(field))):
            if field[i].name not in keep:
                del field[i]
        for layer in field:
            for bp, shape in zip(layer.blobs, reshape.get(layer.name, []), strict=False):
                for legacy in ("num", "channels", "height", "width"):
                    bp.ClearField(legacy)
                bp.shape.dim[:] = shape
    through_temp_file(weights.SerializeToString(), ".caffemodel", net.copy_from)
    return result
