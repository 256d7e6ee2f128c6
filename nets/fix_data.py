"""Repairs of what the net reads and predicts, from the data stage's numbers: the ignore label,
the class count, class weights, and image/label transforms. Same shape as `nets.fix_rules`:
`(net, finding, fix context) -> [Change]`, edits in place, empty when left as is."""

from __future__ import annotations

import json
import math
from typing import Any

from common.findings import Finding
from nets.fix_rules import PAIRED, Change, FixContext, edit_layers, one_line
from nets.graph import CLASS_LOSSES, layer_phases
from nets.lossnorm import normalization_of


def repair_ignore_label(net: Any, f: Finding, fx: FixContext) -> list[Change]:
    """The loss's (or accuracy's) ignore_label set to the data's, or removed when the data has
    none and the layer ignored a real class."""
    want = f.data.get("data_ignore_label")
    why = (
        f"the data marks unlabelled pixels with {want} (stats.json)"
        if want is not None
        else "the data has no ignore label: the layer ignored a real class"
    )

    def edit(x: Any) -> None:
        p = x.accuracy_param if x.type == "Accuracy" else x.loss_param
        if want is None:
            p.ClearField("ignore_label")
        else:
            p.ignore_label = int(want)

    return edit_layers(net, f.layer, f.code, why, edit)


def repair_num_output(net: Any, f: Finding, fx: FixContext) -> list[Change]:
    """num_output = the data's classes (and group, for a per-class Deconvolution)."""
    n, old = f.data.get("num_classes"), f.data.get("num_output")
    if not n:
        return []

    def edit(x: Any) -> None:
        cp = x.inner_product_param if x.type == "InnerProduct" else x.convolution_param
        if x.type == "Deconvolution" and old and int(cp.group) == int(old) > 1:
            cp.group = int(n)
        cp.num_output = int(n)

    return edit_layers(net, f.layer, f.code, f"the data has {n} classes (stats.json): one score channel each", edit)


def normalization_enum(name: str) -> int:
    from caffe.proto import caffe_pb2

    return int(caffe_pb2.LossParameter.NormalizationMode.Value(name))


def class_weights(stats: dict[str, Any], weighting: str) -> list[float]:
    """Median-frequency weights from stats.json, or their square roots."""
    mf = [float(w) for w in (stats.get("class_weights") or {}).get("median_frequency") or []]
    return [math.sqrt(w) for w in mf] if weighting == "sqrt_median_frequency" else mf


def repair_class_imbalance(net: Any, f: Finding, fx: FixContext) -> list[Change]:
    """SoftmaxWithLoss -> InfogainLoss whose H holds the data stage's class weights (the H file
    is written into the output directory by the caller, from `fx.files`)."""
    weights = class_weights(fx.stats, fx.weighting)
    if not weights:
        fx.declined[(f.code, f.layer)] = "stats.json has no class_weights.median_frequency"
        return []
    name = f"infogain_H_{fx.weighting}.binaryproto"
    fx.files[name] = weights
    source = f"{fx.out_dir.rstrip('/')}/{name}"
    kind = "the square root of the median-frequency weights" if fx.weighting.startswith("sqrt") else "median frequency"
    why = f"weigh each class by {kind} (data stage's stats.json) so the rare classes count"

    def edit(x: Any) -> None:
        x.type = "InfogainLoss"
        x.ClearField("softmax_param")
        if x.loss_param.HasField("normalize"):  # InfogainLoss aborts on the deprecated field
            x.loss_param.normalization = normalization_enum(normalization_of(x))
            x.loss_param.ClearField("normalize")
        x.infogain_loss_param.source = source

    return edit_layers(net, f.layer, f.code, why, edit)


def repair_label_transform(net: Any, f: Finding, fx: FixContext) -> list[Change]:
    def edit(x: Any) -> None:
        for name in ("mean_value", "mean_file", "scale"):
            x.transform_param.ClearField(name)
        if not len(x.transform_param.ListFields()):
            x.ClearField("transform_param")

    return edit_layers(net, f.layer, f.code, "labels are class ids: no mean, no scale", edit)


def _label_blobs(net: Any) -> set[str]:
    return {x.bottom[1] for x in net.layer if (x.type in CLASS_LOSSES or x.type == "Accuracy") and len(x.bottom) > 1}


def _paired_layer(img: Any, lab: Any) -> Any | None:
    """The paired layer that reads what the two Data layers read, or None when it cannot do
    what they do (not LMDB, a mean file, a scale)."""
    from caffe.proto import caffe_pb2

    lmdb = caffe_pb2.DataParameter.LMDB
    tp = img.transform_param
    if (
        img.type != "Data"
        or lab.type != "Data"
        or img.data_param.backend != lmdb
        or lab.data_param.backend != lmdb
        or tp.mean_file
        or tp.scale != 1
    ):
        return None
    mean = list(tp.mean_value) * 3 if len(tp.mean_value) == 1 else list(tp.mean_value)
    crop = tp.crop_size or lab.transform_param.crop_size
    params: dict[str, Any] = {
        "images": img.data_param.source,
        "labels": lab.data_param.source,
        "batch_size": int(img.data_param.batch_size or 1),
        "mean_bgr": [float(v) for v in mean] if len(mean) == 3 else [0.0, 0.0, 0.0],
        "mirror": bool(tp.mirror or lab.transform_param.mirror),
        "shuffle": False,
    }
    if crop:
        params["crop"] = [int(crop), int(crop)]
    out = caffe_pb2.LayerParameter(name=img.name, type="Python", top=[img.top[0], lab.top[0]])
    out.include.extend(img.include)
    out.exclude.extend(img.exclude)
    out.python_param.module, out.python_param.layer = PAIRED
    out.python_param.param_str = json.dumps(params)
    return out


def repair_unsynced_augmentation(net: Any, f: Finding, fx: FixContext) -> list[Change]:
    """Image and label Data layers -> one paired layer (one mirror/crop draw per pair), per phase."""
    labels = _label_blobs(net)
    layers, changes = list(net.layer), []
    why = "the paired layer draws one mirror/crop per image-label pair, so they stay aligned"
    for img in [x for x in layers if x.name == f.layer and x.type == "Data"]:
        lab = next(
            (
                x
                for x in layers
                if x.type == "Data" and set(x.top) & labels and layer_phases(x) == layer_phases(img) and x is not img
            ),
            None,
        )
        paired = _paired_layer(img, lab) if lab is not None else None
        if lab is None or paired is None:
            continue
        before = f"{one_line(img)} + {one_line(lab)}"
        layers = [paired if x is img else x for x in layers if x is not lab]
        changes.append(Change(f.code, f.layer, before, one_line(paired), why))
    if not changes:
        fx.declined[(f.code, f.layer)] = "the paired layer reads LMDBs without a mean file or scale: not this pair"
        return []
    net.ClearField("layer")
    net.layer.extend(layers)
    return changes
