"""Static rules about what the net reads and predicts: class counts, the ignore label, image
and label augmentation, validation, InfogainLoss input. Pure: NetParameter and Context in."""

from __future__ import annotations

from typing import Any

from common.findings import Finding
from nets.graph import (
    CLASS_LOSSES,
    Context,
    conv_param,
    dedupe,
    has_test_data,
    loss_layers,
    phase_views,
    producer,
    score_path,
)

NATIVE_DATA = {"Data", "ImageData"}


def _scored(layers: list[Any]) -> list[int]:
    """Losses and accuracies: the layers that read class scores and labels."""
    return [i for i, x in enumerate(layers) if x.type in CLASS_LOSSES or x.type == "Accuracy"]


def check_num_output(net: Any, ctx: Context) -> list[Finding]:
    """Score and upsampling layers must output one channel per class."""
    if not ctx.num_classes:
        return []
    out = []
    for _, layers in phase_views(net):
        for i in _scored(layers):
            for p in score_path(layers, i):
                nout = int(conv_param(layers[p]).num_output)
                if nout != ctx.num_classes:
                    out.append(
                        Finding(
                            "error",
                            "num-output-mismatch",
                            layers[p].name,
                            f"'{layers[p].name}' ({layers[p].type}) outputs {nout} channels but the data "
                            f"has {ctx.num_classes} classes: '{layers[i].name}' reads {nout} class "
                            "scores"
                            + (
                                " (labels beyond them are out of range: Caffe's loss reads past its "
                                "probabilities for them, a garbage loss or a segfault)."
                                if nout < ctx.num_classes
                                else f" ({nout - ctx.num_classes} classes never appear)."
                            ),
                            f"set num_output: {ctx.num_classes} on '{layers[p].name}' and on every "
                            "score / upsampling layer of the head (group too, for a Deconvolution)",
                            {"num_output": nout, "num_classes": ctx.num_classes},
                        )
                    )
    return dedupe(out)


def _ignore_of(layer: Any) -> int | None:
    if layer.type == "Accuracy":
        p = layer.accuracy_param
    else:
        p = layer.loss_param
    return int(p.ignore_label) if p.HasField("ignore_label") else None


def check_ignore_label(net: Any, ctx: Context) -> list[Finding]:
    """The losses' and accuracies' ignore_label against the data stage's stats.json."""
    if not ctx.stats_given:
        return []
    data_ignore, out = ctx.ignore_label, []
    for _, layers in phase_views(net):
        for i in _scored(layers):
            layer, mine = layers[i], _ignore_of(layers[i])
            severity = "warning" if layer.type == "Accuracy" else "error"
            field = "accuracy_param" if layer.type == "Accuracy" else "loss_param"
            if data_ignore is not None and mine != data_ignore:
                now = "has no ignore_label" if mine is None else f"ignores {mine}"
                out.append(
                    Finding(
                        severity,
                        "ignore-label-mismatch",
                        layer.name,
                        f"the data marks unlabelled pixels with {data_ignore} (stats.json) but "
                        f"'{layer.name}' {now}: those pixels count as class {data_ignore}"
                        + _consequence(layer.type, data_ignore, ctx.num_classes)
                        + ".",
                        f"set {field} {{ ignore_label: {data_ignore} }}",
                        {"data_ignore_label": data_ignore, "layer_ignore_label": mine},
                    )
                )
            elif data_ignore is None and mine is not None and ctx.num_classes and 0 <= mine < ctx.num_classes:
                out.append(
                    Finding(
                        "warning",
                        "ignore-label-mismatch",
                        layer.name,
                        f"'{layer.name}' ignores label {mine}, a real class of the data (stats.json "
                        "has no ignore label): that class is never trained or scored.",
                        f"remove ignore_label from {field}, or mark void pixels in the data stage",
                        {"data_ignore_label": None, "layer_ignore_label": mine},
                    )
                )
    return dedupe(out)


def _consequence(layer_type: str, label: int, num_classes: int | None) -> str:
    if layer_type == "Accuracy":
        return ", so the accuracy scores void pixels as if they had a class"
    if num_classes and label >= num_classes:
        return (
            ", beyond the scores' channels: Caffe's loss then reads past its probabilities "
            "(a garbage loss and gradients, or a segfault)"
        )
    return ", and the net is trained to predict them"


def _transform(layer: Any) -> tuple[bool, int]:
    tp = layer.transform_param
    return bool(tp.mirror), int(tp.crop_size)


def check_augmentation(net: Any, ctx: Context) -> list[Finding]:
    """Image and label read by two native data layers must be transformed identically, and
    random transforms cannot be: each layer draws from its own random stream."""
    out = []
    for phase, layers in phase_views(net):
        label_blobs = {
            x.bottom[1] for x in layers if (x.type in CLASS_LOSSES or x.type == "Accuracy") and len(x.bottom) > 1
        }
        native = [x for x in layers if x.type in NATIVE_DATA and not x.bottom]
        labels = [x for x in native if set(x.top) & label_blobs]
        images = [x for x in native if x not in labels]
        for lab in labels:
            if lab.transform_param.mean_value or lab.transform_param.mean_file or lab.transform_param.scale != 1:
                out.append(
                    Finding(
                        "error",
                        "label-transform",
                        lab.name,
                        f"label layer '{lab.name}' subtracts a mean or scales: the class ids change.",
                        "remove mean_value/mean_file/scale from the label layer's transform_param",
                    )
                )
            for img in images:
                (im_m, im_c), (lb_m, lb_c) = _transform(img), _transform(lab)
                random = im_m or lb_m or (phase == "TRAIN" and (im_c or lb_c))
                if (im_m, im_c) != (lb_m, lb_c):
                    why = (
                        f"the image layer '{img.name}' has mirror: {str(im_m).lower()}, crop_size: "
                        f"{im_c}, the label layer '{lab.name}' mirror: {str(lb_m).lower()}, "
                        f"crop_size: {lb_c}: image and label no longer line up."
                    )
                elif random:
                    why = (
                        f"'{img.name}' and '{lab.name}' both mirror or crop at random, but each "
                        "Data layer draws from its own random stream: the image is flipped or "
                        "cropped differently from its label."
                    )
                else:
                    continue
                out.append(
                    Finding(
                        "error",
                        "unsynced-augmentation",
                        img.name,
                        why,
                        "read both LMDBs with the paired layer (python_param { module: "
                        '"data_prep.layers" layer: "PairedDataLayer" }), which draws one mirror/crop per '
                        "pair, or remove mirror and crop_size from both layers",
                        {"image": [im_m, im_c], "label": [lb_m, lb_c], "phase": phase},
                    )
                )
    return dedupe(out)


def check_validation(net: Any, ctx: Context) -> list[Finding]:
    """A training net with nothing to validate against."""
    if not any(loss_layers(layers) for _, layers in phase_views(net)):
        return []
    solver = ctx.solver
    solver_tests = solver is not None and (len(solver.test_net) or len(solver.test_net_param))
    if ctx.has_val_net or has_test_data(net) or solver_tests:
        return []
    return [
        Finding(
            "warning",
            "no-validation",
            None,
            "no validation configured: no val prototxt, no TEST-phase data layer and no test_net in "
            "the solver. Accuracy on held-out data is never measured, so overfitting goes unseen and "
            "early stopping has nothing to read.",
            "give the run val data (a val net), or add a TEST-phase data layer / test_net with "
            "test_iter and test_interval to the solver",
        )
    ]


def check_infogain_input(net: Any, ctx: Context) -> list[Finding]:
    """This Caffe's InfogainLoss applies its own softmax: probabilities in front of it are
    squashed twice."""
    out = []
    for _, layers in phase_views(net):
        for i, layer in enumerate(layers):
            if layer.type != "InfogainLoss" or not layer.bottom:
                continue
            p = producer(layers, i, layer.bottom[0])
            if p is not None and layers[p].type == "Softmax":
                out.append(
                    Finding(
                        "warning",
                        "infogain-softmax-input",
                        layer.name,
                        f"InfogainLoss '{layer.name}' reads the Softmax '{layers[p].name}', but this "
                        "Caffe's InfogainLoss applies its own softmax along infogain_loss_param.axis: "
                        "the probabilities are squashed twice and the gradients shrink.",
                        "feed the raw class scores to InfogainLoss and drop the Softmax in front",
                    )
                )
    return dedupe(out)
