"""The official FCN nets of tests/nets/data/public/ as the doctor's tests use them: the Python
data layer (their own voc_layers / siftflow_layers modules) swapped for an Input layer, and
random backbone weights saved as a caffemodel that holds only the backbone, like an ImageNet
model does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PUBLIC = Path(__file__).parent / "data" / "public"
VGG16 = (
    "conv1_1",
    "conv1_2",
    "conv2_1",
    "conv2_2",
    "conv3_1",
    "conv3_2",
    "conv3_3",
    "conv4_1",
    "conv4_2",
    "conv4_3",
    "conv5_1",
    "conv5_2",
    "conv5_3",
    "fc6",
    "fc7",
)
ALEXNET = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
# name -> (net file, solver file, backbone, the zero-filled classifiers FCN learns from scratch)
NETS = {
    "voc-fcn32s": ("voc-fcn32s.train.prototxt", "voc-fcn32s.solver.prototxt", VGG16, ("score_fr",)),
    "voc-fcn16s": ("voc-fcn16s.train.prototxt", "voc-fcn16s.solver.prototxt", VGG16, ("score_fr", "score_pool4")),
    "voc-fcn8s": (
        "voc-fcn8s.train.prototxt",
        "voc-fcn8s.solver.prototxt",
        VGG16,
        ("score_fr", "score_pool4", "score_pool3"),
    ),
    "voc-fcn-alexnet": ("voc-fcn-alexnet.train.prototxt", "voc-fcn-alexnet.solver.prototxt", ALEXNET, ("score_fr",)),
    "siftflow-fcn32s": (
        "siftflow-fcn32s.trainval.prototxt",
        "siftflow-fcn32s.solver.prototxt",
        VGG16,
        ("score_fr_sem", "score_fr_geo"),
    ),
}


def with_input_layer(name: str, out_dir: Path, size: int = 64) -> Path:
    """The public net with its Python data layer replaced by an Input layer: `data`
    1x3xSxS, every other top (label, sem, geo) 1x1xSxS. Returns the written prototxt."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    net = text_format.Parse((PUBLIC / NETS[name][0]).read_text(), caffe_pb2.NetParameter())
    [idx] = [i for i, x in enumerate(net.layer) if x.type == "Python" and not x.bottom]
    tops = list(net.layer[idx].top)
    swapped = caffe_pb2.LayerParameter(name=net.layer[idx].name, type="Input", top=tops)
    for top in tops:
        swapped.input_param.shape.add().dim.extend([1, 3 if top == "data" else 1, size, size])
    net.layer[idx].CopyFrom(swapped)
    out = out_dir / f"{name}.prototxt"
    out.write_text(text_format.MessageToString(net))
    return out


def solver(name: str) -> Path:
    """The net's official solver (its paths are not read by the doctor)."""
    return PUBLIC / NETS[name][1]


def backbone_weights(net_path: Path, layers: tuple[str, ...], out: Path, seed: int = 0) -> Path:
    """A caffemodel with random (He-scaled) weights for `layers` only: the net is cut after its
    last backbone layer, filled and saved."""
    import caffe
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    net_param = text_format.Parse(net_path.read_text(), caffe_pb2.NetParameter())
    last = max(i for i, x in enumerate(net_param.layer) if x.name in layers)
    del net_param.layer[last + 1 :]
    cut = out.with_suffix(".prototxt")
    cut.write_text(text_format.MessageToString(net_param))
    net = caffe.Net(str(cut), caffe.TEST)
    rng = np.random.default_rng(seed)
    for name in layers:
        weights, bias = net.params[name]
        fan_in = weights.data[0].size
        weights.data[...] = rng.standard_normal(weights.data.shape, dtype=np.float32) * np.sqrt(2.0 / fan_in)
        bias.data[...] = 0
    net.save(str(out))
    return out
