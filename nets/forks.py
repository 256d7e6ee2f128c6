"""Nets written for a Caffe fork, answered with where each layer and field comes from and the
BVLC way to say the same (or plainly that BVLC has none). Forks add layer types (strings that
parse, or V1 enum values that do not) and fields (which stop BVLC's protobuf parser at the
first one), so the raw text is scanned (`scan`) and every fork token is listed at once, with
the layers that use it (`fork_error`); `check_fork_layers` is the same over a parsed net."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from common.errors import UserError
from common.findings import Finding
from nets.graph import Context, unique_layers

FORKS = {
    "segnet": "caffe-segnet (alexgkendall/caffe-segnet, SegNet-Tutorial's Caffe)",
    "enet": "caffe-enet (TimoSaemann/caffe-enet, ENet's Caffe)",
    "pspnet": "PSPNet's Caffe (hszhao/PSPNet, also ICNet's)",
    "deeplab": "DeepLab's Caffe (deeplab-public v1 and ver2, DeepLab v1/v2)",
    "deconvnet": "DeconvNet's Caffe (HyeonwooNoh/caffe)",
    "crfrnn": "CRF-RNN's Caffe (torrvision/caffe, crfasrnn)",
    "nvcaffe": "NVIDIA's Caffe (NVcaffe, the Caffe DIGITS runs)",
}
SEGNET = FORKS["segnet"]
BN = "BatchNorm (param { lr_mult: 0 } three times) followed in place by Scale { scale_param { bias_term: true } }"
UPSAMPLE = (
    "a Deconvolution with bilinear weights: stride s, kernel_size 2s - s % 2, pad ceil((s - 1) / 2), "
    "num_output and group = channels, bias_term: false, param { lr_mult: 0 }, weight_filler "
    '{ type: "bilinear" } (BVLC has no unpooling by max indices; the run\'s surgery fills it too), or a '
    'learned one (lr_mult > 0, weight_filler { type: "msra" }), or the generated compact FCN (net: { arch: compact })'
)
INTERP = (
    "for a zoom by an integer factor f (zoom_factor f): a fixed bilinear Deconvolution (stride f, "
    "kernel_size 2f - f % 2, pad ceil((f - 1) / 2), num_output and group = channels, bias_term: false, "
    'param { lr_mult: 0 }, weight_filler { type: "bilinear" }), then Crop to the target blob if sizes '
    "differ; BVLC has no layer that shrinks (shrink_factor) or resizes to a non-integer size: upsample "
    "the scores to the label's size instead of shrinking the label"
)
DATA = (
    "the data stage and the paired layer: `orchestrate data build --list train.txt --root DIR "
    '--out OUT --num-classes N --ignore-label L` writes LMDBs, read by type: "Python" python_param '
    '{ module: "data_prep.layers" layer: "PairedDataLayer" param_str: "{...}" }'
)
CLASS_WEIGHTS = (
    "InfogainLoss with the data stage's median-frequency weights: infogain_loss_param "
    '{ source: "OUT/infogain_H.binaryproto" }'
)
MC_DROPOUT = (
    "nothing: BVLC's Dropout is off in TEST, so Bayesian SegNet's sampling at test time has "
    "no equivalent; remove the field"
)
ACCURACY = (
    "Accuracy with accuracy_param { ignore_label: L } (it reads N x C x H x W scores); the run "
    "measures per-class IoU itself"
)
CRF = (
    "nothing: BVLC has no CRF layer; train and predict the net below it (its scores) and run a "
    "dense CRF outside Caffe if you want one"
)
L1 = (
    "nothing built in: BVLC has no L1 loss; use EuclideanLoss (L2), a Python loss layer of your own, "
    "or, for segmentation into classes, num_output = classes and SoftmaxWithLoss"
)


@dataclass(frozen=True)
class Token:
    """A layer type or field a fork adds: the forks that have it and the BVLC way."""

    forks: tuple[str, ...]
    bvlc: str


TYPES = {
    "BN": Token(("segnet", "enet", "pspnet", "deconvnet"), BN),
    "Upsample": Token(("segnet", "enet"), UPSAMPLE),
    "DenseImageData": Token(("segnet", "enet"), DATA),
    "Interp": Token(("deeplab", "pspnet"), INTERP),
    "ImageSegData": Token(("deeplab",), DATA),
    "SegAccuracy": Token(("deeplab",), ACCURACY),
    "MultiStageMeanfield": Token(("crfrnn",), CRF),
    "Unpooling": Token(("deconvnet",), UPSAMPLE),
    "L1Loss": Token(("nvcaffe",), L1),
}
# V1 `layers` nets name types by enum value: unknown values stop the parser
V1_TYPES = {
    "BN": TYPES["BN"],
    "UNPOOLING": TYPES["Unpooling"],
    "IMAGE_SEG_DATA": Token(("deeplab", "deconvnet"), DATA),
    "ELTWISE_ACCURACY": Token(("deconvnet",), ACCURACY),
    "INTERP": TYPES["Interp"],
}
FIELDS = {
    "bn_param": TYPES["BN"],
    "upsample_param": TYPES["Upsample"],
    "dense_image_data_param": TYPES["DenseImageData"],
    "weight_by_label_freqs": Token(("segnet", "enet"), CLASS_WEIGHTS),
    "class_weighting": Token(("segnet", "enet"), CLASS_WEIGHTS),
    "sample_weights_test": Token(("segnet",), MC_DROPOUT),
    "interp_param": TYPES["Interp"],
    "label_type": Token(("deeplab", "deconvnet"), DATA),
    "seg_accuracy_param": TYPES["SegAccuracy"],
    "multi_stage_meanfield_param": TYPES["MultiStageMeanfield"],
    "unpooling_param": TYPES["Unpooling"],
    "eltwise_accuracy_param": V1_TYPES["ELTWISE_ACCURACY"],
}
_TYPE_RE = re.compile(
    r"""\btype\s*:\s*(?:["'](?P<s>""" + "|".join(TYPES) + r""")["']|(?P<e>""" + "|".join(V1_TYPES) + r""")\b)"""
)
_FIELD_RE = re.compile(r"\b(" + "|".join(FIELDS) + r")\s*[:{]")
_NAME_RE = re.compile(r"""\bname\s*:\s*["']([^"']*)["']""")


@dataclass
class Hit:
    """One fork token found in the text: its lines and the layers that use it."""

    token: str
    kind: str  # "type" or "field"
    info: Token
    lines: list[int]
    layers: list[str]


def _strip_comments(line: str) -> str:
    """The line without its `#` comment (a # inside a quoted string stays)."""
    out, quote = [], ""
    for ch in line:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        out.append(ch)
    return "".join(out)


def _layer_names(lines: list[str]) -> list[str | None]:
    """For each line, the name of the top-level layer block it sits in (None outside one)."""
    out: list[str | None] = [None] * len(lines)
    depth, start, name = 0, 0, None
    for n, line in enumerate(lines):
        if depth == 0:
            start, name = n, None
        for m in _NAME_RE.finditer(line):
            if name is None and depth + line.count("{", 0, m.start()) - line.count("}", 0, m.start()) == 1:
                name = m.group(1)
        depth = max(0, depth + line.count("{") - line.count("}"))
        if depth == 0:
            out[start : n + 1] = [name] * (n + 1 - start)
    return out


def scan(text: str) -> list[Hit]:
    """Every fork-only layer type and field of the text, each once, with all its lines and layers."""
    lines = [_strip_comments(x) for x in text.splitlines()]
    owners = _layer_names(lines)
    hits: dict[str, Hit] = {}
    for n, (code, owner) in enumerate(zip(lines, owners, strict=True), start=1):
        found = [(m.group("s") or m.group("e"), "type") for m in _TYPE_RE.finditer(code)]
        found += [(m.group(1), "field") for m in _FIELD_RE.finditer(code)]
        for token, kind in found:
            info = (TYPES.get(token) or V1_TYPES[token]) if kind == "type" else FIELDS[token]
            hit = hits.setdefault(token, Hit(token, kind, info, [], []))
            hit.lines.append(n)
            if owner and owner not in hit.layers:
                hit.layers.append(owner)
    return sorted(hits.values(), key=lambda h: h.lines[0])


def likely_forks(hits: list[Hit]) -> list[str]:
    """The fork(s) that define the most of the tokens found, most likely first (ties all named)."""
    score: dict[str, int] = {}
    for hit in hits:
        for fork in hit.info.forks:
            score[fork] = score.get(fork, 0) + 1
    best = max(score.values(), default=0)
    return [FORKS[f] for f in FORKS if score.get(f) == best]


def _describe(hit: Hit, same_layers: bool) -> str:
    """`type "Interp" (5 times, first at line 3541 in a, b, ...; from ...)`; a field used by
    exactly the layers of its type is not listed with them again."""
    where = f"line {hit.lines[0]}" if len(hit.lines) == 1 else f"{len(hit.lines)} times, first at line {hit.lines[0]}"
    if same_layers:
        return f"{hit.token} ({where}, in the same layers)"
    layers = hit.layers if len(hit.layers) <= 8 else hit.layers[:8] + [f"... {len(hit.layers) - 8} more"]
    what = f'type "{hit.token}"' if hit.kind == "type" else hit.token
    on = f" in {', '.join(layers)}" if layers else ""
    return f"{what} ({where}{on}; from {' / '.join(FORKS[f].split(' (')[0] for f in hit.info.forks)})"


def fork_error(path: Any, hits: list[Hit], parser_said: str | None = None) -> UserError:
    """The UserError for a net written for a fork: every token once, grouped by its BVLC way."""
    groups: dict[str, list[Hit]] = {}
    for hit in hits:
        groups.setdefault(hit.info.bvlc, []).append(hit)
    parts = []
    for bvlc, group in groups.items():
        typed = [h.layers for h in group if h.kind == "type"]
        described = [_describe(h, h.kind == "field" and h.layers in typed) for h in group]
        parts.append(f"{'; '.join(described)}\n    -> BVLC: {bvlc}")
    said = f" (the parser stopped at: {parser_said})" if parser_said else ""
    what = "no such layer type or field" if len(hits) == 1 else f"none of these {len(hits)} layer types and fields"
    return UserError(
        f"the net prototxt {path} is written for {' or '.join(likely_forks(hits))}: BVLC Caffe has "
        f"{what} and cannot {'parse' if parser_said else 'build'} it{said}. In BVLC terms:\n  " + "\n  ".join(parts),
        "rewrite those layers with the BVLC equivalents above, then run `orchestrate check` again",
    )


def check_fork_layers(net: Any, ctx: Context) -> list[Finding]:
    """Layer types of a fork that parse (types are strings) but that BVLC Caffe cannot build."""
    return [
        Finding(
            "error",
            "fork-layer",
            layer.name,
            f"layer '{layer.name}' has type \"{layer.type}\", a layer of "
            f"{' / '.join(FORKS[f] for f in TYPES[layer.type].forks)}: BVLC Caffe has no such layer and "
            "cannot build this net.",
            f"BVLC: {TYPES[layer.type].bvlc}",
            {"type": layer.type},
        )
        for layer in unique_layers(net)
        if layer.type in TYPES
    ]
