"""Bilinear surgery: the upsampling kernel FCN's Deconvolution layers start from. The functions
live in `nets.bilinear` (the doctor's probe applies the same surgery as the run).
`run_surgery` is the run's side: which layers, and the result as findings (never an exception)."""

from __future__ import annotations

from typing import Any

from common.findings import Finding
from nets.bilinear import apply, is_learned_upsampling, surgery_targets


def loaded_layers(net: Any, weights: str) -> set[str]:
    """Layers of a pycaffe `net` whose weights the run took from the weights file (copied or
    reshaped by nets.weights.transplant): surgery must not overwrite them."""
    from nets.prototxt import load_weights
    from nets.weights import plan as transplant_plan

    targets = {name: [tuple(b.data.shape) for b in blobs] for name, blobs in net.params.items()}
    done = transplant_plan(load_weights(weights), targets)
    return set(done["copied"]) | {r["layer"] for r in done["reshaped"]}


def _filler(param: Any, name: str) -> str:
    layer = next((x for x in param.layer if x.name == name), None)
    cp = layer.convolution_param if layer is not None else None
    return cp.weight_filler.type if cp is not None and cp.HasField("weight_filler") else "constant 0"


def plan(param: Any, named: list[str], loaded: set[str]) -> tuple[list[str], list[Finding]]:
    """(layers to fill, findings for the ones left alone) for a NetParameter (pure).

    `named` (surgery.layers) are done as asked, when they are Deconvolutions. Without names:
    every upsampling Deconvolution except learned ones and those whose weights came from the
    weights file (`loaded`)."""
    deconvs = {x.name for x in param.layer if x.type == "Deconvolution"}
    if named:
        return [n for n in named if n in deconvs], [
            Finding(
                "warning",
                "surgery-skipped",
                n,
                f"surgery.layers names '{n}', which is not a Deconvolution "
                f"of the train net (its Deconvolutions: {', '.join(sorted(deconvs)) or 'none'})",
                "correct the name in surgery.layers",
            )
            for n in named
            if n not in deconvs
        ]
    names = surgery_targets(param)
    learned = {x.name: x.convolution_param.weight_filler.type for x in param.layer if is_learned_upsampling(x)}
    out = [
        Finding(
            "info",
            "surgery-skipped",
            n,
            f"'{n}' is a learned upsampling (lr_mult > 0, weight_filler {filler}): left to its filler",
            "none needed; name it in surgery.layers to start it bilinear",
        )
        for n, filler in learned.items()
    ]
    out += [
        Finding(
            "info",
            "surgery-skipped",
            n,
            f"'{n}' kept the weights the weights file gave it",
            "none needed; name it in surgery.layers to reset it to bilinear",
        )
        for n in names
        if n in loaded
    ]
    return [n for n in names if n not in loaded], out


def run_surgery(net: Any, param: Any, named: list[str], weights: str | None) -> list[Finding]:
    """The run's bilinear surgery on a pycaffe `net` (its NetParameter `param`), as findings.
    A layer it cannot fill well keeps its filler's weights and becomes a warning: surgery
    never stops a run."""
    loaded = loaded_layers(net, weights) if weights and not named and surgery_targets(param) else set()
    names, out = plan(param, named, loaded)
    result = apply(net, param, names)
    out += [
        Finding(
            "info",
            "surgery",
            d["layer"],
            f"bilinear kernel {d['kernel']}x{d['kernel']} set on "
            f"{d['channels']} channels (group {d['group']}) and verified",
            "none needed",
        )
        for d in result["done"]
    ]
    out += [
        Finding(
            "warning",
            "surgery-skipped",
            r["layer"],
            f"bilinear surgery not applied to '{r['layer']}': "
            f"{r['reason']}; it keeps its filler's weights ({_filler(param, r['layer'])})",
            r["fix"],
        )
        for r in result["refused"]
    ]
    return out
