"""Pure helpers over a parsed NetParameter: phases, who produces and who reads a blob (in
place layers included), and walks along the score path. No Caffe, no files."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from common.findings import Finding
from nets.bilinear import fits, is_learned_upsampling, is_surgery_target

PHASES = ("TRAIN", "TEST")
# layers whose output keeps the spatial layout and channels of their (first) input
PASS_THROUGH = {
    "ReLU",
    "PReLU",
    "ELU",
    "Sigmoid",
    "TanH",
    "AbsVal",
    "BNLL",
    "Power",
    "Exp",
    "Log",
    "Threshold",
    "Dropout",
    "BatchNorm",
    "Scale",
    "Bias",
    "Split",
    "MVN",
    "LRN",
    "Crop",
    "Eltwise",
    "Softmax",
}
CLASS_LOSSES = {"SoftmaxWithLoss", "InfogainLoss", "MultinomialLogisticLoss"}
DATA_TYPES = {
    "Data",
    "ImageData",
    "HDF5Data",
    "Input",
    "DummyData",
    "MemoryData",
    "WindowData",
    "DenseImageData",
    "Python",
}
LEARNABLE = {"Convolution", "Deconvolution", "InnerProduct", "Embed"}
# layers whose later bottoms only give a shape (Crop's reference) or are targets, not signal
FIRST_BOTTOM_ONLY = {"Crop", "Accuracy"}


@dataclass(frozen=True)
class Context:
    """What the rules may know besides the net: numbers from the data stage and the meta,
    the solver, which layers a weights file provides, and the input size."""

    num_classes: int | None = None
    ignore_label: int | None = None  # the data stage's, from stats.json
    stats_given: bool = False
    weight_layers: frozenset[str] = frozenset()
    zero_weight_layers: frozenset[str] = frozenset()  # of weight_layers: all-zero weights in the file
    solver: Any = None  # SolverParameter or None
    has_val_net: bool = False
    pixels: int | None = None  # H*W of the scores the loss reads
    batch: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    surgery: bool = True  # the run's bilinear surgery fills upsampling layers
    class_weights: tuple[float, ...] = ()  # stats.json's median-frequency weights (class-imbalance)
    class_names: tuple[str, ...] = ()  # stats.json's (or the meta's) names, for the findings' words


def layer_phases(layer: Any) -> set[str]:
    """The phases a layer exists in, from its include/exclude phase rules."""
    from_rules = {PHASES[r.phase] for r in layer.include if r.HasField("phase")}
    phases = from_rules if layer.include and from_rules else set(PHASES)
    return phases - {PHASES[r.phase] for r in layer.exclude if r.HasField("phase")}


def in_phase(net: Any, phase: str) -> list[Any]:
    """The layers of one phase's net, in order."""
    return [layer for layer in net.layer if phase in layer_phases(layer)]


def phase_views(net: Any) -> Iterator[tuple[str, list[Any]]]:
    """(phase, layers) for each phase whose net differs; one view for a single-phase file."""
    seen: list[list[str]] = []
    for phase in PHASES:
        layers = in_phase(net, phase)
        names = [layer.name for layer in layers]
        if names not in seen:
            seen.append(names)
            yield phase, layers


def unique_layers(net: Any) -> list[Any]:
    """Layers by name, first declaration (a train_val net declares some layers once per phase)."""
    seen: dict[str, Any] = {}
    for layer in net.layer:
        seen.setdefault(layer.name, layer)
    return list(seen.values())


def shares_params(net: Any, layer: Any) -> bool:
    """True when the layer's weights are owned by an earlier layer (same param name)."""
    names = {p.name for p in layer.param[:1] if p.name}
    if not names:
        return False
    for other in net.layer:
        if other is layer:
            return False
        if {p.name for p in other.param[:1]} & names:
            return True
    return False


def signal_bottoms(layer_type: str, bottoms: list[str]) -> list[str]:
    """The bottoms whose values flow into the layer's output: not a Crop's reference (it
    gives only the size), not a loss's or accuracy's labels."""
    is_loss = layer_type in FIRST_BOTTOM_ONLY or layer_type.endswith("Loss")
    return list(bottoms[:1]) if is_loss else list(bottoms)


def producer(layers: list[Any], idx: int, blob: str) -> int | None:
    """Index of the last layer before `idx` that writes `blob`."""
    for i in range(idx - 1, -1, -1):
        if blob in layers[i].top:
            return i
    return None


def consumers(layers: list[Any], idx: int, blob: str) -> list[int]:
    """Layers after `idx` that read `blob`, up to (and with) the next one that rewrites it."""
    out = []
    for i in range(idx + 1, len(layers)):
        if blob in layers[i].bottom:
            out.append(i)
            if blob in layers[i].top:
                break
        elif blob in layers[i].top:
            break
    return out


def lr_mults(layer: Any, nblobs: int) -> list[float]:
    """The lr_mult of each of a layer's blobs (1 where no param spec says otherwise)."""
    return [layer.param[j].lr_mult if j < len(layer.param) else 1.0 for j in range(nblobs)]


def conv_param(layer: Any) -> Any:
    """The parameter message that holds num_output and the weight filler."""
    return (
        layer.inner_product_param
        if layer.type == "InnerProduct"
        else (layer.embed_param if layer.type == "Embed" else layer.convolution_param)
    )


def stride_of(layer: Any) -> int:
    """The largest spatial stride of a convolution-like layer."""
    cp = layer.convolution_param
    strides = list(cp.stride) + [cp.stride_h, cp.stride_w]
    return max([int(s) for s in strides if s] or [1])


def channels_of(layers: list[Any], idx: int, blob: str) -> int | None:
    """Channels of `blob` as read by layer `idx`, from the layer that made them (None if
    unknown: data layers, concat, anything not followed)."""
    p = producer(layers, idx, blob)
    while p is not None:
        layer = layers[p]
        if layer.type in LEARNABLE:
            return int(conv_param(layer).num_output)
        if layer.type not in PASS_THROUGH or not layer.bottom:
            return None
        p = producer(layers, p, layer.bottom[0])
    return None


def surgery_fills(layers: list[Any], idx: int) -> bool:
    """The run's bilinear surgery writes this layer's weights: a surgery target whose input
    channels (when known) fit one kernel per channel."""
    layer = layers[idx]
    c_in = channels_of(layers, idx, layer.bottom[0]) if layer.bottom else None
    if not is_surgery_target(layer, c_in):
        return False
    cp = layer.convolution_param
    return c_in is None or fits(c_in, int(cp.num_output), int(cp.group or 1))


def score_path(layers: list[Any], idx: int) -> list[int]:
    """The layers that make the class scores read by layer `idx` (its first bottom): walk back
    through pass-through layers, Crop (cropped input), Eltwise (all inputs) and interpolating
    Deconvolutions, stopping at a Convolution, an InnerProduct or a learned upsampling
    Deconvolution (which makes the scores itself). Returns their indices, nearest first."""
    found: list[int] = []
    frontier = [(idx, layers[idx].bottom[0])] if layers[idx].bottom else []
    while frontier:
        at, blob = frontier.pop(0)
        p = producer(layers, at, blob)
        if p is None or p in found:
            continue
        layer = layers[p]
        if layer.type in ("Convolution", "InnerProduct", "Deconvolution"):
            found.append(p)
            c_in = channels_of(layers, p, layer.bottom[0]) if layer.bottom else None
            if layer.type != "Deconvolution" or is_learned_upsampling(layer, c_in):
                continue
        elif layer.type not in PASS_THROUGH:
            continue
        bottoms = list(layer.bottom) if layer.type == "Eltwise" else list(layer.bottom[:1])
        frontier.extend((p, b) for b in bottoms)
    return found


def loss_layers(layers: list[Any]) -> list[int]:
    """Indices of the per-pixel class losses (SoftmaxWithLoss, InfogainLoss, ...)."""
    return [i for i, layer in enumerate(layers) if layer.type in CLASS_LOSSES]


def has_test_data(net: Any) -> bool:
    """A TEST-phase data layer declared with an include rule (a train_val net)."""
    return any(layer.type in DATA_TYPES and not layer.bottom and layer_phases(layer) == {"TEST"} for layer in net.layer)


def dedupe(findings: list[Finding]) -> list[Finding]:
    """One finding per (code, layer): a train_val net shows most layers in both phases."""
    seen, out = set(), []
    for f in findings:
        if (f.code, f.layer) not in seen:
            seen.add((f.code, f.layer))
            out.append(f)
    return out
