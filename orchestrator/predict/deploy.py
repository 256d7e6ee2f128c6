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
DROP = CLASS_LOSSES | {"Accuracy", "Silence", "SoftmaxWithLoss", "InfogainLoss"}


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the net's input: BGR, minus `mean_bgr`, times `scale`."""

    mean_bgr: tuple[float, float, float] | None
    scale: float = 1.0


@dataclass(frozen=True)
class DeployInfo:
    input_blob: str
    score_blob: str
    input_shape: tuple[int, int, int, int]  # N, C, H, W of the deploy net as written
    fully_convolutional: bool


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
    scored = _scored(layers)
    labels = set(scored.bottom[1:]) if scored is not None else {"label"}
    for layer in layers:
        if layer.bottom or layer.type not in DATA_TYPES or set(layer.top) <= labels:
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
    return Preprocess(tuple(stats_mean) if stats_mean else None)  # type: ignore[arg-type]


def derive_deploy(val_net: Any, height: int, width: int) -> Any:
    """A deploy NetParameter from a val (or train_val) net: its TEST-phase layers, the data
    layers replaced by one Input for the image blob, the losses and accuracies and whatever
    reads the labels dropped."""
    from caffe.proto import caffe_pb2

    layers = in_phase(val_net, "TEST")
    scored = _scored(layers)
    labels = set(scored.bottom[1:]) if scored is not None else {"label"}
    out = caffe_pb2.NetParameter()
    out.name = (val_net.name or "net") + "_deploy"
    image_top = None
    for layer in layers:
        if not layer.bottom and layer.type in DATA_TYPES:
            image_top = image_top or next((t for t in layer.top if t not in labels), None)
            continue
        if layer.type in DROP or set(layer.bottom) & labels:
            continue
        new = out.layer.add()
        new.CopyFrom(layer)
        new.ClearField("include")
        new.ClearField("exclude")
    inp = caffe_pb2.LayerParameter(name="data", type="Input", top=[image_top or "data"])
    inp.input_param.shape.add().dim.extend([1, 3, height, width])
    layers_copy = list(out.layer)
    out.ClearField("layer")
    out.layer.add().CopyFrom(inp)
    for layer in layers_copy:
        out.layer.add().CopyFrom(layer)
    return out


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
    return DeployInfo(inputs[0].top[0], score, dims, not any(x.type in FIXED_SIZE for x in deploy.layer))  # type: ignore[arg-type]
