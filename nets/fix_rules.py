"""One repair per finding code: an edit of the parsed NetParameter (and SolverParameter), made
only where the intent is unambiguous. Each repair is `(net, finding, fix context) -> [Change]`:
it edits the messages it is given (copies `nets.fix` owns) and says what it changed; an empty
list means "left as is" (then `FixContext.declined` says why). No files, no Caffe runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.findings import Finding
from nets.graph import CLASS_LOSSES, PASS_THROUGH, Context, conv_param, layer_phases
from nets.lossnorm import (
    DEFAULT_EFFECTIVE,
    HIGH_EFFECTIVE,
    LOW_EFFECTIVE,
    equivalent_lr,
    normalization_of,
    per_pixel_default,
)

WEIGHTINGS = ("sqrt_median_frequency", "median_frequency")
# below this lr / (1 - momentum) a net trained from scratch barely moves (base_lr 1e-4 at momentum 0.9)
SCRATCH_LOW_EFFECTIVE = 1e-3
PAIRED = ("data_prep.layers", "PairedDataLayer")


@dataclass(frozen=True)
class Change:
    """One edit: the finding it answers, where, what it was, what it is now, and why."""

    code: str
    layer: str | None
    before: str
    after: str
    why: str


@dataclass
class FixContext:
    """What a repair may read besides the net: the doctor's context (classes, ignore label,
    pixels), the solver to edit, the data stage's stats and where the fixed files go."""

    ctx: Context
    solver: Any = None  # SolverParameter copy, edited in place
    stats: dict[str, Any] = field(default_factory=dict)
    out_dir: str = "."
    weighting: str = WEIGHTINGS[0]
    normalize_loss: bool = False  # also rewrite a summed loss whose lr matches the sum
    fine_tuning: bool = False  # a weights file (or a known pretrained backbone) gives the start
    files: dict[str, list[float]] = field(default_factory=dict)  # H files to write: name -> class weights
    declined: dict[tuple[str, str | None], str] = field(default_factory=dict)  # (code, layer) -> why not


Repair = Callable[[Any, Finding, FixContext], list[Change]]


def one_line(msg: Any) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(msg, as_one_line=True).strip()


def field_diff(before: Any, after: Any) -> tuple[str, str]:
    """The top-level fields that differ between two messages, as one-line text each."""

    def fields(m: Any) -> dict[str, str]:
        out = {}
        for fd, value in m.ListFields():
            if fd.name == "name":
                continue
            vals = value if fd.label == fd.LABEL_REPEATED else [value]
            text = [f"{fd.name} {{ {one_line(v)} }}" if hasattr(v, "ListFields") else f"{fd.name}: {v}" for v in vals]
            out[fd.name] = " ".join(text)
        return out

    a, b = fields(before), fields(after)
    keys = [k for k in dict.fromkeys(list(a) + list(b)) if a.get(k) != b.get(k)]
    return " ".join(a[k] for k in keys if k in a) or "(none)", " ".join(b[k] for k in keys if k in b) or "(none)"


def edit_layers(net: Any, name: str | None, code: str, why: str, edit: Callable[[Any], None]) -> list[Change]:
    """Apply `edit` to every declaration of layer `name` (once per phase in a train_val net);
    one Change per declaration that changed."""
    from caffe.proto import caffe_pb2

    out = []
    for layer in net.layer:
        if layer.name != name:
            continue
        before = caffe_pb2.LayerParameter()
        before.CopyFrom(layer)
        edit(layer)
        if before != layer:
            b, a = field_diff(before, layer)
            out.append(Change(code, name, b, a, why))
    return out


def _next_in_place(net: Any, layer: Any) -> list[Any]:
    """The layers that read `layer`'s top next, in the same phases."""
    if not layer.top:
        return []
    top, phases = layer.top[0], layer_phases(layer)
    seen = False
    out = []
    for other in net.layer:
        if other is layer:
            seen = True
        elif seen and top in other.bottom and layer_phases(other) & phases:
            out.append(other)
    return out


def feeds_relu(net: Any, layer: Any) -> bool:
    """The layer's output reaches a ReLU through pass-through layers (BatchNorm, Scale, ...)."""
    frontier, seen = [layer], set()
    while frontier:
        cur = frontier.pop(0)
        for nxt in _next_in_place(net, cur):
            if nxt.type in ("ReLU", "PReLU", "ELU"):
                return True
            if nxt.type in PASS_THROUGH and nxt.name not in seen and nxt.type not in ("Eltwise", "Softmax"):
                seen.add(nxt.name)
                frontier.append(nxt)
    return False


def repair_zero_init(net: Any, f: Finding, fx: FixContext) -> list[Change]:
    """MSRA (He) weights for a layer feeding a ReLU, xavier otherwise, constant-0 bias."""
    target = next((x for x in net.layer if x.name == f.layer), None)
    if target is None:
        return []
    if f.layer in fx.ctx.weight_layers:
        fx.declined[(f.code, f.layer)] = "the weights file gives this layer (a filler would be overwritten)"
        return []
    if f.data.get("reason") == "no-loss":
        fx.declined[(f.code, f.layer)] = "a net without a loss (a deploy net) takes every weight from a weights file"
        return []
    if target.type == "Scale":
        return edit_layers(
            net, f.layer, f.code, "a constant-0 scale outputs zeros: start at 1", lambda x: _scale_one(x)
        )
    kind = "msra" if feeds_relu(net, target) else "xavier"
    why = (
        f"weights started at 0 and could not recover ({f.data.get('reason', 'stuck')}): "
        + ("MSRA (He) for a layer feeding a ReLU" if kind == "msra" else "xavier (no ReLU after it)")
        + ", bias constant 0"
    )

    def edit(x: Any) -> None:
        cp = conv_param(x)
        cp.weight_filler.Clear()
        cp.weight_filler.type = kind
        if getattr(cp, "bias_term", True) and not cp.HasField("bias_filler"):
            cp.bias_filler.type = "constant"
            cp.bias_filler.value = 0

    return edit_layers(net, f.layer, f.code, why, edit)


def _scale_one(layer: Any) -> None:
    layer.scale_param.filler.type = "constant"
    layer.scale_param.filler.value = 1


def repair_bn_phase_duplicate(net: Any, f: Finding, fx: FixContext) -> list[Change]:
    """One BatchNorm for both phases: the TRAIN copy without include rules and
    use_global_stats, three param { lr_mult: 0 }; the TEST copy removed."""
    test = next((x for x in net.layer if x.name == f.layer and x.type == "BatchNorm"), None)
    if test is None:
        return []
    site = (list(test.bottom), list(test.top))
    train = next(
        (
            x
            for x in net.layer
            if x.type == "BatchNorm" and (list(x.bottom), list(x.top)) == site and "TRAIN" in layer_phases(x)
        ),
        None,
    )
    if train is None or train is test:
        return []
    removed = one_line(test)
    index = [i for i, x in enumerate(net.layer) if x is test][0]
    del net.layer[index]
    why = "one BatchNorm serves both phases: it accumulates statistics in TRAIN and uses them in TEST"
    changes = [Change(f.code, f.layer, removed, "(removed)", why)]

    def merge(x: Any) -> None:
        x.ClearField("include")
        x.ClearField("exclude")
        x.batch_norm_param.ClearField("use_global_stats")
        if not len(x.batch_norm_param.ListFields()):
            x.ClearField("batch_norm_param")
        _stats_params(x)

    return changes + edit_layers(net, train.name, f.code, why, merge)


def _stats_params(layer: Any) -> None:
    names = [p.name for p in layer.param] if len(layer.param) == 3 else ["", "", ""]
    layer.ClearField("param")
    for name in names:
        p = layer.param.add(lr_mult=0)
        if name:
            p.name = name


def repair_bn_global_stats(net: Any, f: Finding, fx: FixContext) -> list[Change]:
    def edit(x: Any) -> None:
        x.batch_norm_param.ClearField("use_global_stats")

    return edit_layers(net, f.layer, f.code, "use_global_stats follows the phase (false in TRAIN, true in TEST)", edit)


def repair_bn_lr_mult(net: Any, f: Finding, fx: FixContext) -> list[Change]:
    return edit_layers(net, f.layer, f.code, "BatchNorm's blobs are statistics, not weights", _stats_params)


def repair_bn_without_scale(net: Any, f: Finding, fx: FixContext) -> list[Change]:
    """A Scale with bias, in place right after the BatchNorm (same phases)."""
    from caffe.proto import caffe_pb2

    layers = list(net.layer)
    at = [i for i, x in enumerate(layers) if x.name == f.layer and x.type == "BatchNorm"]
    if not at or not layers[at[0]].top:
        return []
    bn = layers[at[0]]
    names = {x.name for x in layers}
    name = next(n for n in (f"{f.layer}_scale", *(f"{f.layer}_scale{k}" for k in range(2, 99))) if n not in names)
    scale = caffe_pb2.LayerParameter(name=name, type="Scale", bottom=[bn.top[0]], top=[bn.top[0]])
    scale.include.extend(bn.include)
    scale.exclude.extend(bn.exclude)
    scale.scale_param.bias_term = True
    net.ClearField("layer")
    net.layer.extend(layers[: at[0] + 1] + [scale] + layers[at[0] + 1 :])
    why = "Caffe's BatchNorm has no learned scale and shift; a Scale with bias gives them back"
    return [Change(f.code, name, "(none)", one_line(scale), why)]


def repair_deconv(net: Any, f: Finding, fx: FixContext) -> list[Change]:
    """A fixed upsampling as the run's surgery fills it: group = channels, no bias, bilinear
    filler, lr_mult 0 (learned upsamplings raise no finding and are never here)."""
    channels = f.data.get("channels")
    why = "a fixed upsampling interpolates each class score on its own: one bilinear kernel per channel, frozen"

    def edit(x: Any) -> None:
        cp = x.convolution_param
        n = int(channels or cp.num_output)
        cp.num_output, cp.group, cp.bias_term = n, n, False
        cp.ClearField("bias_filler")
        cp.weight_filler.Clear()
        cp.weight_filler.type = "bilinear"
        x.ClearField("param")
        x.param.add(lr_mult=0, decay_mult=0)

    return edit_layers(net, f.layer, f.code, why, edit)


def _lr_declined(f: Finding, fx: FixContext, summed: bool, sane: bool, eq: float | None) -> str | None:
    """Why the loss/lr pair is left as it is, or None to repair it. A summed loss with an lr
    that matches it, and any small step while fine-tuning from pretrained weights, are FCN's
    own choices; from scratch a step below SCRATCH_LOW_EFFECTIVE does not train."""
    if summed and fx.normalize_loss:
        return None
    if summed and sane:
        return (
            f"a summed loss with a matching lr (the same step as base_lr {eq:.2g} on a pixel-averaged loss) is "
            "a deliberate choice (FCN's); --normalize-loss rewrites it as VALID with that base_lr"
        )
    if fx.fine_tuning and f.severity != "error":
        return (
            "fine-tuning from pretrained weights: small steps are a choice there (FCN's summed loss with "
            "base_lr 1e-10 to 1e-14); --normalize-loss rewrites a summed loss as VALID"
        )
    return None


def repair_loss_normalization(net: Any, f: Finding, fx: FixContext) -> list[Change]:
    """normalization VALID, and base_lr at the same per-pixel step when that step is sane,
    else the per-pixel default (`_lr_declined` says what is kept)."""
    solver, data = fx.solver, f.data
    if solver is None or data.get("base_lr") is None:
        fx.declined[(f.code, f.layer)] = "no solver given, so base_lr cannot be changed with the normalization"
        return []
    momentum, base_lr = float(data.get("momentum") or 0.0), float(data["base_lr"])
    mode, pixels = data.get("normalization", "VALID"), data.get("pixels")
    summed = mode not in ("VALID", "FULL")
    eq = equivalent_lr(base_lr, mode, int(pixels or 1), int(data.get("batch") or 1)) if pixels or not summed else None
    low = LOW_EFFECTIVE if fx.fine_tuning else SCRATCH_LOW_EFFECTIVE
    sane = eq is not None and low <= eq / max(1e-12, 1 - momentum) <= HIGH_EFFECTIVE
    declined = _lr_declined(f, fx, summed, sane, eq)
    if declined:
        fx.declined[(f.code, f.layer)] = declined
        return []
    new_lr = eq if sane and eq is not None else per_pixel_default(momentum)
    size = "large" if eq and eq / max(1e-12, 1 - momentum) > HIGH_EFFECTIVE else "small"
    how = (
        f"base_lr {new_lr:.2g} takes the same per-pixel step as before"
        if sane
        else f"the old step ({'unknown' if eq is None else f'{eq:.2g} per pixel'}) is too {size} to train"
        f"{'' if fx.fine_tuning else ' from scratch'}, so base_lr is the per-pixel default {new_lr:.2g} "
        f"(lr / (1 - momentum) = {DEFAULT_EFFECTIVE:g})"
    )
    why = f"a pixel-averaged loss keeps the step independent of the input size; {how}"
    changes = []
    for layer in net.layer:
        if layer.type in CLASS_LOSSES and normalization_of(layer) != "VALID":
            changes += edit_layers(net, layer.name, f.code, why, _valid)
    before = solver.base_lr
    if before != new_lr:
        solver.base_lr = new_lr
        changes.append(Change(f.code, "solver", f"base_lr: {before:g}", f"base_lr: {new_lr:g}", why))
    return changes


def _valid(layer: Any) -> None:
    from caffe.proto import caffe_pb2

    layer.loss_param.ClearField("normalize")
    layer.loss_param.normalization = caffe_pb2.LossParameter.VALID
