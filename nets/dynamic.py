"""The doctor's dynamic check: run `nets.probe` in a child process (Caffe aborts instead of
raising) and turn its statistics, or its abort, into findings."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from common.child import ChildResult, run_child
from common.findings import Finding
from nets.graph import CLASS_LOSSES, in_phase, lr_mults, signal_bottoms
from nets.probe import MARK, label_inputs

ROOT = Path(__file__).resolve().parent.parent
# a zero accuracy or loss is a number, not a dead layer
SKIP_DEAD = {"Accuracy", "Silence"}
SIZE_HINT = (
    "labels and scores differ in size: crop the larger to the other. Scores larger than the label "
    "(FCN's padding): Crop them with the data blob; scores smaller (valid convolutions, a U-Net): "
    "Crop the label with the score blob (offset: half the difference) and give the loss "
    "propagate_down: true propagate_down: false. Use one batch size for images and labels"
)
# Caffe's words -> what to change
HINTS = (
    (
        "Unknown bottom blob",
        "a layer reads a blob that no earlier layer (in this phase) writes: "
        "check its bottom names and the include phase rules",
    ),
    ("Unknown layer type", "this Caffe has no layer of that type (type names are case-sensitive)"),
    (
        "crop",
        "the Crop does not fit: compute its offsets with caffe.coord_map.crop, and make the "
        "cropped blob at least as large as the reference (FCN pads conv1_1 by 100)",
    ),
    (
        "Cannot copy param",
        "the weights file has a same-named layer with other shapes: rename the "
        "layer to learn it from scratch, or fix its num_output",
    ),
    (
        "Incompatible number of blobs",
        "the weights file's layer has another number of blobs (bias_term?): rename the layer or match bias_term",
    ),
    (
        "mdb_",
        "the Data layer's LMDB cannot be opened: check data_param.source (relative paths "
        "are read from the current directory) or build the data first",
    ),
    ("Number of labels must match", SIZE_HINT),
    ("outer_num_ * inner_num_", SIZE_HINT),
    (
        "cannot backpropagate to label inputs",
        "the label reaches the loss through a layer that also reads a learned blob (a Crop of the "
        "label to the scores): give the loss propagate_down: true propagate_down: false",
    ),
    ("batch normalization statistics", "BatchNorm blobs must have lr_mult 0 (or no param blocks)"),
    ("normalize is deprecated", "use loss_param { normalization: ... } instead of normalize"),
    ("num_axes", "the blob shapes do not fit this layer: check the layer's inputs"),
)


def _hint(message: str) -> str:
    for needle, hint in HINTS:
        if needle.lower() in message.lower():
            return hint
    return "read Caffe's message; the probe log has the full context"


def _last_mark(log_text: str) -> tuple[str | None, str | None]:
    """(stage, layer) of the probe's last progress line."""
    found = re.findall(rf"^{re.escape(MARK)} (\w+) (\S+)$", log_text, re.M)
    return found[-1] if found else (None, None)


def _python_error(log_text: str) -> str | None:
    """The Python exception behind a failed build: Boost.Python reports a Python layer's
    error first and then a SystemError of its own, so the first real one wins."""
    found = re.findall(r"^(\w+(?:\.\w+)*(?:Error|Exception|Exit)\b.*)$", log_text, re.M)
    real = [x for x in found if not x.startswith("SystemError: <Boost.Python")]
    return (real or found or [None])[0]


def invalid_finding(child: ChildResult, log_text: str, log_path: Path, timed_out: bool) -> Finding:
    """`net-invalid` (or `probe-timeout`) from a child that ended without its JSON."""
    stage, marked = _last_mark(log_text)
    if timed_out:
        return Finding(
            "warning",
            "probe-timeout",
            marked,
            f"the dynamic check did not finish in time (last step: {stage} {marked}).",
            "run it with a longer timeout, or a smaller input/batch for the check",
            {"log": str(log_path)},
        )
    quoted = re.search(r"layer '([^']+)'", child.fatal or "")
    layer = quoted.group(1) if quoted else (marked if stage in ("forward", "backward") else child.layer)
    if child.fatal:
        message = f"Caffe cannot run this net: {child.fatal} ({child.fatal_source})"
    else:
        err = _python_error(log_text)
        how = f"signal {child.signal_name}" if child.signal_name else f"exit code {child.returncode}"
        message = f"the net could not be built or run ({how})" + (f": {err}" if err else "")
    where = f" while {'setting up' if stage == 'build' else f'{stage} of'} '{layer}'" if layer else ""
    return Finding(
        "error",
        "net-invalid",
        layer,
        message + where + ".",
        _hint(child.fatal or message),
        {"log": str(log_path), "returncode": child.returncode, "fatal_source": child.fatal_source},
    )


def probe(
    prototxt: str, *, weights: str | None = None, log_dir: str | None = None, timeout: float = 600, surgery: bool = True
) -> tuple[dict[str, Any] | None, Finding | None]:
    """Run the probe in a child; (statistics, None) or (None, the finding that says why not)."""
    log_path = Path(log_dir or tempfile.mkdtemp(prefix="segorch-probe-")) / "probe.log"
    args = ["-m", "nets.probe", str(Path(prototxt).resolve())]
    if weights:
        args += ["--weights", str(Path(weights).resolve())]
    if not surgery:
        args.append("--no-surgery")
    env = dict(
        os.environ,
        GLOG_minloglevel="0",
        GLOG_logtostderr="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    start = log_path.stat().st_size if log_path.exists() else 0
    child, out = run_child(args, log_path, timeout=timeout, env=env)
    lines = [x for x in out.splitlines() if x.startswith("{")]
    if child.returncode == 0 and lines:
        return json.loads(lines[-1]), None
    with open(log_path, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    timed_out = child.returncode in (-9, 137) and child.fatal is None
    return None, invalid_finding(child, text, log_path, timed_out)


def _is_loss_or_metric(layer_type: str) -> bool:
    return layer_type in SKIP_DEAD or layer_type.endswith("Loss")


def _is_zero(s: dict[str, Any]) -> bool:
    return s["finite"] and s["count"] > 0 and s["asum"] == 0


def findings_from_stats(
    stats: dict[str, Any],
    net: Any,
    *,
    zero_output: frozenset[str] = frozenset(),
    no_gradient: frozenset[str] = frozenset(),
) -> list[Finding]:
    """dead-top, non-finite and zero-gradient findings from the probe's statistics; each
    names the first layer where the problem appears, not the layers it spreads to. Zeros the
    static analysis explains (`nets.zeroinit.Flow`: zero-initialised layers, on purpose or
    not) are its findings, not these: `zero_output` layers output zeros at the first step,
    `no_gradient` layers get no gradient at the first step."""
    out: list[Finding] = _surgery_findings(stats, net) + _label_findings(stats)
    # a label of zeros is class 0 everywhere (a label cropped to a background corner), not a dead layer
    labels = set(label_inputs(net, stats.get("phase", "TRAIN")))
    zero: dict[str, bool] = {}
    bad: dict[str, bool] = {}
    for layer in stats["layers"]:
        bottoms = layer["bottoms"]
        signal = signal_bottoms(layer["type"], bottoms)
        for top, s in layer["tops"].items():
            inherited_bad = any(bad.get(b) for b in bottoms)
            if not s["finite"] and not inherited_bad:
                out.append(
                    Finding(
                        "error",
                        "non-finite",
                        layer["name"],
                        f"'{layer['name']}' ({layer['type']}) produces NaN or Inf in '{top}' on a real "
                        "batch, from finite inputs: everything after it is NaN too.",
                        "check its weights (a weights file with NaN?), divisions or logs of zero, "
                        "labels outside [0, classes) without ignore_label, or lower base_lr",
                        {"blob": top},
                    )
                )
            elif (
                _is_zero(s)
                and signal
                and not _is_loss_or_metric(layer["type"])
                and not all(zero.get(b, False) for b in signal)
                and not inherited_bad
                and layer["name"] not in zero_output
                and top not in labels
            ):
                out.append(
                    Finding(
                        "error",
                        "dead-top",
                        layer["name"],
                        f"'{layer['name']}' ({layer['type']}) outputs all zeros in '{top}' on a real "
                        "batch although its input is not zero: nothing passes to the layers above it "
                        "and no gradient to the layers below.",
                        "a zero-initialised layer (weight_filler), or a ReLU whose inputs are all "
                        "negative (input scale, mean subtraction, a diverged step): fix the filler "
                        "or the input, lower base_lr",
                        {"blob": top},
                    )
                )
            zero[top] = _is_zero(s)
            bad[top] = not s["finite"] or inherited_bad
    for skipped in stats.get("weights", {}).get("skipped", []):
        out.append(
            Finding(
                "warning",
                "weights-skipped",
                skipped["layer"],
                f"the weights file has a layer '{skipped['layer']}' that does not fit the net "
                f"({skipped['reason']}): it is not loaded and the layer starts from its filler.",
                "rename the layer if it is meant to be learned from scratch (Caffe's own copy_from "
                "aborts on it), or fix its num_output / bias_term",
                dict(skipped),
            )
        )
    if stats.get("backward") and any(x["type"].endswith("Loss") for x in stats["layers"]):
        # without a loss nothing sends gradients: zero diffs would say nothing
        out += _gradient_findings(stats, net, no_gradient)
    return out


def _label_findings(stats: dict[str, Any]) -> list[Finding]:
    """Labels on the real batch that Caffe's loss cannot take (the probe replaced them)."""
    out = []
    for blob, bad in stats.get("labels", {}).items():
        reader, ignore = bad["readers"][0], bad["ignore"]
        values = ", ".join(f"{v:g}" for v in bad["values"])
        out.append(
            Finding(
                "error",
                "label-out-of-range",
                reader,
                f"the batch's labels in '{blob}' hold {values} ({bad['count']} pixels), outside the "
                f"{bad['classes']} classes '{reader}' scores"
                + (f" and not its ignore_label {ignore}" if ignore is not None else " (it has no ignore_label)")
                + ": Caffe's loss reads past its probabilities for them (a garbage loss and gradients, "
                "or a segfault). The check replaced them to go on.",
                "if one of them marks unlabelled pixels, set loss_param { ignore_label: V } (and "
                "accuracy_param); else set num_output to the number of classes. `orchestrate check "
                "--data DIR` compares the net with the data stage's stats.json",
                dict(bad, blob=blob),
            )
        )
    return out


def _surgery_findings(stats: dict[str, Any], net: Any) -> list[Finding]:
    """What the run's bilinear surgery could not do on the built net (it never raises): an
    error where the layer is frozen (lr_mult 0) and so stays at its filler."""
    layers = {x.name: x for x in net.layer}
    return [
        Finding(
            "error" if r["layer"] in layers and lr_mults(layers[r["layer"]], 1)[0] == 0 else "warning",
            "deconv-group",
            r["layer"],
            f"the run's bilinear surgery cannot fill '{r['layer']}' ({r['reason']}): it starts from its "
            "filler instead.",
            r["fix"],
            {"surgery": "refused"},
        )
        for r in stats.get("surgery", {}).get("refused", [])
    ]


def _gradient_findings(stats: dict[str, Any], net: Any, no_gradient: frozenset[str]) -> list[Finding]:
    layers = {x.name: x for x in in_phase(net, stats.get("phase", "TRAIN"))}
    out = []
    for name, blobs in stats["params"].items():
        layer = layers.get(name)
        if layer is None or layer.type == "BatchNorm" or name in no_gradient:
            continue
        mults = lr_mults(layer, len(blobs))
        nonfinite = [j for j, b in enumerate(blobs) if not b["diff"]["finite"] or not b["data"]["finite"]]
        dead = [j for j, b in enumerate(blobs) if mults[j] != 0 and _is_zero(b["diff"])]
        if nonfinite:
            out.append(
                Finding(
                    "error",
                    "non-finite",
                    name,
                    f"'{name}' has NaN or Inf in its weights or their gradients (blobs {nonfinite}).",
                    "check the weights file and lower base_lr",
                    {"blobs": nonfinite},
                )
            )
        elif dead and 0 in dead:
            out.append(
                Finding(
                    "warning",
                    "zero-gradient",
                    name,
                    f"the gradient of '{name}' ({layer.type}) weights is exactly zero after a "
                    "backward pass on a real batch: this layer cannot learn (zero weights above or "
                    "below it, dead ReLUs, or every pixel ignored).",
                    "give the layers an explicit non-zero weight_filler and check that labels are not all ignore_label",
                    {"blobs": dead},
                )
            )
    return out


def loss_input_size(stats: dict[str, Any]) -> tuple[int | None, int | None]:
    """(pixels, batch) of the scores the first class loss reads, from the probe."""
    shapes = {t: s["shape"] for layer in stats["layers"] for t, s in layer["tops"].items()}
    for layer in stats["layers"]:
        if layer["type"] in CLASS_LOSSES and layer["bottoms"]:
            shape = shapes.get(layer["bottoms"][0])
            if shape and len(shape) == 4:
                return shape[2] * shape[3], shape[0]
    return None, None
