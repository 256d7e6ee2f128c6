"""Nets written for a Caffe fork, answered with where they come from and the BVLC way to say the
same. caffe-segnet (alexgkendall/caffe-segnet, the Caffe of SegNet-Tutorial) adds layer types
and fields that BVLC Caffe does not have. Its fields stop BVLC's protobuf parser at the first
one, so the raw text is scanned too (`scan`); its types parse (they are strings) and are
findings (`check_fork_layers`)."""

from __future__ import annotations

import re
from typing import Any

from common.errors import UserError
from common.findings import Finding
from nets.graph import Context, unique_layers

SEGNET = "the caffe-segnet fork (alexgkendall/caffe-segnet, SegNet-Tutorial's Caffe)"
BN = "BatchNorm (param { lr_mult: 0 } three times) followed in place by Scale { scale_param { bias_term: true } }"
UPSAMPLE = (
    "a Deconvolution with bilinear weights: stride s, kernel_size 2s - s % 2, num_output and "
    'group = channels, bias_term: false, param { lr_mult: 0 }, weight_filler { type: "bilinear" } '
    "(BVLC has no unpooling by max indices; the run's surgery fills it too), or the generated "
    "compact FCN (net: { arch: compact })"
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
TYPES = {"BN": BN, "Upsample": UPSAMPLE, "DenseImageData": DATA}
FIELDS = {
    "bn_param": BN,
    "upsample_param": UPSAMPLE,
    "dense_image_data_param": DATA,
    "weight_by_label_freqs": CLASS_WEIGHTS,
    "class_weighting": CLASS_WEIGHTS,
    "sample_weights_test": MC_DROPOUT,
}
_TYPE_RE = re.compile(r'\btype\s*:\s*"(' + "|".join(TYPES) + ')"')
_FIELD_RE = re.compile(r"\b(" + "|".join(FIELDS) + r")\s*[:{]")


def scan(text: str) -> list[tuple[int, str, str]]:
    """(line, token, BVLC equivalent) for each fork-only type or field, first line of each."""
    seen: dict[str, tuple[int, str, str]] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        code = line.split("#", 1)[0]
        for m in _TYPE_RE.finditer(code):
            seen.setdefault(m.group(1), (n, f'type "{m.group(1)}"', TYPES[m.group(1)]))
        for m in _FIELD_RE.finditer(code):
            seen.setdefault(m.group(1), (n, m.group(1), FIELDS[m.group(1)]))
    return sorted(seen.values())


def fork_error(path: Any, hits: list[tuple[int, str, str]], parser_said: str) -> UserError:
    """The UserError for a net BVLC cannot parse because of fork-only fields: each token once,
    grouped by its BVLC equivalent."""
    groups: dict[str, list[str]] = {}
    for line, token, equivalent in hits:
        groups.setdefault(equivalent, []).append(f"{token} (line {line})")
    parts = [f"{', '.join(tokens)} -> {equivalent}" for equivalent, tokens in groups.items()]
    return UserError(
        f"cannot parse the net prototxt {path}: it is written for {SEGNET}, whose layers and fields "
        f"BVLC Caffe does not have (the parser stopped at: {parser_said}). In BVLC terms:\n  " + "\n  ".join(parts),
        "rewrite those layers with the BVLC equivalents above, then run `orchestrate check` again",
    )


def check_fork_layers(net: Any, ctx: Context) -> list[Finding]:
    """Layer types of a fork that parse (types are strings) but that BVLC Caffe cannot build."""
    return [
        Finding(
            "error",
            "fork-layer",
            layer.name,
            f"layer '{layer.name}' has type \"{layer.type}\", a layer of {SEGNET}: BVLC Caffe has no such "
            "layer and cannot build this net.",
            f"use {TYPES[layer.type]}",
            {"type": layer.type},
        )
        for layer in unique_layers(net)
        if layer.type in TYPES
    ]
