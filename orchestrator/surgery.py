"""Bilinear surgery: the upsampling kernel FCN's Deconvolution layers start from (pure numpy)."""
from __future__ import annotations

import numpy as np

from common.errors import UserError


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
        raise UserError(f"layer {layer}: weights of shape {shape} are not a 2-D Deconvolution", "apply bilinear surgery only to Deconvolution layers")
    c_in, c_out_g, kh, kw = shape
    if kh != kw:
        raise UserError(f"layer {layer}: kernel {kh}x{kw} is not square, bilinear surgery needs a square kernel",
                        "use kernel_size k with stride s and k = 2s - s % 2")
    k = bilinear_kernel(kh).astype(np.float32)
    w = np.zeros(shape, dtype=np.float32)
    if group == c_in and c_out_g == 1:
        w[:, 0] = k
    elif group == 1 and c_in == c_out_g:
        w[np.arange(c_in), np.arange(c_in)] = k
    else:
        raise UserError(
            f"layer {layer}: {c_in} input channels, group {group}, {c_out_g * group} outputs: a bilinear "
            "kernel would mix classes", "set num_output = channels and group = channels (FCN's layout), or exclude the layer from surgery")
    return w


def is_bilinear(weights: np.ndarray, group: int, layer: str = "?", atol: float = 1e-6) -> bool:
    """True when `weights` equal the bilinear layout for their shape (verification after surgery)."""
    try:
        return bool(np.allclose(weights, bilinear_weights(weights.shape, group, layer), atol=atol))
    except UserError:
        return False
