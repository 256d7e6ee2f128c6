"""The doctor: reads any Caffe net (generated or the user's own) and reports the classic
mistakes as findings, first from the prototxt alone (pure rules over NetParameter), then from
one forward/backward pass in a child process (the dynamic check).

    diagnose(train_prototxt, val_prototxt=..., solver=..., weights=..., data_stats=...)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from common.findings import SEVERITIES, Finding
from nets import forks, lossnorm, rules_balance, rules_data, rules_params, zeroinit
from nets.graph import Context
from nets.prototxt import load_net, load_solver, read_meta, weight_layer_info

Rule = Callable[[Any, Context], list[Finding]]
LABEL_RANGE = ("ignore-label-mismatch", "num-output-mismatch")
# every static rule, in report order; each is a pure function tests can drive
STATIC_RULES: tuple[Rule, ...] = (
    forks.check_fork_layers,
    rules_params.check_zero_init,
    rules_params.check_deconv,
    rules_params.check_batchnorm,
    rules_data.check_num_output,
    rules_data.check_ignore_label,
    rules_data.check_augmentation,
    rules_data.check_infogain_input,
    rules_data.check_validation,
    rules_balance.check_class_balance,
)
# the val net shares the train net's weights and trains nothing itself
VAL_RULES: tuple[Rule, ...] = (
    forks.check_fork_layers,
    rules_params.check_deconv,
    rules_params.check_batchnorm,
    rules_data.check_num_output,
    rules_data.check_ignore_label,
    rules_data.check_augmentation,
)


def legacy_findings(net: Any) -> list[Finding]:
    """V1 `layers` nets: the rules read the current `layer` format only."""
    if len(net.layers) and not len(net.layer):
        return [
            Finding(
                "warning",
                "legacy-format",
                None,
                "the net uses the old V1 'layers' format: the static rules read only the "
                "current 'layer' format, so they checked nothing.",
                "upgrade it with Caffe's tool: upgrade_net_proto_text OLD.prototxt NEW.prototxt",
            )
        ]
    return []


def static_findings(net: Any, ctx: Context, rules: tuple[Rule, ...] = STATIC_RULES) -> list[Finding]:
    """All static rules over one parsed net."""
    out = legacy_findings(net)
    for rule in rules:
        out += rule(net, ctx)
    return out


def build_context(
    net: Any,
    meta: dict[str, Any],
    data_stats: dict[str, Any] | None,
    solver: Any,
    weights: str | None,
    has_val: bool,
    surgery: bool,
) -> Context:
    stats = data_stats or {}
    pixels, batch = lossnorm.input_size(net, data_stats)
    # without stats.json, an ignore label the run was configured with (meta) is the reference
    known_ignore = data_stats is not None or meta.get("ignore_label") is not None
    given, zero = weight_layer_info(weights) if weights else (set(), set())
    return Context(
        num_classes=stats.get("num_classes") or meta.get("num_classes"),
        ignore_label=stats["ignore_label"] if "ignore_label" in stats else meta.get("ignore_label"),
        stats_given=known_ignore,
        weight_layers=frozenset(given),
        zero_weight_layers=frozenset(zero),
        solver=solver,
        has_val_net=has_val,
        pixels=pixels,
        batch=batch,
        meta=meta,
        surgery=surgery,
        class_weights=tuple(float(w) for w in (stats.get("class_weights") or {}).get("median_frequency") or ()),
        class_names=tuple(str(n) for n in (stats.get("class_names") or meta.get("class_names") or ())),
    )


def diagnose(
    train_prototxt: str,
    *,
    val_prototxt: str | None = None,
    solver: str | None = None,
    weights: str | None = None,
    data_stats: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    dynamic: bool = True,
    log_dir: str | None = None,
    timeout: float = 600,
    surgery: bool = True,
) -> list[Finding]:
    """Findings for a net, errors first. `meta` defaults to the prototxt's `# segorch-meta:`
    header; `data_stats` is the data stage's stats.json; the dynamic check (one
    forward/backward in a child, log under `log_dir`) runs when `dynamic` is true; `surgery`
    says whether the run's bilinear surgery fills the upsampling layers (surgery.bilinear).
    Raises UserError for a missing, empty, binary or unparsable file and for a fork's net."""
    net = load_net(train_prototxt)
    meta = dict(meta if meta is not None else (read_meta(Path(train_prototxt).read_text()) or {}))
    solver_param = load_solver(solver) if solver else None
    val_net = load_net(val_prototxt) if val_prototxt else None
    # a fork's layer types parse (they are strings) but no BVLC Caffe builds them: all at once
    for path in filter(None, (train_prototxt, val_prototxt)):
        if hits := forks.scan(Path(path).read_text()):
            raise forks.fork_error(path, hits)
    ctx = build_context(net, meta, data_stats, solver_param, weights, val_net is not None, surgery)
    findings = static_findings(net, ctx)
    if val_net is not None:
        train_layers = frozenset(x.name for x in net.layer)
        val_ctx = replace(ctx, weight_layers=ctx.weight_layers | train_layers)
        findings += [
            f
            for f in static_findings(val_net, val_ctx, VAL_RULES)
            if (f.code, f.layer) not in {(g.code, g.layer) for g in findings}
        ]
    # a net this Caffe cannot build (a fork's layers) has nothing to probe
    if dynamic and not any(f.code == "fork-layer" for f in findings):
        from nets import dynamic as dyn

        stats, failure = dyn.probe(train_prototxt, weights=weights, log_dir=log_dir, timeout=timeout, surgery=surgery)
        if failure is not None:
            findings.append(failure)
        elif stats is not None:  # the probe returns one of the two
            flow = zeroinit.analyse(net, ctx)
            seen = {(f.code, f.layer) for f in findings}
            # the static label-range errors already say what the batch's bad labels show
            static_range = any(f.code in LABEL_RANGE and f.severity == "error" for f in findings)
            findings += [
                f
                for f in dyn.findings_from_stats(stats, net, zero_output=flow.zero_output, no_gradient=flow.no_gradient)
                if (f.code, f.layer) not in seen and not (static_range and f.code == "label-out-of-range")
            ]
            pixels, batch = dyn.loss_input_size(stats)
            if pixels:
                ctx = replace(ctx, pixels=pixels, batch=batch)
    findings += lossnorm.check_loss_normalization(net, ctx)
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


def format_findings(findings: list[Finding]) -> str:
    """Console text: one block per finding, errors first, and a count line."""
    if not findings:
        return "no findings: the net looks fine"
    ordered = sorted(findings, key=lambda f: SEVERITIES.index(f.severity))
    counts = {s: sum(1 for f in findings if f.severity == s) for s in SEVERITIES}
    blocks = [str(f) for f in ordered]
    summary = ", ".join(f"{n} {s}{'s' if n != 1 and s != 'info' else ''}" for s, n in counts.items() if n)
    return "\n".join(blocks + [summary])
