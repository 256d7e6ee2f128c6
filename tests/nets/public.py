"""The public nets of tests/nets/data/public/ and what the tests need to know about each one
(`REGISTRY`): BVLC nets get their data layer swapped for an Input layer (or the data stage's
paired layer) at an input size their geometry fits; fork nets must be answered by the doctor
with every fork layer and field (`fork_tokens`). Random backbone weights are saved as a
caffemodel that holds only the backbone, like an ImageNet model does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nets.zeroinit import BACKBONES

PUBLIC = Path(__file__).parent / "data" / "public"
VGG16 = dict(BACKBONES)["VGG16"]  # the layer names the doctor knows a pretrained model by
ALEXNET = dict(BACKBONES)["AlexNet"]


@dataclass(frozen=True)
class PublicNet:
    """One public net. `data_layers` are the layer names a test replaces (all phases);
    `image_top` / `label_tops` are what they produced; `size` is an input side (HxW) its
    geometry fits; `backbone` are the layers an ImageNet caffemodel would give;
    `zero_classifiers` the layers it zero-fills on purpose; `fork_tokens` the fork layer
    types and fields the doctor must name (kind "fork"); `label_crop`: the published net feeds
    the full-size label to a loss over smaller scores (valid convolutions), so the tests crop
    the label inside the net to the score at this offset (`add_label_crop`)."""

    file: str
    repo: str
    kind: str  # "bvlc": this Caffe builds it once its data layer is swapped; "fork": it needs a fork
    num_classes: int
    solver: str | None = None
    data_layers: tuple[str, ...] = ("data",)
    image_top: str = "data"
    label_tops: tuple[str, ...] = ("label",)
    backbone: tuple[str, ...] = ()
    zero_classifiers: tuple[str, ...] = ()
    size: int = 64
    ignore_label: int | None = 255
    score: str | None = None  # the top that holds the class scores
    loss: bool = True  # False: a deploy net (no label, no loss): a test adds them
    fork: str | None = None  # the key of nets.forks.FORKS the doctor names
    fork_tokens: tuple[str, ...] = ()
    label_crop: int | None = None  # offset of the in-net Crop of each label top to `score` that the tests add
    notes: str = ""


def _deploy(stem: str, repo: str, kind: str, num_classes: int, **fields: Any) -> PublicNet:
    """A deploy net, `<stem>.deploy.prototxt`: a net-level input instead of data layers, no label, no
    loss (a test adds them)."""
    return PublicNet(
        f"{stem}.deploy.prototxt",
        repo,
        kind,
        num_classes,
        data_layers=(),
        label_tops=(),
        ignore_label=None,
        loss=False,
        **fields,
    )


# deploy nets of forks: stem -> repo, classes, input side, fork, the fork's layer types and fields, notes
_FORK_DEPLOY: dict[str, tuple[str, int, int, str, tuple[str, ...], str]] = {
    "icnet-cityscapes": ("hszhao/ICNet", 19, 1025, "pspnet", ("Interp", "interp_param"),
                         "deploy net (Input 1025x2049), BatchNorm already merged into the convolutions; three "
                         "branches joined by Interp (shrink and zoom)"),
    "crfrnn": ("torrvision/crfasrnn", 21, 500, "crfrnn", ("MultiStageMeanfield", "multi_stage_meanfield_param"),
               "deploy net (Input 500x500): FCN-8s then a MultiStageMeanfield (the CRF as an RNN) that reads the "
               "scores and the image"),
}  # fmt: skip


# the layers SegNet's fork adds, which ENet's fork keeps
_SEGNET_LAYERS = ("DenseImageData", "dense_image_data_param", "BN", "bn_param", "Upsample", "upsample_param")
_SEGNET_TOKENS = (*_SEGNET_LAYERS, "class_weighting")


_FCN_REPO = "shelhamer/fcn.berkeleyvision.org"
_FCN = "FCN (fcn.berkeleyvision.org): Python data layer (voc_layers/siftflow_layers); pad 100 fits any size"


def _fcn(
    stem: str,
    backbone: tuple[str, ...],
    zero_classifiers: tuple[str, ...],
    *,
    phase: str = "train",
    num_classes: int = 21,
    score: str = "score",
    notes: str = _FCN,
    **fields: Any,
) -> PublicNet:
    """One of FCN's reference nets: `<stem>.<phase>.prototxt` with its `<stem>.solver.prototxt`,
    a pretrained backbone and the classifiers it zero-fills and learns from scratch."""
    return PublicNet(
        f"{stem}.{phase}.prototxt",
        _FCN_REPO,
        "bvlc",
        num_classes,
        f"{stem}.solver.prototxt",
        backbone=backbone,
        zero_classifiers=zero_classifiers,
        score=score,
        notes=notes,
        **fields,
    )


REGISTRY: dict[str, PublicNet] = {
    "voc-fcn32s": _fcn("voc-fcn32s", VGG16, ("score_fr",)),
    "voc-fcn16s": _fcn("voc-fcn16s", VGG16, ("score_fr", "score_pool4")),
    "voc-fcn8s": _fcn("voc-fcn8s", VGG16, ("score_fr", "score_pool4", "score_pool3")),
    "voc-fcn-alexnet": _fcn("voc-fcn-alexnet", ALEXNET, ("score_fr",)),
    "siftflow-fcn32s": _fcn(
        "siftflow-fcn32s",
        VGG16,
        ("score_fr_sem", "score_fr_geo"),
        phase="trainval",
        num_classes=33,
        label_tops=("sem", "geo"),
        score="score_sem",
        notes=_FCN + "; two heads: sem (33 classes) and geo (3 classes), each with its own loss",
    ),
    "digits-fcn-alexnet": PublicNet(
        "digits-fcn-alexnet.train_val.prototxt",
        "NVIDIA/DIGITS",
        "bvlc",
        21,
        data_layers=("data", "label"),
        backbone=ALEXNET,
        score="score",
        notes="DIGITS' FCN-AlexNet: one LMDB Data layer for the image and one for the label, per phase; "
        "a Power layer subtracts 116; no fillers (DIGITS' net surgery writes the weights: score_fr "
        "zeros, upscore bilinear, see tests/nets/test_nets_fileweights.py); Crop to the data, pad 100 fits any size; "
        "accuracy only in stage 'val'",
    ),
    "dilation8-camvid": _deploy(
        "dilation8-camvid",
        "fyu/dilation",
        "bvlc",
        11,
        backbone=VGG16,
        size=436,
        score="ctx_final",
        notes="dilated front end (VGG16, dilation 2 and 4, no padding) + context module (dilations 1..16); "
        "a deploy net: net-level input 'data' and a Softmax, no label and no loss. Geometry: input S gives "
        "scores of (S - 372) / 8 (436 -> 8x8, 404 -> 4x4); a training net adds a label of that size (or an "
        "upsampling) and SoftmaxWithLoss on ctx_final. No layer has a filler: the VGG16 layers take ImageNet "
        "weights, but 'final' (the front end's classifier) and the context module (ctx_*) come from "
        "dilation's own training (identity-initialised context), so without the full published caffemodel "
        "the doctor rightly reports them as zero-init errors (tests use full_weights). VGG16 at 436x436 is "
        "slow on a CPU (check ~40 s)",
    ),
    "digits-binary-segmentation": PublicNet(
        "digits-binary-segmentation.train_val.prototxt",
        "NVIDIA/DIGITS",
        "fork",
        2,
        data_layers=("data", "label"),
        size=32,
        ignore_label=None,
        score="upsample",
        fork="nvcaffe",
        fork_tokens=("L1Loss",),
        notes="binary segmentation as regression: conv 3x3 (32), conv 16x16 stride 16 (1024), a learned "
        "16x16 stride-16 Deconvolution 1024 -> 1 (lr_mult 1, no weight filler: zeros, bias 128) and L1Loss "
        "against the label image; sizes must be multiples of 16. BVLC: L1Loss -> EuclideanLoss, or as a "
        "classifier Deconvolution num_output 2 + SoftmaxWithLoss",
    ),
    "deeplabv2-aspp-vgg16": PublicNet(
        "deeplabv2-aspp-vgg16.train.prototxt",
        "zbxzc35/deeplab_v2_python",
        "fork",
        21,
        "deeplabv2-aspp-vgg16.solver.prototxt",
        label_tops=("label", "data_dim"),
        backbone=VGG16[:-2],
        size=321,
        score="fc8",
        fork="deeplab",
        fork_tokens=("ImageSegData", "label_type", "Interp", "interp_param", "SegAccuracy", "seg_accuracy_param"),
        notes="DeepLab v2 ASPP over VGG16 (dilations 2, 6, 12, 18, 24): ImageSegData (tops data, label, "
        "data_dim), the label shrunk by Interp (shrink_factor 8) to the score size, SegAccuracy",
    ),
    "pspnet50-ade20k": _deploy(
        "pspnet50-ade20k",
        "hszhao/PSPNet",
        "fork",
        150,
        size=473,
        score="conv6_interp",
        fork="pspnet",
        fork_tokens=("BN", "bn_param", "Interp", "interp_param"),
        notes="deploy net (Input 473x473): ResNet-50 with the fork's BN, pyramid pooling with Interp back to "
        "the feature size, Interp zoom_factor 8 at the end",
    ),
    "deconvnet-stage1": PublicNet(
        "deconvnet-stage1.train.prototxt",
        "HyeonwooNoh/DeconvNet",
        "fork",
        21,
        "deconvnet-stage1.solver.prototxt",
        label_tops=("seg-label",),
        size=224,
        fork="deconvnet",
        fork_tokens=(
            "IMAGE_SEG_DATA",
            "BN",
            "UNPOOLING",
            "ELTWISE_ACCURACY",
            "label_type",
            "bn_param",
            "unpooling_param",
            "eltwise_accuracy_param",
        ),
        notes="V1 'layers' format with enum types; pools with a mask top that UNPOOLING reads; BN after "
        "every convolution and deconvolution",
    ),
    "enet": PublicNet(
        "enet.train_encoder_decoder.prototxt",
        "TimoSaemann/ENet",
        "fork",
        19,
        "enet.solver.prototxt",
        size=512,
        fork="enet",
        fork_tokens=(*_SEGNET_LAYERS, "weight_by_label_freqs"),
        notes="ENet encoder-decoder for Cityscapes: BN, PReLU, learned Deconvolution upsampling (msra) and "
        "max-unpooling (Upsample with the pool's mask), SpatialDropout as Python layers "
        "(spatial_dropout module of the repo)",
    ),
    "segnet": PublicNet(
        "segnet_train.prototxt",
        "alexgkendall/SegNet-Tutorial",
        "fork",
        12,
        "segnet_solver.prototxt",
        size=360,
        ignore_label=11,
        fork="segnet",
        fork_tokens=_SEGNET_TOKENS,
        notes="full SegNet (VGG16 encoder, mirrored decoder) on CamVid 360x480",
    ),
    "segnet-basic": PublicNet(
        "segnet_basic_train.prototxt",
        "alexgkendall/SegNet-Tutorial",
        "fork",
        12,
        size=360,
        ignore_label=11,
        fork="segnet",
        fork_tokens=_SEGNET_TOKENS,
        notes="SegNet-Basic (4 encoders, LRN, 64 channels) on CamVid 360x480",
    ),
    **{
        stem: _deploy(stem, repo, "fork", classes, size=side, fork=fork, fork_tokens=tokens, notes=notes)
        for stem, (repo, classes, side, fork, tokens, notes) in _FORK_DEPLOY.items()
    },
    "unet-valid": PublicNet(
        "unet-valid.train.prototxt",
        "camelliacamellia/CAMELLIA9527",
        "bvlc",
        2,
        size=204,
        score="conv10",
        label_crop=92,
        notes="U-Net (5 levels, 64..1024 channels) with valid 3x3 convolutions in plain BVLC layers: Crop "
        "centre-crops each skip feature to its 2x2 up-convolution (offsets 4, 16, 40, 88), xavier fillers, "
        "2 classes, SoftmaxWithLoss and Accuracy with ignore_label 255; one LMDB Data layer per phase (tops "
        "data, label). Geometry: input S = 188 + 16k gives (S - 184) scores a side (204 -> 20, 572 -> 388). "
        "The published net feeds the full-size label to its loss, which Caffe refuses; the U-Net way (and "
        "this corpus's only in-net label crop, none found in public BVLC nets) is a Crop of the label to "
        "the score, offset (S - (S - 184)) / 2 = 92 for every S: added by the tests (add_label_crop)",
    ),
}
BVLC_NETS = [name for name, net in REGISTRY.items() if net.kind == "bvlc"]
FORK_NETS = [name for name, net in REGISTRY.items() if net.kind == "fork"]
# name -> (net file, solver file, backbone, the zero-filled classifiers FCN learns from scratch)
NETS = {
    name: (net.file, net.solver, net.backbone, net.zero_classifiers)
    for name, net in REGISTRY.items()
    if net.repo == _FCN_REPO
}


def with_input_layer(name: str, out_dir: Path, size: int | None = None) -> Path:
    """The public BVLC net with its data layers (every phase) replaced by one Input layer:
    the image top 1x3xSxS, every label top 1x1xSxS (S = `size`, default the registry's); a
    deploy net's net-level input is resized; a net with `label_crop` gets its label cropped to
    the score inside the net (`add_label_crop`). Returns the written prototxt."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    entry = REGISTRY[name]
    side = size or entry.size
    net = text_format.Parse((PUBLIC / entry.file).read_text(), caffe_pb2.NetParameter())
    if not entry.data_layers:
        for shape in net.input_shape:
            shape.dim[2:] = [side, side]
    else:
        first = min(i for i, x in enumerate(net.layer) if x.name in entry.data_layers)
        tops = [entry.image_top, *entry.label_tops]
        swapped = caffe_pb2.LayerParameter(name=net.layer[first].name, type="Input", top=tops)
        for top in tops:
            swapped.input_param.shape.add().dim.extend([1, 3 if top == entry.image_top else 1, side, side])
        kept = [x for x in net.layer if x.name not in entry.data_layers]
        del net.layer[:]
        net.layer.extend(kept[:first] + [swapped] + kept[first:])
    add_label_crop(net, name)
    out = out_dir / f"{name}.prototxt"
    out.write_text(text_format.MessageToString(net))
    return out


def add_label_crop(net: Any, name: str) -> None:
    """For a net with `label_crop`: each label top cropped inside the net to the score (a Crop
    right after the layer that makes the score, top "<label>_crop"), every other reader of the
    label reading the crop, and each loss told not to backpropagate into it (propagate_down:
    the Crop also reads the score, so Caffe would), as a valid-convolution U-Net's training net
    does. In place, on a parsed NetParameter; nothing for other nets."""
    from caffe.proto import caffe_pb2

    entry = REGISTRY[name]
    if entry.label_crop is None:
        return
    assert entry.score, f"{name}: label_crop needs the score top"
    made = max(i for i, x in enumerate(net.layer) if entry.score in x.top)
    crops = []
    for label in entry.label_tops:
        crop = caffe_pb2.LayerParameter(name=f"{label}_crop", type="Crop", bottom=[label, entry.score])
        crop.top.append(f"{label}_crop")
        crop.crop_param.axis = 2
        crop.crop_param.offset.append(entry.label_crop)
        crops.append(crop)
        for layer in net.layer:
            layer.bottom[:] = [f"{label}_crop" if b == label else b for b in layer.bottom]
    cropped = {x.top[0] for x in crops}
    for layer in net.layer:
        if layer.type.endswith("Loss") and cropped & set(layer.bottom):
            layer.propagate_down[:] = [b not in cropped for b in layer.bottom]
    layers = list(net.layer)
    del net.layer[:]
    net.layer.extend(layers[: made + 1] + crops + layers[made + 1 :])


def solver(name: str) -> Path:
    """The net's own solver (its paths are not read by the doctor)."""
    solver_file = REGISTRY[name].solver
    assert solver_file, f"{name} comes without a solver file"
    return PUBLIC / solver_file


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


def full_weights(net_path: Path, out: Path, zero: tuple[str, ...] = (), seed: int = 0) -> Path:
    """A caffemodel for every layer with weights, as a net surgery saves one: random (He)
    convolutions and learned up-convolutions (a U-Net's), bilinear upsampling Deconvolutions
    (the surgery's targets), and all-zero weights and biases for `zero` (DIGITS' FCN surgery
    saves score_fr so)."""
    import caffe

    from nets.bilinear import bilinear_weights, group_of, surgery_targets
    from nets.prototxt import load_net

    param = load_net(net_path)
    interpolating = set(surgery_targets(param))
    net = caffe.Net(str(net_path), caffe.TEST)
    rng = np.random.default_rng(seed)
    for name, blobs in net.params.items():
        weights = blobs[0].data
        if name in zero:
            weights[...] = 0
        elif name in interpolating:
            weights[...] = bilinear_weights(weights.shape, group_of(param, name), name)
        else:
            weights[...] = rng.standard_normal(weights.shape, dtype=np.float32) * np.sqrt(2.0 / weights[0].size)
        for extra in blobs[1:]:
            extra.data[...] = 0
    net.save(str(out))
    return out
