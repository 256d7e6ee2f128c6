"""The sweep file (`orchestrate sweep sweep.yaml`): a base experiment, a search space over its
dotted keys, and how to run the trials. Strict like the experiment schema; every trial's
experiment is validated by that schema before anything starts. Pure, apart from reading files.

    name: demo-lr
    base: experiments/demo.yaml
    space:
      solver.base_lr: {grid: [0.001, 0.002]}
      net.width: {choice: [8, 16]}
      solver.weight_decay: {loguniform: [1.0e-5, 1.0e-3]}
    samples: 2                  # random draws per grid point
    scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

from common.errors import UserError
from orchestrator.config import experiment as cfgmod
from orchestrator.config import schema, yamlio
from orchestrator.config.schema import Limits, rule
from orchestrator.contract import MetricName

Count = Annotated[int, Limits(ge=1)]
SWEEP_NAME_BYTES = cfgmod.NAME_BYTES - 4  # its trials are named <name>-NNN, which must be a plain name too
PlainName = Annotated[
    str,
    schema.Check(
        lambda text: cfgmod.is_plain_name(text, SWEEP_NAME_BYTES),
        f"a plain name (letters, digits, '.', '_', '-'; it names the folder), at most {SWEEP_NAME_BYTES} UTF-8 bytes",
    ),
]
KINDS = ("grid", "choice", "uniform", "loguniform")
MAX_TRIALS = 10_000  # each trial is a training run: more is a typo (a grid product), never a plan


@dataclass
class ParamCfg:
    """One dimension: exactly one of grid (every value), choice (one drawn per sample), or a
    uniform / log-uniform range [low, high] (one drawn per sample)."""

    key: str
    grid: list[Any] | None = None
    choice: list[Any] | None = None
    uniform: list[float] | None = None
    loguniform: list[float] | None = None

    @rule("grid", "choice", "uniform", "loguniform")
    def _one_kind(self) -> str | None:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            return f"give exactly one of {', '.join(KINDS)} for {self.key}, got {given or 'none'}"
        values = getattr(self, given[0])
        if given[0] in ("grid", "choice") and not values:
            return f"{given[0]} for {self.key} needs at least one value"
        if given[0] in ("uniform", "loguniform"):
            if len(values) != 2 or not values[0] < values[1]:
                return f"{given[0]} for {self.key} needs [low, high] with low < high, got {values}"
            if given[0] == "loguniform" and values[0] <= 0:
                return f"loguniform for {self.key} needs low > 0, got {values[0]}"
        return None


@dataclass
class SchedulerCfg:
    """`asha`: Ray Tune's ASHA stops trials whose metric trails at a rung (rungs count
    validations); `none`: every trial runs to its end."""

    type: Literal["none", "asha"] = "none"
    grace_period: Count = 1
    reduction_factor: Annotated[float, Limits(gt=1)] = 2.0


@dataclass
class ResourcesCfg:
    """Per trial. CPUs also set the trial's BLAS threads; a trial whose device is gpu gets one GPU."""

    cpus: Annotated[float, Limits(gt=0)] = 1.0


@dataclass
class SweepCfg:
    name: PlainName
    base: str
    space: list[ParamCfg]
    samples: Count = 1
    seed: Annotated[int, Limits(ge=0)] = 0
    metric: MetricName = "mean_iu"
    mode: Literal["max", "min"] = "max"
    resources: ResourcesCfg = field(default_factory=ResourcesCfg)
    max_concurrent: Count | None = None
    scheduler: SchedulerCfg = field(default_factory=SchedulerCfg)
    set: list[str] = field(default_factory=list)  # fixed overrides for every trial


def _space_as_list(raw: dict[str, Any]) -> None:
    """Accept `space: {key: {grid: [...]}}` (Ray Tune's param_space shape) as well as a list."""
    space = raw.get("space")
    if isinstance(space, dict):
        raw["space"] = [{"key": k, **v} if isinstance(v, dict) else {"key": k, "grid": v} for k, v in space.items()]


def load_sweep(path: str | Path) -> SweepCfg:
    """Read and check a sweep file; UserError listing every problem."""
    p = Path(path)
    raw = yamlio.load_mapping(p, "sweep file", "give the path of a sweep YAML (see README, Sweeps)")
    _space_as_list(raw)
    errors: list[str] = []
    cfg = schema.load(SweepCfg, raw, "", errors)
    if errors:
        raise UserError(
            f"{p}: {len(errors)} problem(s) in the sweep:" + yamlio.problem_list(errors), "correct the keys named above"
        )
    return cfg


def _draw(param: ParamCfg, rng: np.random.RandomState) -> Any:
    if param.choice is not None:
        return param.choice[rng.randint(len(param.choice))]
    if param.uniform is not None:
        lo, hi = param.uniform
        return float(rng.uniform(lo, hi))
    assert param.loguniform is not None  # the schema's rule: exactly one kind per dimension
    lo, hi = param.loguniform
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def plan_trials(cfg: SweepCfg) -> list[dict[str, Any]]:
    """Each trial's overrides (dotted key -> value): the grid's product, times `samples`
    random draws of the other dimensions; the same seed gives the same trials."""
    rng = np.random.RandomState(cfg.seed)
    grid = [p for p in cfg.space if p.grid is not None]
    drawn = [p for p in cfg.space if p.grid is None]
    count = math.prod(len(p.grid or ()) for p in grid) * (cfg.samples if drawn else 1)
    if count > MAX_TRIALS:
        raise UserError(
            f"the sweep {cfg.name} would have {count} trials (grid points x samples), more than {MAX_TRIALS}",
            "shorten the grids or lower samples; draw values with choice/uniform instead of a full grid",
        )
    trials = []
    for point in itertools.product(*[p.grid for p in grid if p.grid is not None]) if grid else [()]:
        for _ in range(cfg.samples if drawn else 1):
            over = {p.key: v for p, v in zip(grid, point, strict=True)}
            over.update({p.key: _draw(p, rng) for p in drawn})
            trials.append(over)
    return trials


def trial_experiments(cfg: SweepCfg, trials: list[dict[str, Any]]) -> list[cfgmod.Experiment]:
    """Every trial's experiment, checked by the experiment schema (all problems at once)."""
    raw = yamlio.load_mapping(
        cfg.base, "base experiment (the sweep's base:)", "give base: the path of a valid experiment YAML"
    )
    out, problems = [], []
    for i, over in enumerate(trials):
        tree = copy.deepcopy(raw)
        for key, value in over.items():
            schema.set_dotted(tree, key, value)
        tree["name"] = f"{cfg.name}-{i:03d}"
        try:
            exp = cfgmod.from_dict(tree, cfg.set, f"trial {i:03d} ({describe(over)})", solver_file=True)
            out.append(cfgmod.absolutize(exp))
        except UserError as e:
            problems.append(e.message)
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more trials"] if len(problems) > 10 else [])
        raise UserError("\n".join(shown), "change the space or the base experiment so every trial is valid")
    return out


def describe(over: dict[str, Any]) -> str:
    """'solver.base_lr=0.002 net.width=16'."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in over.items())
