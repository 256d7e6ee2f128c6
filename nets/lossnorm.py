"""The learning rate and the loss normalization are one decision: a loss summed over pixels
takes steps `pixels` times larger than a pixel-averaged one at the same base_lr. Pure
arithmetic and the `loss-normalization-lr` rule."""

from __future__ import annotations

import json
from typing import Any

from common.findings import Finding
from nets.graph import CLASS_LOSSES, Context, in_phase

SUMMED = ("BATCH_SIZE", "NONE")
# lr / (1 - momentum) on a pixel-averaged loss: below LOW nothing moves, above HIGH it diverges
LOW_EFFECTIVE = 1e-5
HIGH_EFFECTIVE = 10.0
# a base_lr this small only makes sense for a loss summed over many pixels
SUMMED_SCALE_LR = 1e-8
# lr / (1 - momentum) of the per-pixel default the doctor and `orchestrate fix` propose:
# base_lr 0.01 at momentum 0.9, 0.001 at 0.99
DEFAULT_EFFECTIVE = 0.1


def per_pixel_default(momentum: float) -> float:
    """The base_lr of a pixel-averaged loss trained from scratch, for this momentum."""
    return float(f"{DEFAULT_EFFECTIVE * max(1e-3, 1 - momentum):.2g}")


def sane_per_pixel(lr: float, momentum: float) -> bool:
    """A per-pixel base_lr that neither stalls nor diverges at this momentum."""
    return LOW_EFFECTIVE <= lr / max(1e-12, 1 - momentum) <= HIGH_EFFECTIVE


def normalization_of(layer: Any) -> str:
    """The mode Caffe uses: `normalization` if given, else deprecated `normalize` (false ->
    BATCH_SIZE, true -> VALID), else VALID."""
    from caffe.proto import caffe_pb2

    lp = layer.loss_param
    if lp.HasField("normalization"):
        return caffe_pb2.LossParameter.NormalizationMode.Name(lp.normalization)
    if lp.HasField("normalize"):
        return "VALID" if lp.normalize else "BATCH_SIZE"
    return "VALID"


def equivalent_lr(base_lr: float, mode: str, pixels: int, batch: int = 1) -> float:
    """The base_lr that takes the same step on a pixel-averaged (VALID) loss."""
    if mode == "BATCH_SIZE":
        return base_lr * pixels
    if mode == "NONE":
        return base_lr * pixels * batch
    return base_lr


def input_size(net: Any, stats: dict[str, Any] | None = None) -> tuple[int | None, int | None]:
    """(pixels per image, batch) the TRAIN net's loss sees, from the data layers (Input/Dummy
    shape, crop_size, the paired layer's crop) or the data stage's height x width."""
    pixels = batch = None
    for layer in in_phase(net, "TRAIN"):
        if layer.bottom:
            continue
        if layer.type in ("Input", "DummyData"):
            shapes = layer.input_param.shape if layer.type == "Input" else layer.dummy_data_param.shape
            if shapes and len(shapes[0].dim) == 4:
                d = shapes[0].dim
                return int(d[2] * d[3]), int(d[0])
        elif layer.type in ("Data", "ImageData"):
            crop = layer.transform_param.crop_size
            pixels = pixels or (int(crop * crop) if crop else None)
            b = layer.data_param.batch_size if layer.type == "Data" else layer.image_data_param.batch_size
            batch = batch or (int(b) if b else None)
        elif layer.type == "Python" and layer.python_param.param_str:
            try:
                p = json.loads(layer.python_param.param_str)
            except (json.JSONDecodeError, TypeError):
                continue
            if isinstance(p, dict):
                if p.get("crop"):
                    pixels = int(p["crop"][0]) * int(p["crop"][1])
                batch = batch or p.get("batch_size")
    if pixels is None and stats and stats.get("height") and stats.get("width"):
        pixels = int(stats["height"]) * int(stats["width"])
    return pixels, batch


def check_loss_normalization(net: Any, ctx: Context) -> list[Finding]:
    """An unnormalized loss with its lr, or a normalized loss with an lr sized for a sum."""
    out = []
    solver = ctx.solver
    base_lr = float(solver.base_lr) if solver is not None and solver.HasField("base_lr") else None
    momentum = float(solver.momentum) if solver is not None else 0.0
    for layer in in_phase(net, "TRAIN"):
        if layer.type not in CLASS_LOSSES:
            continue
        mode = normalization_of(layer)
        data = {
            "normalization": mode,
            "base_lr": base_lr,
            "momentum": momentum,
            "pixels": ctx.pixels,
            "batch": ctx.batch,
        }
        if mode in SUMMED:
            out.append(_summed(layer.name, mode, base_lr, momentum, ctx, data))
        elif base_lr is not None and base_lr / max(1e-12, 1 - momentum) < LOW_EFFECTIVE:
            out.append(_tiny(layer.name, mode, base_lr, ctx, data))
    return out


def _summed(
    name: str, mode: str, base_lr: float | None, momentum: float, ctx: Context, data: dict[str, Any]
) -> Finding:
    over = "pixels of each image" if mode == "BATCH_SIZE" else "pixels of the whole batch"
    text = (
        f"'{name}' is not normalized per pixel (normalization {mode}): the loss is a sum over "
        f"the {over}, so the step grows with the input size and the share of labelled pixels"
    )
    fix = (
        "use loss_param { normalization: VALID } (as the generated nets do) with a base_lr for a "
        "pixel-averaged loss, or keep the sum and rescale base_lr whenever the input size changes"
    )
    severity = "warning"
    if base_lr is not None and ctx.pixels:
        eq = equivalent_lr(base_lr, mode, ctx.pixels, ctx.batch or 1)
        data["equivalent_lr"] = eq
        text += (
            f". base_lr {base_lr:g} summed over {ctx.pixels} pixels"
            + (f" x {ctx.batch} images" if mode == "NONE" and ctx.batch else "")
            + f" acts like base_lr {eq:.2g} on a pixel-averaged loss"
        )
        effective = eq / max(1e-12, 1 - momentum)
        if effective > HIGH_EFFECTIVE:
            severity, text = "error", text + ", large enough to diverge"
        elif effective < LOW_EFFECTIVE:
            text += ", too small for the weights to move much"
        fix = _summed_fix(base_lr, eq, momentum, data)
    elif base_lr is None:
        text += "; pass the solver to compare its base_lr"
    else:
        text += f"; base_lr {base_lr:g} must be divided by the pixel count (unknown here)"
    return Finding(severity, "loss-normalization-lr", name, text + ".", fix, data)


def _summed_fix(base_lr: float, eq: float, momentum: float, data: dict[str, Any]) -> str:
    """VALID with a per-pixel base_lr in the normal range: the same step when that step is
    sane, else the per-pixel default; the summed alternative at that same step."""
    if sane_per_pixel(eq, momentum):
        lr, why = eq, "the same step, independent of the input size"
    else:
        lr = per_pixel_default(momentum)
        verdict = "diverges" if eq / max(1e-12, 1 - momentum) > HIGH_EFFECTIVE else "barely moves"
        why = (
            f"a per-pixel base_lr for momentum {momentum:g} from scratch; the current base_lr {base_lr:g} on this sum "
            f"equals {eq:.2g} per pixel, which {verdict}"
        )
    data["suggested_lr"] = lr
    return (
        f"use loss_param {{ normalization: VALID }} with base_lr {lr:.2g} ({why}), or keep the sum "
        f"with base_lr {lr * base_lr / eq:.2g} and rescale it whenever the input size changes"
    )


def _tiny(name: str, mode: str, base_lr: float, ctx: Context, data: dict[str, Any]) -> Finding:
    text = (
        f"'{name}' averages the loss per pixel (normalization {mode}) but base_lr {base_lr:g} "
        "is sized for a loss summed over pixels"
    )
    if ctx.pixels:
        text += f" (as a sum over {ctx.pixels} pixels it would act like {base_lr * ctx.pixels:.2g} per pixel)"
    text += ": each step is too small for the weights to move."
    return Finding(
        "error" if base_lr <= SUMMED_SCALE_LR else "warning",
        "loss-normalization-lr",
        name,
        text,
        f"raise base_lr to a per-pixel value ({per_pixel_default(data['momentum']):.2g} at momentum "
        f"{data['momentum']:g} for a net trained from scratch), or switch the loss to normalization: "
        "BATCH_SIZE if the lr was meant for a sum",
        data,
    )
