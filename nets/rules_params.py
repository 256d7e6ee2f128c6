"""Static rules about learnable blobs: the upsampling Deconvolution and BatchNorm (zero
initialisation lives in `nets.zeroinit`). Pure functions: NetParameter and Context in, Findings out."""

from __future__ import annotations

from typing import Any

from common.findings import Finding
from nets.bilinear import fits, is_surgery_target
from nets.graph import (
    PHASES,
    Context,
    channels_of,
    consumers,
    dedupe,
    layer_phases,
    lr_mults,
    phase_views,
    stride_of,
    unique_layers,
)
from nets.zeroinit import check_zero_init

__all__ = ["check_zero_init", "check_deconv", "check_batchnorm"]


def check_deconv(net: Any, ctx: Context) -> list[Finding]:
    """Upsampling Deconvolutions, judged by what the run does: its bilinear surgery (unless
    `ctx.surgery` is off) writes one kernel per class into each one that is not a learned
    upsampling and whose weights no weights file gives. Learned upsamplings (lr_mult > 0 with a
    learned filler, or channels no bilinear kernel fits) are left alone, as the surgery does."""
    out = []
    for _, layers in phase_views(net):
        for i, layer in enumerate(layers):
            c_in = channels_of(layers, i, layer.bottom[0]) if layer.type == "Deconvolution" and layer.bottom else None
            # a learned decoder (its own filler, or channels no bilinear kernel fits) gets no advice
            if not is_surgery_target(layer, c_in) or layer.name in ctx.weight_layers:
                continue
            cp = layer.convolution_param
            finding = (_with_surgery if ctx.surgery else _without_surgery)(
                layer, c_in, int(cp.num_output), int(cp.group or 1)
            )
            out += [finding] if finding else []
    return dedupe(out)


def _start(layer: Any) -> tuple[str | None, str, bool]:
    """(filler type, what the layer starts as, frozen)."""
    cp = layer.convolution_param
    filler = cp.weight_filler.type if cp.HasField("weight_filler") else None
    start = "all zeros (Caffe's default constant-0 filler)" if filler in (None, "constant") else f"a {filler} fill"
    return filler, start, lr_mults(layer, 1)[0] == 0


def _group_finding(layer: Any, frozen: bool, why: str, fix: str, data: dict[str, Any]) -> Finding:
    return Finding(
        "error" if frozen else "warning",
        "deconv-group",
        layer.name,
        why + (" and, with lr_mult 0, stays so." if frozen else " until training untangles it."),
        fix,
        data,
    )


def _with_surgery(layer: Any, c_in: int | None, nout: int, group: int) -> Finding | None:
    filler, start, frozen = _start(layer)
    if c_in is not None and not fits(c_in, nout, group):
        return _group_finding(
            layer,
            frozen,
            f"Deconvolution '{layer.name}' reads {c_in} channels with group {group} and {nout} outputs: "
            "a bilinear kernel would mix channels (each output the sum of several inputs), so the "
            f"run's surgery cannot fill it and it starts as {start}",
            f"for class scores set num_output: {c_in} and group: {c_in} (one kernel per class, "
            'bias_term: false); for a learned upsampling give it lr_mult > 0 and weight_filler { type: "msra" }',
            {"channels": c_in, "group": group, "num_output": nout},
        )
    if filler == "bilinear":
        return None
    return Finding(
        "info",
        "deconv-not-bilinear",
        layer.name,
        f"upsampling Deconvolution '{layer.name}' (stride {stride_of(layer)}) starts as {start} in this "
        "prototxt: the run's bilinear surgery writes one kernel per class into it when training "
        "starts, but Caffe's own tools (caffe train) and other scripts leave it so"
        + (" and, with lr_mult 0, it stays so there." if frozen else "."),
        'add weight_filler { type: "bilinear" } (with group: num_output) so the prototxt is right without the surgery',
    )


def _without_surgery(layer: Any, c_in: int | None, nout: int, group: int) -> Finding | None:
    filler, start, frozen = _start(layer)
    if filler != "bilinear":
        return Finding(
            "warning",
            "deconv-not-bilinear",
            layer.name,
            f"upsampling Deconvolution '{layer.name}' (stride {stride_of(layer)}) starts as {start} and "
            "nothing fills it: the run's bilinear surgery is off" + (" and lr_mult is 0." if frozen else "."),
            'add weight_filler { type: "bilinear" } with group: num_output, or turn the surgery on '
            "(surgery.bilinear: true)",
        )
    if nout > 1 and group != nout:
        return _group_finding(
            layer,
            frozen,
            f"Deconvolution '{layer.name}' has group {group} for {nout} channels: Caffe's bilinear "
            "filler writes the kernel into every (output, input) channel pair, so each upsampled "
            "class score is the sum of all classes",
            f"set group: {nout} (one kernel per class) and bias_term: false, or turn the surgery on",
            {"channels": c_in, "group": group, "num_output": nout},
        )
    return None


def check_batchnorm(net: Any, ctx: Context) -> list[Finding]:
    """BatchNorm: frozen statistics, one layer for both phases, a Scale with bias after it."""
    out = []
    for layer in unique_layers(net):
        if layer.type == "BatchNorm" and any(p.lr_mult != 0 for p in layer.param):
            three = len(layer.param) == 3
            out.append(
                Finding(
                    "warning" if three else "error",
                    "bn-lr-mult",
                    layer.name,
                    f"BatchNorm '{layer.name}' gives its blobs (mean, variance, moving-average factor) "
                    "a non-zero lr_mult: they are statistics, not weights. "
                    + (
                        "This Caffe quietly resets three param blocks to lr_mult 0 when it loads the "
                        "net; older Caffe and forks apply weight decay to them and shrink the "
                        "statistics."
                        if three
                        else "This Caffe aborts on it ('Cannot configure batch normalization statistics "
                        "as layer parameters')."
                    ),
                    "use param { lr_mult: 0 } three times, or no param blocks (Caffe then sets 0)",
                )
            )
    out += _bn_duplicates(net) + _bn_global_stats(net)
    for _, layers in phase_views(net):
        for i, layer in enumerate(layers):
            if layer.type == "BatchNorm" and layer.top and not _affine_after(layers, i):
                out.append(
                    Finding(
                        "warning",
                        "bn-without-scale",
                        layer.name,
                        f"BatchNorm '{layer.name}' is not followed by a Scale with a bias: Caffe's "
                        "BatchNorm only normalises (zero mean, unit variance) and has no learned "
                        "scale and shift, so the layer after it cannot recover them.",
                        "add a Scale layer with scale_param { bias_term: true } right after it (in place)",
                    )
                )
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
    return [
        Finding(
            "warning",
            "bn-global-stats",
            layer.name,
            f"BatchNorm '{layer.name}' sets use_global_stats: true and runs in TRAIN: training then "
            "normalises with stored statistics that nothing accumulates (they stay at their "
            "initial values unless a weights file brings them).",
            "remove use_global_stats (it follows the phase: false in TRAIN, true in TEST)",
        )
        for layer in unique_layers(net)
        if layer.type == "BatchNorm"
        and "TRAIN" in layer_phases(layer)
        and layer.batch_norm_param.HasField("use_global_stats")
        and layer.batch_norm_param.use_global_stats
    ]


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
        if not train or not test:
            continue
        names = f"'{train[0].name}' (TRAIN) and '{test[0].name}' (TEST)"
        if train[0].name == test[0].name:
            out.append(
                Finding(
                    "info",
                    "bn-phase-duplicate",
                    test[0].name,
                    f"BatchNorm '{test[0].name}' is declared once per phase under the same name: this "
                    "works, because BVLC Caffe's TEST net shares the TRAIN layer's blobs by name, "
                    "so validation normalises with the statistics training accumulates. It is redundant: "
                    "use_global_stats already follows the phase (false in TRAIN, true in TEST).",
                    "nothing to fix; one BatchNorm layer without include rules and without "
                    "use_global_stats does the same",
                )
            )
        elif _share_blobs(train[0], test[0]):
            out.append(
                Finding(
                    "info",
                    "bn-phase-duplicate",
                    test[0].name,
                    f"BatchNorm copied per phase: {names} share their blobs by param name, which "
                    "works but is not needed.",
                    "keep one BatchNorm layer without include rules or use_global_stats",
                )
            )
        else:
            out.append(
                Finding(
                    "error",
                    "bn-phase-duplicate",
                    test[0].name,
                    f"BatchNorm copied per phase: {names} are separate layers with separate blobs. "
                    "The TEST copy never receives the mean and variance the TRAIN copy accumulates, "
                    "so validation normalises with its initial values (zeros).",
                    "keep one BatchNorm layer without include rules and without use_global_stats: "
                    "it uses batch statistics in TRAIN and the accumulated ones in TEST",
                )
            )
    return out


def _share_blobs(a: Any, b: Any) -> bool:
    names_a, names_b = [p.name for p in a.param], [p.name for p in b.param]
    return len(names_a) >= 3 and names_a == names_b and all(names_a)
