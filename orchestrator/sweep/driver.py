"""`orchestrate sweep sweep.yaml [--address ADDR] [--max-concurrent N] [--out DIR]` and
`orchestrate sweep --resume DIR`: trials of one base experiment on Ray Tune, each a normal run
directory under the sweep folder, the doctor once per distinct net before any trial starts,
and a results table. Trials that fail or diverge are recorded and never stop the sweep.

The sweep folder: `sweep.yaml` (the resolved sweep and its trials), `trials/trial_NNN.yaml`
(each trial's resolved experiment), `trials/trial_NNN/` (its run dir), `trials/trial_NNN.log`
(its console), `results.csv`, `summary.json` (the best trial), `ray/` (Tune's own files).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from common.errors import UserError
from common.findings import Finding, has_errors
from orchestrator.config import experiment as cfgmod
from orchestrator.config import yamlio
from orchestrator.config.schema import to_dict
from orchestrator.contract import EXIT_BAD_INPUT, EXIT_OK
from orchestrator.rundir import RunDir
from orchestrator.runs_table import run_row
from orchestrator.sweep import sweepfile as sc
from orchestrator.sweep.address import check_address, describe, resolve_address
from orchestrator.sweep.watch import TrialWatch

MARKER = ".segorch-sweep"


def _net_key(exp: cfgmod.Experiment) -> str:
    """What the doctor judges: the net, its data, its weights and surgery (not the solver)."""
    d = to_dict(exp)
    return json.dumps({k: d[k] for k in ("net", "data", "weights", "surgery")}, sort_keys=True)


def doctor_once_per_net(exps: list[cfgmod.Experiment]) -> list[Finding]:
    """Pre-flight each distinct net once; the error findings, naming the trials they concern."""
    from orchestrator.run.runner import prepare

    seen: dict[str, list[int]] = {}
    for i, exp in enumerate(exps):
        seen.setdefault(_net_key(exp), []).append(i)
    errors = []
    for ids in seen.values():
        with tempfile.TemporaryDirectory(prefix="sweep-check-") as tmp:
            _, findings = prepare(exps[ids[0]], tmp, fresh=True)
        if has_errors(findings):
            which = ", ".join(f"trial_{i:03d}" for i in ids)
            errors += [
                Finding(f.severity, f.code, f.layer, f"{f.message} (trials {which})", f.fix)
                for f in findings
                if f.severity == "error"
            ]
    return errors


def write_plan(out: Path, cfg: sc.SweepCfg, trials: list[dict[str, Any]], exps: list[cfgmod.Experiment]) -> None:
    """The sweep folder with the resolved sweep and each trial's experiment."""
    (out / "trials").mkdir(parents=True)
    (out / MARKER).write_text("orchestrate sweep\n")
    for i, exp in enumerate(exps):
        (out / "trials" / f"trial_{i:03d}.yaml").write_text(cfgmod.to_yaml(exp))
    plan = {
        "sweep": to_dict(cfg),
        "trials": [
            {"id": f"trial_{i:03d}", "overrides": t, "gpu": e.gpu_id is not None}
            for i, (t, e) in enumerate(zip(trials, exps, strict=True))
        ],
    }
    (out / "sweep.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))


def _scheduler(sched: dict[str, Any], exps: list[cfgmod.Experiment]) -> Any:
    """ASHA over validations (Tune's training_iteration), or None."""
    if sched["type"] == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    max_t = max(max(1, e.solver.max_iter // e.validation.interval) for e in exps)
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=max_t,
        grace_period=sched["grace_period"],
        reduction_factor=sched["reduction_factor"],
    )


RAY_START_TRIES = 3
RAY_RETRY_PAUSE_S = 2.0  # times the try's number


def _start_ray(ray: Any, address: str, tries: int = RAY_START_TRIES) -> None:
    """ray.init, tried again on a busy machine: a local Ray gives its raylet a fixed 30 s to
    register, and two busy cores can miss it (seen under a loaded test suite). What still fails
    is said as the user's problem to solve, never a traceback."""
    for attempt in range(1, tries + 1):
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            return
        except Exception as e:
            if "timed out during startup" not in str(e):
                raise
            ray.shutdown()
            if attempt == tries:
                raise UserError(
                    f"Ray's local node did not start in time, {tries} tries ({e})",
                    "the machine is too busy: retry when it is less loaded, or start Ray yourself "
                    "(ray start --head --num-cpus N) and pass --address 127.0.0.1:PORT",
                ) from None
            print(f"Ray did not start in time (try {attempt} of {tries}); trying again", flush=True)
            time.sleep(RAY_RETRY_PAUSE_S * attempt)


def run_trials(
    out: Path, plan: dict[str, Any], ids: list[str], where: tuple[str, str], max_concurrent: int | None
) -> None:
    """Run the named trials on Ray Tune at `where` (resolve_address: address, its source)."""
    import ray
    from ray import tune

    from orchestrator.sweep.trial import _trainable_class

    cfg = plan["sweep"]
    gpu = {t["id"]: t["gpu"] for t in plan["trials"]}
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    print(f"starting Ray ({describe(*where)}) ...", flush=True)
    # Ray's notice that a local cluster uses token authentication is for Ray's own CLI users
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    _start_ray(ray, where[0])
    try:
        cpus = float(cfg["resources"]["cpus"])
        trainable = tune.with_resources(
            _trainable_class(), lambda c: tune.PlacementGroupFactory([{"CPU": cpus, "GPU": 1 if gpu[c["id"]] else 0}])
        )
        space = {
            "id": tune.grid_search(ids),
            "folder": str(out),
            "metric": cfg["metric"],
            "mode": cfg["mode"],
            "cpus": cpus,
            "gpu": gpu,
        }
        exps = [cfgmod.from_dict(yaml.safe_load((out / "trials" / f"{i}.yaml").read_text())) for i in ids]
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                metric=cfg["metric"],
                mode=cfg["mode"],
                scheduler=_scheduler(cfg["scheduler"], exps),
                max_concurrent_trials=max_concurrent or cfg.get("max_concurrent"),
            ),
            run_config=tune.RunConfig(
                name="tune", storage_path=str(out / "ray"), verbose=0, failure_config=tune.FailureConfig(max_failures=0)
            ),
        )
        print(f"running {len(ids)} trial(s); each trial's console: {out / 'trials'}/trial_NNN.log", flush=True)
        with TrialWatch(out, ids):
            tuner.fit()
    finally:
        ray.shutdown()
        _no_colour_reset_at_exit()


def _no_colour_reset_at_exit() -> None:
    """Ray's CLI logger calls colorama.init(), whose exit hook writes ESC[0m to a terminal: a
    stray escape code after the sweep's table."""
    import atexit

    for name, mod in list(sys.modules.items()):
        if name.endswith("colorama.initialise") and hasattr(mod, "reset_all"):
            atexit.unregister(mod.reset_all)


def results(out: Path, plan: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per trial from its run dir's summary.json (never from Tune's logs)."""
    rows = []
    for t in plan["trials"]:
        row = run_row(out / "trials" / t["id"]) | {"trial": t["id"], "overrides": sc.describe(t["overrides"])}
        s = RunDir(out / "trials" / t["id"]).summary_data()
        row["stop_reason"] = s.get("stop_reason")
        row["status"] = s.get("status", "not run")
        rows.append(row)
    return rows


def write_results(out: Path, plan: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """results.csv, summary.json (the best trial) and the console table; returns the best row."""
    cols = ["trial", "overrides", "status", "best_miou", "best_iter", "iterations", "seconds", "stop_reason"]
    tmp = out / "results.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(out / "results.csv")
    sign = 1 if plan["sweep"]["mode"] == "max" else -1
    scored = [r for r in rows if r["best_miou"] is not None]
    best = max(scored, key=lambda r: sign * r["best_miou"]) if scored else None
    (out / "summary.json").write_text(
        json.dumps(
            {
                "metric": plan["sweep"]["metric"],
                "trials": len(rows),
                "status": {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})},
                "best": best
                and {
                    "trial": best["trial"],
                    "run_dir": str(out / "trials" / best["trial"]),
                    "value": best["best_miou"],
                    "iteration": best["best_iter"],
                    "overrides": best["overrides"],
                },
            },
            indent=2,
        )
    )
    width = max(len(r["overrides"]) for r in rows)
    print(f"\n{'trial':<10} {'overrides':<{width}}  {'status':<13} {'best':>7} {'at':>6} {'time':>7}")
    for r in sorted(rows, key=lambda r: (r["best_miou"] is None, -sign * (r["best_miou"] or 0))):
        v = "-" if r["best_miou"] is None else f"{r['best_miou']:.4f}"
        sec = "-" if r["seconds"] is None else f"{r['seconds']:.0f}s"
        print(
            f"{r['trial']:<10} {r['overrides']:<{width}}  {r['status']:<13} {v:>7} {r['best_iter'] or '-':>6} {sec:>7}"
        )
    if best:
        print(
            f"best: {best['trial']} ({best['overrides']}) {plan['sweep']['metric']} {best['best_miou']:.4f}"
            f" -> {out / 'trials' / best['trial']}"
        )
    return best


def sweep(
    path: str | None,
    *,
    address: str | None = None,
    max_concurrent: int | None = None,
    out: str | None = None,
    resume: str | None = None,
) -> int:
    """Plan (or reload), check, run the unfinished trials, write the results; exit code."""
    from orchestrator.sweep.trial import final_status

    where = resolve_address(address)
    check_address(*where)
    if resume:
        folder = Path(resume).resolve()
        if not (folder / MARKER).exists():
            raise UserError(f"{folder} is not a sweep folder (no {MARKER})", "give the folder orchestrate sweep wrote")
        plan = yamlio.load_mapping(folder / "sweep.yaml", "sweep plan", "give the folder orchestrate sweep wrote")
        if not isinstance(plan.get("trials"), list):
            raise UserError(f"{folder / 'sweep.yaml'}: no list of trials", "give the folder orchestrate sweep wrote")
    else:
        if path is None:
            raise UserError("sweep needs a sweep file or --resume DIR", "orchestrate sweep sweep.yaml")
        cfg = sc.load_sweep(path)
        trials = sc.plan_trials(cfg)
        exps = sc.trial_experiments(cfg, trials)
        folder = Path(out or f"sweeps/{cfg.name}").resolve()
        if folder.exists() and any(folder.iterdir()):
            raise UserError(
                f"{folder} already exists", f"continue it with orchestrate sweep --resume {folder}, or choose --out"
            )
        print(
            f"sweep {cfg.name}: {len(trials)} trial(s); checking {len({_net_key(e) for e in exps})} distinct net(s) "
            "with the doctor ...",
            flush=True,
        )
        errors = doctor_once_per_net(exps)
        if errors:
            print("\n".join(str(f) for f in errors), file=sys.stderr)
            print(f"\nsweep stopped before any trial: the doctor found {len(errors)} error(s)", file=sys.stderr)
            return EXIT_BAD_INPUT
        write_plan(folder, cfg, trials, exps)
        plan = yaml.safe_load((folder / "sweep.yaml").read_text())
    todo = [t["id"] for t in plan["trials"] if final_status(str(folder / "trials" / t["id"])) is None]
    done = len(plan["trials"]) - len(todo)
    print(f"{folder}: {len(todo)} trial(s) to run" + (f", {done} finished (kept)" if done else ""), flush=True)
    if todo:
        run_trials(folder, plan, todo, where, max_concurrent)
    write_results(folder, plan, results(folder, plan))
    return EXIT_OK
