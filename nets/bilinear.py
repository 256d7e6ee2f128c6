"""Bilinear surgery: the upsampling kernel FCN's Deconvolution layers start from, which
Deconvolutions get it, and applying it to a pycaffe net. The doctor's probe and the run use
these same functions, so the probe judges the net that trains. Pure numpy except `apply`."""

from __future__ import annotations

from typing import Any

import numpy as np

from common.errors import UserError

# fillers that say "this upsampling is meant to interpolate": the surgery may (re)write it
INTERPOLATING_FILLERS = ("constant", "bilinear")


def kernel_size_for_stride(stride: int) -> int:
    """FCN's rule: a stride-s upsampling needs a kernel of 2s - s % 2."""
    return 2 * stride - stride % 2


def bilinear_kernel(size: int) -> np.ndarray:
    """2-D bilinear interpolation kernel of `size` x `size` (the tent filter, separable)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1.0 - np.abs(np.arange(size, dtype=np.float64) - center) / factor
    return np.outer(ramp, ramp)


def bilinear_weights(shape: tuple[int, ...], group: int, layer: str) -> np.ndarray:
    """Deconvolution weights (C_in, C_out/group, kh, kw) in FCN's channel layout: class c feeds class c.

    With group == C_in each group holds one channel and gets the kernel; with group 1 the
    kernel sits on the diagonal (in == out). Anything else would mix classes: an error.
    """
    if len(shape) != 4:
        raise UserError(
            f"layer {layer}: weights of shape {shape} are not a 2-D Deconvolution",
            "apply bilinear surgery only to Deconvolution layers",
        )
    c_in, c_out_g, kh, kw = shape
    if kh != kw:
        raise UserError(
            f"layer {layer}: kernel {kh}x{kw} is not square, bilinear surgery needs a square kernel",
            "use kernel_size k with stride s and k = 2s - s % 2",
        )
    if not fits(c_in, c_out_g * group, group):
        raise UserError(
            f"layer {layer}: {c_in} input channels, group {group}, {c_out_g * group} outputs: a bilinear "
            "kernel would mix classes",
            "set num_output = channels and group = channels (FCN's layout), or exclude the layer from surgery",
        )
    w = np.zeros(shape, dtype=np.float32)
    # group == channels: one kernel per group; group 1: the kernel on the (in, out) diagonal
    w[np.arange(c_in), 0 if group == c_in else np.arange(c_in)] = bilinear_kernel(kh).astype(np.float32)
    return w


def fits(channels: int, num_output: int, group: int) -> bool:
    """True when one bilinear kernel per channel can be written without mixing channels:
    num_output == channels, with group 1 (diagonal) or group == channels."""
    return num_output == channels and group in (1, channels)


def is_bilinear(weights: np.ndarray, group: int, layer: str = "?", atol: float = 1e-6) -> bool:
    """True when `weights` equal the bilinear layout for their shape (verification after surgery)."""
    try:
        return bool(np.allclose(weights, bilinear_weights(weights.shape, group, layer), atol=atol))
    except UserError:
        return False


def _stride(layer: Any) -> int:
    cp = layer.convolution_param
    return max([int(s) for s in list(cp.stride) + [cp.stride_h, cp.stride_w] if s] or [1])


def is_learned_upsampling(layer: Any, c_in: int | None = None) -> bool:
    """A Deconvolution meant to be learned from its own start, not an interpolation: lr_mult > 0
    and either an explicit weight filler that is neither constant nor bilinear (ENet-style
    decoders) or channels no per-channel bilinear kernel fits (`c_in` in, num_output out with
    its group: a decoder such as DIGITS' 1024 -> 1, which learns from its zeros like a
    classifier). Surgery and the doctor's bilinear and group advice leave it alone."""
    if layer.type != "Deconvolution":
        return False
    cp = layer.convolution_param
    learns = not layer.param or layer.param[0].lr_mult > 0
    learned_filler = cp.HasField("weight_filler") and cp.weight_filler.type not in INTERPOLATING_FILLERS
    mixes = c_in is not None and not fits(c_in, int(cp.num_output), int(cp.group or 1))
    return learns and (learned_filler or mixes)


def is_surgery_target(layer: Any, c_in: int | None = None) -> bool:
    """The default surgery fills every upsampling Deconvolution (stride > 1) that is not a
    learned upsampling (`c_in`: its input channels, when known)."""
    return layer.type == "Deconvolution" and _stride(layer) > 1 and not is_learned_upsampling(layer, c_in)


def learned_upsamplings(net: Any) -> dict[str, str]:
    """Name -> weight filler ("none" when unset) of each learned upsampling Deconvolution of a
    NetParameter, its input channels followed through the graph."""
    from nets.graph import channels_of, phase_views

    out: dict[str, str] = {}
    for _, layers in phase_views(net):
        for i, layer in enumerate(layers):
            c_in = channels_of(layers, i, layer.bottom[0]) if layer.type == "Deconvolution" and layer.bottom else None
            if _stride(layer) > 1 and is_learned_upsampling(layer, c_in):
                cp = layer.convolution_param
                out.setdefault(layer.name, cp.weight_filler.type if cp.HasField("weight_filler") else "none")
    return out


def surgery_targets(net: Any) -> list[str]:
    """Names of the Deconvolutions the default surgery fills (a NetParameter in), each once."""
    learned = learned_upsamplings(net)
    out: list[str] = []
    for layer in net.layer:
        if is_surgery_target(layer) and layer.name not in learned and layer.name not in out:
            out.append(layer.name)
    return out


def group_of(net: Any, name: str) -> int:
    """The `group` of the named Deconvolution in a NetParameter (1 when unset)."""
    for layer in net.layer:
        if layer.name == name:
            return int(layer.convolution_param.group or 1)
    raise KeyError(name)


def apply(net: Any, param: Any, names: list[str]) -> dict[str, Any]:
    """Write and verify the bilinear kernel in each named layer of a pycaffe `net` (its
    NetParameter `param` gives the groups). Never raises for a layer it cannot fill: returns
    {"done": [{layer, kernel, channels, group}], "refused": [{layer, reason, fix}]}."""
    out: dict[str, Any] = {"done": [], "refused": []}
    for name in names:
        if name not in net.params:
            out["refused"].append(
                {
                    "layer": name,
                    "reason": "not a Deconvolution with weights in this net",
                    "fix": "name an upsampling Deconvolution of the net",
                }
            )
            continue
        group, blob = group_of(param, name), net.params[name][0]
        try:
            blob.data[...] = bilinear_weights(blob.data.shape, group, name)
        except UserError as e:
            out["refused"].append({"layer": name, "reason": e.message, "fix": e.fix})
            continue
        if not is_bilinear(blob.data, group, name):
            out["refused"].append(
                {
                    "layer": name,
                    "reason": "the kernel did not take effect",
                    "fix": "check that the layer's weights are not shared",
                }
            )
            continue
        out["done"].append(
            {"layer": name, "kernel": int(blob.data.shape[2]), "channels": int(blob.data.shape[0]), "group": group}
        )
    return out
