"""`orchestrate fix`: the doctor's findings turned into edits of the parsed net and solver.

`fix_net` repeats (static doctor -> repairs for the findings it has not tried yet) until nothing
new is repairable, so a repair that uncovers or settles another finding is taken into account
(filling the convolutions under a zero-filled classifier lets that classifier learn as FCN's
do, so it is left at zero). Only errors and warnings are repaired: an info finding describes a
net that works. Fixing a fixed net changes nothing. Pure: messages in, messages and Changes out.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from typing import Any

from common.findings import SEVERITIES, Finding
from nets import fix_data, fix_rules, lossnorm
from nets.fix_rules import Change, FixContext, Repair
from nets.graph import in_phase, loss_layers, score_path

REPAIRS: dict[str, Repair] = {
    "zero-init": fix_rules.repair_zero_init,
    "bn-phase-duplicate": fix_rules.repair_bn_phase_duplicate,
    "bn-global-stats": fix_rules.repair_bn_global_stats,
    "bn-lr-mult": fix_rules.repair_bn_lr_mult,
    "bn-without-scale": fix_rules.repair_bn_without_scale,
    "deconv-group": fix_rules.repair_deconv,
    "deconv-not-bilinear": fix_rules.repair_deconv,
    "loss-normalization-lr": fix_rules.repair_loss_normalization,
    "ignore-label-mismatch": fix_data.repair_ignore_label,
    "num-output-mismatch": fix_data.repair_num_output,
    "class-imbalance": fix_data.repair_class_imbalance,
    "label-transform": fix_data.repair_label_transform,
    "unsynced-augmentation": fix_data.repair_unsynced_augmentation,
}
MAX_ROUNDS = 8
BACKBONE = (
    "the net is built on a pretrained backbone: pass its weights (--weights), then FCN's zero-filled layers learn"
)


@dataclass
class FixResult:
    """The fixed messages, what changed, and what the static doctor still says about them."""

    net: Any
    solver: Any
    changes: list[Change]
    left: list[Finding]
    declined: dict[tuple[str, str | None], str] = field(default_factory=dict)
    files: dict[str, list[float]] = field(default_factory=dict)


def static_findings(net: Any, fx: FixContext) -> list[Finding]:
    """The doctor's rules that need no Caffe run, over the net and the solver being edited."""
    from nets.doctor import static_findings as rules

    ctx = replace(fx.ctx, solver=fx.solver)
    found = rules(net, ctx) + lossnorm.check_loss_normalization(net, ctx)
    return sorted(found, key=lambda f: SEVERITIES.index(f.severity))


def _classifiers(net: Any) -> set[str]:
    """Layers that make the class scores a TRAIN loss reads."""
    layers = in_phase(net, "TRAIN")
    return {layers[p].name for i in loss_layers(layers) for p in score_path(layers, i)}


def _todo(net: Any, findings: list[Finding], tried: set[tuple[str, str | None]], fx: FixContext) -> list[Finding]:
    """This round's repairs: untried errors and warnings with a repair; zero-init left alone on
    a pretrained backbone, and on a classifier while layers below it are repaired first."""
    todo = [f for f in findings if f.severity != "info" and f.code in REPAIRS and (f.code, f.layer) not in tried]
    if any(f.code == "zero-init" and f.data.get("reason") == "pretrained-backbone" for f in findings):
        for f in todo:
            if f.code == "zero-init":
                fx.declined[(f.code, f.layer)] = BACKBONE
        return [f for f in todo if f.code != "zero-init"]
    zero = [f for f in todo if f.code == "zero-init"]
    heads = _classifiers(net)
    if any(f.layer not in heads for f in zero):
        todo = [f for f in todo if f.code != "zero-init" or f.layer not in heads]
    return todo


def fix_net(net: Any, fx: FixContext) -> FixResult:
    """Repair a copy of `net` (and of `fx.solver`, edited in place: pass a copy)."""
    from caffe.proto import caffe_pb2

    fixed = caffe_pb2.NetParameter()
    fixed.CopyFrom(net)
    tried: set[tuple[str, str | None]] = set()
    changes: list[Change] = []
    first = static_findings(fixed, fx)
    fx.fine_tuning = bool(fx.ctx.weight_layers) or any(f.data.get("reason") == "pretrained-backbone" for f in first)
    for _ in range(MAX_ROUNDS):
        todo = _todo(fixed, static_findings(fixed, fx), tried, fx)
        if not todo:
            break
        for f in todo:
            tried.add((f.code, f.layer))
            changes += REPAIRS[f.code](fixed, f, fx)
    return FixResult(fixed, fx.solver, changes, static_findings(fixed, fx), fx.declined, fx.files)


def net_text(net: Any, header: str = "") -> str:
    """Prototxt text of a message, after the user's leading comment lines."""
    from google.protobuf import text_format

    return header + text_format.MessageToString(net)


def leading_comments(text: str) -> str:
    """The comment lines at the top of a prototxt (a `# segorch-meta:` header among them)."""
    lines = []
    for line in text.splitlines(keepends=True):
        if not line.strip().startswith("#"):
            break
        lines.append(line if line.endswith("\n") else line + "\n")
    return "".join(lines)


def unified_diff(before: str, after: str, name_before: str, name_after: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), name_before, name_after))


def _entry(c: Change) -> str:
    where = f" `{c.layer}`" if c.layer else ""
    return f"- **{c.code}**{where}: `{c.before}` -> `{c.after}`\n  why: {c.why}\n"


def changes_md(result: FixResult, source: str, remaining: list[Finding]) -> str:
    """changes.md: one entry per change, then what was not repaired with the doctor's advice,
    then what the doctor says about the fixed net."""
    out = [f"# orchestrate fix: {source}\n\n## Changes ({len(result.changes)})\n\n"]
    out += [_entry(c) for c in result.changes] or ["(none: nothing the fix repairs was found)\n"]
    changed = {(c.code, c.layer) for c in result.changes}
    left = [f for f in remaining if f.severity != "info" and (f.code, f.layer) not in changed]
    out.append("\n## Not repaired\n\n")
    for f in left:
        reason = result.declined.get((f.code, f.layer)) or (
            "no repair for this code" if f.code not in REPAIRS else "the repair did not apply here"
        )
        where = f" [{f.layer}]" if f.layer else ""
        out.append(f"- not repaired: {f.severity} {f.code}{where} ({reason}): {f.message}\n  advice: {f.fix}\n")
    if not left:
        out.append("(nothing: no error or warning is left)\n")
    infos = [f for f in remaining if f.severity == "info"]
    if infos:
        out.append("\n## Left as is (info: the net works)\n\n")
        out += [f"- {f.code} [{f.layer}]: {f.message}\n" for f in infos]
    return "".join(out)
