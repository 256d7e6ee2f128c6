"""Static rules about learnable blobs: zero initialisation, the upsampling Deconvolution and
BatchNorm. Pure functions: NetParameter and Context in, Findings out."""
from __future__ import annotations

from typing import Any

from common.findings import Finding
from nets.graph import (LEARNABLE, PHASES, Context, channels_of, consumers, conv_param, dedupe,
                        layer_phases, lr_mults, phase_views, stride_of)


def _unique(net: Any) -> list[Any]:
    """Layers by name (a train_val net declares some layers once per phase)."""
    seen: dict[str, Any] = {}
    for layer in net.layer:
        seen.setdefault(layer.name, layer)
    return list(seen.values())


def _is_zero_filler(filler: Any) -> bool:
    # FillerParameter defaults to type "constant", value 0
    return filler.type == "constant" and filler.value == 0


def _shares_params(net: Any, layer: Any) -> bool:
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


def check_zero_init(net: Any, ctx: Context) -> list[Finding]:
    """Convolution/InnerProduct/... weights with no filler and no weights file: Caffe's default
    filler is constant 0, so the layer outputs its bias and passes no gradient down."""
    out = []
    for layer in _unique(net):
        if layer.name in ctx.weight_layers or _shares_params(net, layer):
            continue
        if layer.type in LEARNABLE:
            if layer.type == "Deconvolution" and stride_of(layer) > 1:
                continue  # upsampling: check_deconv says more
            cp = conv_param(layer)
            if cp.HasField("weight_filler") and not _is_zero_filler(cp.weight_filler):
                continue
            what = "an explicit constant-0 weight_filler" if cp.HasField("weight_filler") else "no weight_filler"
        elif layer.type == "Scale" and layer.scale_param.HasField("filler") and \
                _is_zero_filler(layer.scale_param.filler):
            what = "a constant-0 filler"
        else:
            continue
        out.append(Finding(
            "error", "zero-init", layer.name,
            f"{layer.type} '{layer.name}' has {what} and no weights file provides it: Caffe's "
            "default filler is constant 0, so every weight starts at 0; the layer outputs only "
            "its bias and sends no gradient to the layers below it, which never learn.",
            'add weight_filler { type: "msra" } (ReLU nets; "xavier" otherwise) and '
            'bias_filler { type: "constant" value: 0 }, or pass --weights with a caffemodel '
            "that has this layer"))
    return out


def check_deconv(net: Any, ctx: Context) -> list[Finding]:
    """Upsampling Deconvolutions: bilinear initialisation and one kernel per class."""
    out = []
    for _, layers in phase_views(net):
        for i, layer in enumerate(layers):
            if layer.type != "Deconvolution" or stride_of(layer) < 2:
                continue
            cp, s = layer.convolution_param, stride_of(layer)
            frozen = lr_mults(layer, 1)[0] == 0
            filler = cp.weight_filler.type if cp.HasField("weight_filler") else None
            if filler != "bilinear" and layer.name not in ctx.weight_layers:
                start = "all zeros (Caffe's default constant-0 filler)" if filler in (None, "constant") \
                    else f"random ({filler}), not an interpolation"
                out.append(Finding(
                    "warning", "deconv-not-bilinear", layer.name,
                    f"upsampling Deconvolution '{layer.name}' (stride {s}) starts as {start}"
                    + (" and, with lr_mult 0, stays so" if frozen else "")
                    + ": the scores are not upsampled bilinearly.",
                    'add weight_filler { type: "bilinear" } to its convolution_param. The '
                    "orchestrator's bilinear surgery sets these weights when a run starts, but "
                    "Caffe's own tools and other scripts do not"))
            c_in = channels_of(layers, i, layer.bottom[0]) if layer.bottom else None
            nout = int(cp.num_output)
            if int(cp.group) != nout and (c_in is None or c_in == nout):
                out.append(Finding(
                    "error" if frozen else "warning", "deconv-group", layer.name,
                    f"Deconvolution '{layer.name}' has group {cp.group} for {nout} channels: the "
                    "bilinear kernel is written into every (output, input) channel pair, so each "
                    "upsampled class score is the sum of all classes"
                    + (" and, with lr_mult 0, stays so." if frozen else " until training untangles it."),
                    f"set group: {nout} (one kernel per class) and bias_term: false",
                    {"group": int(cp.group), "num_output": nout}))
    return dedupe(out)


def check_batchnorm(net: Any, ctx: Context) -> list[Finding]:
    """BatchNorm: frozen statistics, one layer for both phases, a Scale with bias after it."""
    out = []
    for layer in _unique(net):
        if layer.type == "BatchNorm" and any(p.lr_mult != 0 for p in layer.param):
            three = len(layer.param) == 3
            out.append(Finding(
                "warning" if three else "error", "bn-lr-mult", layer.name,
                f"BatchNorm '{layer.name}' gives its blobs (mean, variance, moving-average factor) "
                "a non-zero lr_mult: they are statistics, not weights. "
                + ("This Caffe quietly resets three param blocks to lr_mult 0 when it loads the "
                   "net; older Caffe and forks apply weight decay to them and shrink the "
                   "statistics." if three else
                   "This Caffe aborts on it ('Cannot configure batch normalization statistics "
                   "as layer parameters')."),
                "use param { lr_mult: 0 } three times, or no param blocks (Caffe then sets 0)"))
    out += _bn_duplicates(net) + _bn_global_stats(net)
    for _, layers in phase_views(net):
        for i, layer in enumerate(layers):
            if layer.type == "BatchNorm" and layer.top and not _affine_after(layers, i):
                out.append(Finding(
                    "warning", "bn-without-scale", layer.name,
                    f"BatchNorm '{layer.name}' is not followed by a Scale with a bias: Caffe's "
                    "BatchNorm only normalises (zero mean, unit variance) and has no learned "
                    "scale and shift, so the layer after it cannot recover them.",
                    "add a Scale layer with scale_param { bias_term: true } right after it "
                    "(in place)"))
    return dedupe(out)


def _affine_after(layers: list[Any], idx: int) -> bool:
    """A Scale with bias (or a Scale then a Bias) reads the BatchNorm's output next."""
    nxt = consumers(layers, idx, layers[idx].top[0])
    if not nxt or layers[nxt[0]].type != "Scale":
        return False
    scale = layers[nxt[0]]
    if scale.scale_param.bias_term:
        return True
    after = consumers(layers, nxt[0], scale.top[0]) if scale.top else []
    return bool(after) and layers[after[0]].type == "Bias"


def _bn_global_stats(net: Any) -> list[Finding]:
    """use_global_stats: true on a BatchNorm that also runs in TRAIN."""
    return [Finding(
        "warning", "bn-global-stats", layer.name,
        f"BatchNorm '{layer.name}' sets use_global_stats: true and runs in TRAIN: training then "
        "normalises with stored statistics that nothing accumulates (they stay at their "
        "initial values unless a weights file brings them).",
        "remove use_global_stats (it follows the phase: false in TRAIN, true in TEST)")
        for layer in _unique(net)
        if layer.type == "BatchNorm" and "TRAIN" in layer_phases(layer)
        and layer.batch_norm_param.HasField("use_global_stats")
        and layer.batch_norm_param.use_global_stats]


def _bn_duplicates(net: Any) -> list[Finding]:
    """BatchNorm layers declared once per phase (include rules) on the same blobs."""
    by_site: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[str, list[Any]]] = {}
    for layer in net.layer:
        phases = layer_phases(layer)
        if layer.type == "BatchNorm" and phases != set(PHASES):
            site = (tuple(layer.bottom), tuple(layer.top))
            for ph in phases:
                by_site.setdefault(site, {}).setdefault(ph, []).append(layer)
    out = []
    for per_phase in by_site.values():
        train, test = per_phase.get("TRAIN", []), per_phase.get("TEST", [])
        if not train or not test or {x.name for x in train} == {x.name for x in test}:
            continue
        names = f"'{train[0].name}' (TRAIN) and '{test[0].name}' (TEST)"
        if _share_blobs(train[0], test[0]):
            out.append(Finding(
                "info", "bn-phase-duplicate", test[0].name,
                f"BatchNorm copied per phase: {names} share their blobs by param name, which "
                "works but is not needed.",
                "keep one BatchNorm layer without include rules or use_global_stats"))
        else:
            out.append(Finding(
                "error", "bn-phase-duplicate", test[0].name,
                f"BatchNorm copied per phase: {names} are separate layers with separate blobs. "
                "The TEST copy never receives the mean and variance the TRAIN copy accumulates, "
                "so validation normalises with its initial values (zeros).",
                "keep one BatchNorm layer without include rules and without use_global_stats: "
                "it uses batch statistics in TRAIN and the accumulated ones in TEST"))
    return out


def _share_blobs(a: Any, b: Any) -> bool:
    names_a, names_b = [p.name for p in a.param], [p.name for p in b.param]
    return len(names_a) >= 3 and names_a == names_b and all(names_a)
