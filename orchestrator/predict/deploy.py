"""What `predict` needs to know about a run's net, read from its prototxts (pure: NetParameter
in, plain values out): the deploy net (the run's deploy.prototxt, or one derived from its val
net for a user's own net), the input blob, the score blob, and the preprocessing that the val
net's data layer applies (mean, scale), so a prediction sees what validation saw."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nets.graph import CLASS_LOSSES, DATA_TYPES, in_phase

# layers whose output size is fixed by their weights: such a net runs on tiles of its input size
FIXED_SIZE = {"InnerProduct", "Flatten", "Reshape"}


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the net's input: BGR, minus `mean_bgr`, times `scale`."""

    mean_bgr: tuple[float, ...] | None  # B, G, R (Caffe's mean_value may give fewer or more)
    scale: float = 1.0


@dataclass(frozen=True)
class DeployInfo:
    input_blob: str
    score_blob: str
    input_shape: tuple[int, int, int, int]  # N, C, H, W of the deploy net as written
    fully_convolutional: bool
    # a net that crops its label inside (valid convolutions): where its smaller scores sit in the input
    label_offset: tuple[int, int] | None = None


def _scored(layers: list[Any]) -> Any | None:
    """The first loss (or Accuracy) layer with scores and labels."""
    for layer in layers:
        if (layer.type in CLASS_LOSSES or layer.type == "Accuracy") and len(layer.bottom) >= 2:
            return layer
    return None


def preprocess_of(val_net: Any, stats_mean: list[float] | None) -> Preprocess:
    """The mean/scale of the val net's image data layer (Data: transform_param; the paired
    Python layer: its param_str's mean_bgr, else the data stage's mean, `stats_mean`)."""
    layers = in_phase(val_net, "TEST")
    try:
        image = deploy_plan(layers)[1]
    except ValueError:
        image = "data"
    for layer in layers:
        if layer.bottom or layer.type not in DATA_TYPES or image not in layer.top:
            continue
        if layer.type == "Python":
            try:
                params = json.loads(layer.python_param.param_str or "{}")
            except json.JSONDecodeError:
                params = {}
            mean = params.get("mean_bgr", stats_mean)
            return Preprocess(tuple(float(v) for v in mean) if mean else None)
        tp = layer.transform_param
        mean = list(tp.mean_value)
        if len(mean) == 1:
            mean = mean * 3
        return Preprocess(
            tuple(float(v) for v in mean) if mean else None, float(tp.scale) if tp.HasField("scale") else 1.0
        )
    return Preprocess(tuple(stats_mean) if stats_mean else None)


def _bottom_nodes(layers: list[Any]) -> list[list[tuple[int, str]]]:
    """Per layer, its bottoms as (index of the layer that last wrote the blob before it, blob):
    the data flow with in-place layers followed in order."""
    last: dict[str, int] = {}
    out = []
    for i, layer in enumerate(layers):
        out.append([(last.get(b, -1), b) for b in layer.bottom])
        for t in layer.top:
            last[t] = i
    return out


def _ancestors(
    layers: list[Any], nodes: list[list[tuple[int, str]]], start: list[tuple[int, str]], values_only: bool = False
) -> tuple[set[int], set[tuple[int, str]]]:
    """The layers `start` (blob nodes) depends on, and the blob nodes read on the way; with
    `values_only`, not through a Crop's reference (it gives only the size)."""
    found: set[int] = set()
    seen: set[tuple[int, str]] = set()
    todo = list(start)
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        if node[0] >= 0 and node[0] not in found:
            found.add(node[0])
            todo += nodes[node[0]][:1] if values_only and layers[node[0]].type == "Crop" else nodes[node[0]]
    return found, seen


def _is_source(layer: Any) -> bool:
    return not layer.bottom and (layer.type in DATA_TYPES or layer.type == "Input")


def deploy_plan(layers: list[Any]) -> tuple[list[int], str]:
    """(the layers the score needs, in order, without data layers; the image blob) of a TEST
    phase. It follows the data flow back from the blob the loss scores: layers that depend on
    a label input (a label Crop, a label Reshape) or feed only losses and accuracies are left
    out. ValueError (in words) when the scores need the labels or more than one input."""
    scored = _scored(layers)
    if scored is None:
        raise ValueError("the val net has no loss or Accuracy layer with scores and labels to find its score blob")
    at = next(i for i, x in enumerate(layers) if x is scored)
    nodes = _bottom_nodes(layers)
    need, blobs = _ancestors(layers, nodes, nodes[at][:1])
    _, label_blobs = _ancestors(layers, nodes, nodes[at][1:], values_only=True)
    sources = {(i, b) for i, b in blobs if i >= 0 and _is_source(layers[i])}
    labels = {(i, b) for i, b in label_blobs if i >= 0 and _is_source(layers[i])}
    if sources & labels:
        both = ", ".join(sorted(b for _, b in sources & labels))
        raise ValueError(
            f"the scores '{scored.bottom[0]}' depend on the label input ({both}): no deploy net without labels"
        )
    if len(sources) != 1:
        names = ", ".join(sorted(b for _, b in sources)) or "none"
        raise ValueError(
            f"the scores '{scored.bottom[0]}' need {len(sources)} data inputs ({names}); one image is supported"
        )
    return [i for i in sorted(need) if not _is_source(layers[i])], next(iter(sources))[1]


def check_deploy(net: Any) -> list[str]:
    """What would make Caffe abort on a deploy net built as written: a bottom no earlier layer
    makes, a layer name twice, no Input (checked before Caffe sees it: Caffe's CHECK kills)."""
    made: set[str] = set()
    names: set[str] = set()
    problems = []
    if not any(x.type == "Input" for x in net.layer):
        problems.append("no Input layer")
    for layer in net.layer:
        problems += [
            f"layer '{layer.name}' reads '{b}', which no layer before it makes" for b in layer.bottom if b not in made
        ]
        if layer.name in names:
            problems.append(f"two layers are named '{layer.name}'")
        names.add(layer.name)
        made.update(layer.top)
    return problems


def derive_deploy(val_net: Any, height: int, width: int) -> Any:
    """A deploy NetParameter from a val (or train_val) net: one Input for the image blob, then
    the TEST-phase layers the scores need (deploy_plan). ValueError when it cannot be made."""
    from caffe.proto import caffe_pb2

    layers = in_phase(val_net, "TEST")
    keep, image = deploy_plan(layers)
    out = caffe_pb2.NetParameter()
    out.name = (val_net.name or "net") + "_deploy"
    inp = out.layer.add(name="data" if all(layers[i].name != "data" for i in keep) else "input", type="Input")
    inp.top.append(image)
    inp.input_param.shape.add().dim.extend([1, 3, height, width])
    for i in keep:
        new = out.layer.add()
        new.CopyFrom(layers[i])
        new.ClearField("include")
        new.ClearField("exclude")
    problems = check_deploy(out)
    if problems:
        raise ValueError("the derived deploy net would not build: " + "; ".join(problems))
    return out


def label_offset(val_net: Any) -> tuple[int, int] | None:
    """Where the scored label sits in the input when the net crops its label inside (a U-Net
    with valid convolutions: Crop of the label to the scores): the (y, x) crop offset, else None."""
    layers = in_phase(val_net, "TEST")
    scored = _scored(layers)
    if scored is None:
        return None
    at = next(i for i, x in enumerate(layers) if x is scored)
    nodes = _bottom_nodes(layers)
    need, _ = _ancestors(layers, nodes, nodes[at][1:2], values_only=True)
    oy = ox = 0
    for i in sorted(need):
        layer = layers[i]
        if layer.type != "Crop":
            continue
        p = layer.crop_param
        axis = p.axis if p.HasField("axis") else 2
        offs = list(p.offset) or [0]
        per_axis = {a: offs[0] if len(offs) == 1 else offs[a - axis] for a in range(axis, 4)}
        oy, ox = oy + per_axis.get(2, 0), ox + per_axis.get(3, 0)
    return (oy, ox) if (oy or ox) else None


def deploy_info(deploy: Any, val_net: Any | None) -> DeployInfo:
    """Input and score blobs of a deploy net; the score blob is what the val net's loss reads
    (argmax of scores, as validation takes it), else `score`, else the last layer's top."""
    inputs = [x for x in deploy.layer if x.type == "Input"]
    if not inputs:
        raise ValueError("the deploy net has no Input layer")
    dims = tuple(int(d) for d in inputs[0].input_param.shape[0].dim)
    tops = {t for x in deploy.layer for t in x.top}
    scored = _scored(in_phase(val_net, "TEST")) if val_net is not None else None
    if scored is not None and scored.bottom[0] in tops:
        score = scored.bottom[0]
    elif "score" in tops:
        score = "score"
    else:
        score = deploy.layer[-1].top[0]
    return DeployInfo(
        inputs[0].top[0],
        score,
        dims,  # type: ignore[arg-type]
        not any(x.type in FIXED_SIZE for x in deploy.layer),
        label_offset(val_net) if val_net is not None else None,
    )
