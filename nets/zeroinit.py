"""zero-init as an expert means it: which zero-initialised layers can recover.

A layer whose weights start at 0 (no weight_filler, Caffe's default constant 0, and no weights
file) outputs only its bias and passes no gradient down. It still learns when it reads a live
signal and the loss's gradient reaches it: FCN zero-fills its score layers on purpose. It never
learns when its input is forced to zero by zero layers below it, or when zero layers (or a
ReLU at exactly 0) above it hold back every gradient. Decided by two passes over the TRAIN
graph (forward: which blobs are forced to zero; backward: which blobs get a gradient at the
first step), repeated while layers that recover unblock others. Pure: NetParameter in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.findings import Finding
from nets.graph import (
    LEARNABLE,
    Context,
    conv_param,
    in_phase,
    lr_mults,
    producer,
    shares_params,
    signal_bottoms,
    surgery_fills,
    unique_layers,
)

# known pretrained backbones (ImageNet models FCN starts from), by their layer names
BACKBONES = (
    (
        "VGG16",
        (
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
        ),
    ),
    ("AlexNet", ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")),
)
NO_BACKWARD = {"Accuracy", "Silence", "ArgMax"}
ELTWISE_PROD = 0
Node = tuple[int, str]  # (index of the producing layer, blob name): one version of a blob


FROM_FILE = "all-zero weights in the weights file"


def _is_zero_filler(filler: Any) -> bool:
    # FillerParameter defaults to type "constant", value 0
    return filler.type == "constant" and filler.value == 0


def zero_layers(net: Any, ctx: Context) -> dict[str, str]:
    """Layer name -> why its weights start at zero, for every layer whose weights do: given as
    all zeros by the weights file (judged like a zero filler), or not given by it, not shared
    and not written by the run's bilinear surgery."""
    train = in_phase(net, "TRAIN")
    filled = {layer.name for i, layer in enumerate(train) if ctx.surgery and surgery_fills(train, i)}
    out: dict[str, str] = {}
    for layer in unique_layers(net):
        if layer.name in ctx.zero_weight_layers and layer.type in LEARNABLE:
            out[layer.name] = FROM_FILE
            continue
        if layer.name in ctx.weight_layers or layer.name in filled or shares_params(net, layer):
            continue
        if layer.type in LEARNABLE:
            cp = conv_param(layer)
            if cp.HasField("weight_filler") and not _is_zero_filler(cp.weight_filler):
                continue
            out[layer.name] = (
                "an explicit constant-0 weight_filler" if cp.HasField("weight_filler") else "no weight_filler"
            )
        elif (
            layer.type == "Scale" and layer.scale_param.HasField("filler") and _is_zero_filler(layer.scale_param.filler)
        ):
            out[layer.name] = "a constant-0 filler"
    return out


def _sources(layers: list[Any], i: int) -> list[Node]:
    """The blob versions layer `i` reads as signal (not a Crop's reference, not labels)."""
    out = []
    for b in signal_bottoms(layers[i].type, list(layers[i].bottom)):
        p = producer(layers, i, b)
        if p is not None:
            out.append((p, b))
    return out


def _input_zero(layers: list[Any], i: int, zeros: dict[Node, bool]) -> bool:
    """Every signal layer `i` reads is forced to zero."""
    srcs = _sources(layers, i)
    return bool(srcs) and all(zeros.get(s, False) for s in srcs)


def forward_zero(layers: list[Any], zero: set[str]) -> dict[Node, bool]:
    """Which blob versions are forced to zero when the layers in `zero` output zero."""
    out: dict[Node, bool] = {}
    for i, layer in enumerate(layers):
        inputs = [out.get(s, False) for s in _sources(layers, i)]
        if layer.name in zero:
            z = True
        elif layer.type == "Eltwise" and layer.eltwise_param.operation == ELTWISE_PROD:
            z = any(inputs)
        else:
            z = bool(inputs) and all(inputs)
        for t in layer.top:
            out[(i, t)] = z
    return out


def _passes(layer: Any, k: int, zero_in: list[bool]) -> bool:
    """Does `layer` send a gradient to its k-th bottom (inputs' zero flags given)?"""
    if layer.type in NO_BACKWARD or k >= len(zero_in):
        return False
    if layer.type == "ReLU" and layer.relu_param.negative_slope == 0 and zero_in[k]:
        return False  # Caffe's ReLU passes nothing at exactly 0
    if layer.type == "Eltwise" and layer.eltwise_param.operation == ELTWISE_PROD:
        return not any(z for j, z in enumerate(zero_in) if j != k)
    return True


def backward_reach(layers: list[Any], zero: set[str], zeros: dict[Node, bool]) -> dict[Node, bool]:
    """Which blob versions receive a gradient from a loss at the first step."""
    grad: dict[Node, bool] = {}
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        live = layer.type.endswith("Loss") or any(grad.get((i, t), False) for t in layer.top)
        if not live or layer.name in zero:
            continue  # zero weights send nothing down
        srcs = _sources(layers, i)
        zero_in = [zeros.get(s, False) for s in srcs]
        for k, src in enumerate(srcs):
            if _passes(layer, k, zero_in):
                grad[src] = True
    return grad


@dataclass(frozen=True)
class Flow:
    """The verdict on every zero layer, and what the first step looks like because of them (the
    dynamic check reports only the zeros this does not explain)."""

    zero: dict[str, str]  # zero layer -> why it starts at zero
    verdict: dict[str, str]  # zero layer -> recovers, frozen, input-zero, blocked or no-loss
    by: dict[str, list[str]]  # zero layer -> the layers that force its input / hold its gradient
    zero_output: frozenset[str]  # layers whose output these zero layers force to zero at step 1
    no_gradient: frozenset[str]  # layers whose weights these zero layers keep from a gradient at step 1


def analyse(net: Any, ctx: Context) -> Flow:
    """Judge each zero layer of the TRAIN net (see the module's docstring)."""
    layers = in_phase(net, "TRAIN")
    zero = zero_layers(net, ctx)
    index = {layer.name: i for i, layer in enumerate(layers)}
    has_loss = any(x.type.endswith("Loss") for x in layers)
    frozen = {x.name for x in layers if x.name in zero and lr_mults(x, 1)[0] == 0}
    recovering: set[str] = set()
    while has_loss:
        active = set(zero) - recovering
        zeros = forward_zero(layers, active)
        grad = backward_reach(layers, active, zeros)
        new = {
            z
            for z in active
            if z in index
            and _sources(layers, index[z])
            and z not in frozen
            and not _input_zero(layers, index[z], zeros)
            and any(grad.get((index[z], t), False) for t in layers[index[z]].top)
        }
        if not new:
            break
        recovering |= new
    stuck = set(zero) - recovering
    zeros_all, zeros_stuck = forward_zero(layers, set(zero)), forward_zero(layers, stuck)
    grad_all = backward_reach(layers, set(zero), zeros_all)
    verdict: dict[str, str] = {}
    by: dict[str, list[str]] = {}
    for name in zero:
        i = index.get(name)
        if name in recovering:
            verdict[name] = "recovers"
        elif name in frozen:
            verdict[name] = "frozen"
        elif not has_loss or i is None:
            verdict[name] = "no-loss"
        elif _input_zero(layers, i, zeros_stuck):
            verdict[name], by[name] = "input-zero", _zero_sources(layers, i, zeros_stuck, stuck)
        else:
            verdict[name], by[name] = "blocked", _blockers(layers, i, zeros_stuck, stuck)
    zero_output = {x.name for i, x in enumerate(layers) if any(zeros_all.get((i, t)) for t in x.top)}
    # a weight's gradient is (gradient at the top) x (input): zero when either is
    no_gradient = {
        x.name
        for i, x in enumerate(layers)
        if not any(grad_all.get((i, t)) for t in x.top) or _input_zero(layers, i, zeros_all)
    }
    return Flow(zero, verdict, by, frozenset(zero_output), frozenset(no_gradient))


def _zero_sources(layers: list[Any], i: int, zeros: dict[Node, bool], zero: set[str]) -> list[str]:
    """The zero layers below layer `i` that force its input to zero."""
    found: list[str] = []
    frontier = [s for s in _sources(layers, i) if zeros.get(s)]
    seen: set[Node] = set()
    while frontier:
        p, blob = frontier.pop(0)
        if (p, blob) in seen:
            continue
        seen.add((p, blob))
        if layers[p].name in zero:
            found += [layers[p].name] if layers[p].name not in found else []
        else:
            frontier += [s for s in _sources(layers, p) if zeros.get(s)]
    return found


def _blockers(layers: list[Any], i: int, zeros: dict[Node, bool], zero: set[str]) -> list[str]:
    """What holds back the gradient above layer `i`: zero layers, and ReLUs at exactly 0."""
    found: list[str] = []
    frontier: list[Node] = [(i, t) for t in layers[i].top]
    seen: set[Node] = set()
    while frontier:
        node = frontier.pop(0)
        if node in seen:
            continue
        seen.add(node)
        for j in range(node[0] + 1, len(layers)):
            layer = layers[j]
            if node[1] in layer.bottom and producer(layers, j, node[1]) == node[0]:
                relu_at_zero = layer.type == "ReLU" and zeros.get(node) and layer.relu_param.negative_slope == 0
                if (layer.name in zero or relu_at_zero) and layer.name not in found:
                    found.append(layer.name)
                if layer.name not in zero:  # past a ReLU, look for the zero layers too
                    frontier += [(j, t) for t in layer.top]
    return found


def _backbone(net: Any, stuck: list[str]) -> tuple[str, list[str]] | None:
    """(name, its stuck layers) when the net is built on a known pretrained backbone."""
    learnable = {x.name for x in unique_layers(net) if x.type in LEARNABLE}
    for name, names in BACKBONES:
        if set(names) <= learnable and set(names) & set(stuck):
            return name, [n for n in names if n in stuck]
    return None


def _listed(names: list[str]) -> str:
    quoted = [f"'{n}'" for n in names]
    return ", ".join(quoted) if len(quoted) <= 4 else f"{quoted[0]}, {quoted[1]}, ... {quoted[-1]}"


FILE_FIX = (
    "the weights file gives it zeros: save it with other weights, or rename the layer in the net so "
    'the file does not give it and a weight_filler { type: "msra" } fills it'
)
SCRATCH_FIX = (
    'add weight_filler { type: "msra" } (ReLU nets; "xavier" otherwise) and '
    'bias_filler { type: "constant" value: 0 }, or pass --weights with a caffemodel '
    "that has this layer"
)


def _stuck_finding(layer: Any, what: str, verdict: str, by: list[str], backbone: list[str]) -> Finding:
    head = (
        f"{layer.type} '{layer.name}' gets {what}: every weight starts at 0"
        if what == FROM_FILE
        else f"{layer.type} '{layer.name}' has {what} and no weights file provides it: every weight starts at 0"
    )
    if verdict == "input-zero" and by and set(by) <= set(backbone):
        return Finding(
            "error",
            "zero-init",
            layer.name,
            f"{head}, and its input is forced to zero by the pretrained backbone without weights "
            f"({_listed(by)}): it cannot learn until the backbone's weights are given.",
            "pass the backbone's pretrained weights (--weights, or `weights:` in the experiment); "
            "then it learns from zero, as FCN intends",
            {"reason": verdict, "by": by},
        )
    if verdict == "input-zero":
        text = (
            f"{head}, and its input is forced to zero by the zero-initialised {_listed(by)} below it: "
            "it reads only zeros, so its weights get no gradient and it never learns (nor do they)."
        )
    elif verdict == "frozen":
        text = f"{head}, and lr_mult 0 keeps it there: it outputs only its bias and passes no gradient down, for good."
    elif verdict == "blocked" and not by:
        text = f"{head}, and no loss reads what it outputs: it gets no gradient and never learns."
    elif verdict == "blocked":
        text = (
            f"{head}. Its input is live, but {_listed(by)} above it hold back the loss's gradient "
            "(zero weights send no gradient down; a ReLU sends none at exactly 0), so it never learns, "
            "and they never see anything but zeros from it."
        )
    else:
        text = (
            f"{head}: Caffe's default filler is constant 0, so the layer outputs only its bias "
            "and sends no gradient to the layers below it, which never learn."
        )
    fix = FILE_FIX if what == FROM_FILE else SCRATCH_FIX
    return Finding("error", "zero-init", layer.name, text, fix, {"reason": verdict, "by": by})


def _backbone_finding(backbone: str, names: list[str]) -> Finding:
    return Finding(
        "error",
        "zero-init",
        names[0],
        f"{len(names)} layers of the {backbone} backbone ({_listed(names)}) have no weight_filler and no "
        f"weights: this net is built to start from pretrained {backbone} (ImageNet) weights, and without "
        f"them every weight starts at 0, so '{names[0]}' gets no gradient and the layers above it see "
        "only zeros. None of them can learn.",
        "pass the pretrained caffemodel: `orchestrate check --prototxt NET --weights "
        f"{backbone}.caffemodel`, and `weights: PATH` in the experiment for the run (VGG16's fc6/fc7 "
        "InnerProduct weights are reshaped into FCN's convolutions); to train from scratch instead, "
        'give each layer weight_filler { type: "msra" }',
        {"reason": "pretrained-backbone", "backbone": backbone, "layers": names},
    )


def check_zero_init(net: Any, ctx: Context) -> list[Finding]:
    """Zero-initialised weights: an error where the layer cannot recover, one error for a
    pretrained backbone given no weights, info for a classifier that learns from live features."""
    flow = analyse(net, ctx)
    stuck = [n for n in flow.zero if flow.verdict[n] != "recovers"]
    # a backbone without weights is one finding; zeros a weights file gives are each their own
    backbone = _backbone(net, [n for n in stuck if flow.zero[n] != FROM_FILE])
    members = backbone[1] if backbone else []
    out = [_backbone_finding(backbone[0], members)] if backbone else []
    for layer in unique_layers(net):
        name = layer.name
        if name not in flow.zero or name in members:
            continue
        if flow.verdict[name] == "recovers":
            out.append(
                Finding(
                    "info",
                    "zero-init",
                    name,
                    f"{layer.type} '{name}' starts at zero ({flow.zero[name]}), but it reads live features "
                    "and the loss's gradient reaches it at the first step, so it learns from there, as "
                    "FCN's zero-filled score layers do. Until then its zero output holds back the gradient "
                    "to the layers below it (one step).",
                    "none needed",
                    {"reason": "recovers"},
                )
            )
        else:
            out.append(_stuck_finding(layer, flow.zero[name], flow.verdict[name], flow.by.get(name, []), members))
    return out
