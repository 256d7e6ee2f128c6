"""The experiment schema: one strict, typed description of a run (YAML in, dataclasses out)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from common.errors import UserError
from orchestrator import schema


@dataclass
class BuildCfg:
    """Raw lists that `run` turns into LMDBs first when the data dirs are missing or stale."""

    root: str
    train_list: str
    num_classes: int
    val_list: str | None = None
    ignore_label: int = 255
    resize: str | None = None
    encoded: bool = False


@dataclass
class AugmentCfg:
    """Augmentation; only the paired data layer can apply it to image and label alike."""

    mirror: bool = False
    crop: list[int] | None = None
    scale: list[float] | None = None

    def check(self) -> list[str]:
        errs = []
        if self.crop is not None and (len(self.crop) != 2 or min(self.crop) <= 0):
            errs.append("crop: must be [height, width] with positive values")
        if self.scale is not None and (len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]):
            errs.append("scale: must be [min, max] with 0 < min <= max")
        return errs


@dataclass
class DataCfg:
    train: str
    val: str | None = None
    build: BuildCfg | None = None
    layer: Literal["lmdb", "paired"] = "lmdb"
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    batch_size: int = 8
    val_batch_size: int = 1

    def check(self) -> list[str]:
        errs = []
        if self.batch_size < 1 or self.val_batch_size < 1:
            errs.append("batch_size: must be >= 1")
        a = self.augment
        if self.layer == "lmdb" and (a.mirror or a.crop or a.scale):
            errs.append("augment: needs layer: paired (two native Data layers cannot share a random "
                        "mirror/crop, so image and label would no longer match)")
        return errs


@dataclass
class NetCfg:
    arch: Literal["compact", "fcn32s", "fcn16s", "fcn8s"] = "compact"
    prototxt: str | None = None
    val_prototxt: str | None = None
    num_classes: int | None = None
    ignore_label: int | None = None
    width: int = 16
    depth: int = 3
    batch_norm: bool = False
    filler: Literal["msra", "xavier"] = "msra"
    loss: Literal["softmax", "infogain"] = "softmax"
    normalization: Literal["VALID", "BATCH_SIZE", "FULL", "NONE"] = "VALID"
    learn_upsample: bool = False

    def check(self) -> list[str]:
        errs = []
        if self.width < 1 or self.depth < 1:
            errs.append("width/depth: must be >= 1")
        if self.val_prototxt and not self.prototxt:
            errs.append("val_prototxt: needs prototxt (the user's train net) as well")
        return errs


@dataclass
class SolverCfg:
    type: Literal["SGD", "Nesterov", "Adam", "AdaGrad", "RMSProp", "AdaDelta"] = "SGD"
    base_lr: float = 0.01
    lr_policy: Literal["fixed", "step", "multistep", "poly", "exp", "inv", "sigmoid"] = "fixed"
    gamma: float = 0.1
    power: float = 0.9
    stepsize: int = 1000
    stepvalue: list[int] = field(default_factory=list)
    momentum: float = 0.9
    momentum2: float = 0.999
    weight_decay: float = 0.0005
    iter_size: int = 1
    max_iter: int = 1000
    clip_gradients: float = -1.0

    def check(self) -> list[str]:
        errs = []
        if self.base_lr <= 0:
            errs.append("base_lr: must be > 0")
        if self.max_iter < 1 or self.iter_size < 1:
            errs.append("max_iter/iter_size: must be >= 1")
        if self.lr_policy == "multistep" and not self.stepvalue:
            errs.append("stepvalue: lr_policy multistep needs a list of iterations")
        return errs


@dataclass
class SurgeryCfg:
    bilinear: bool = True
    layers: list[str] = field(default_factory=list)  # empty: every Deconvolution with stride > 1


@dataclass
class ChecksCfg:
    """Statistics interval and the divergence thresholds (see orchestrator.rules)."""

    stats_interval: int = 10
    loss_factor: float = 10.0
    loss_window: int = 20
    warmup: int = 10
    saturation_loss: float = 87.3365
    update_ratio_max: float = 1.0
    update_ratio_min: float = 0.0
    zero_blobs: bool = True

    def check(self) -> list[str]:
        return ["stats_interval: must be >= 1"] if self.stats_interval < 1 else []


@dataclass
class ValidationCfg:
    enabled: bool = True
    interval: int = 100
    max_images: int | None = None


@dataclass
class EarlyStopCfg:
    """Stop when the monitored validation metric has not improved for `patience` validations."""

    enabled: bool = False
    metric: Literal["mean_iu", "pixel_accuracy", "mean_accuracy", "fw_iu"] = "mean_iu"
    patience: int = 5
    min_delta: float = 0.0


@dataclass
class LrPlateauCfg(EarlyStopCfg):
    """The same plateau test, but multiply base_lr by `factor` instead of stopping."""

    patience: int = 3
    factor: float = 0.5
    min_lr: float = 1e-7

    def check(self) -> list[str]:
        return [] if 0 < self.factor < 1 else ["factor: must be between 0 and 1"]


@dataclass
class SnapshotCfg:
    interval: int = 500
    keep_last: int = 2
    keep_best: bool = True


@dataclass
class ProgressCfg:
    quiet: bool = False
    log_interval: int = 1


@dataclass
class Experiment:
    name: str
    data: DataCfg
    net: NetCfg = field(default_factory=NetCfg)
    solver: SolverCfg = field(default_factory=SolverCfg)
    device: str = "cpu"
    weights: str | None = None
    seed: int = 0
    surgery: SurgeryCfg = field(default_factory=SurgeryCfg)
    checks: ChecksCfg = field(default_factory=ChecksCfg)
    validation: ValidationCfg = field(default_factory=ValidationCfg)
    early_stop: EarlyStopCfg = field(default_factory=EarlyStopCfg)
    lr_on_plateau: LrPlateauCfg = field(default_factory=LrPlateauCfg)
    snapshot: SnapshotCfg = field(default_factory=SnapshotCfg)
    progress: ProgressCfg = field(default_factory=ProgressCfg)

    def check(self) -> list[str]:
        errs = []
        if not re.fullmatch(r"cpu|gpu:\d+", self.device):
            errs.append(f"device: must be 'cpu' or 'gpu:N', got {self.device!r}")
        if not re.fullmatch(r"[\w.-]+", self.name or ""):
            errs.append("name: use letters, digits, '.', '_' or '-' (it names the run directory)")
        if (self.early_stop.enabled or self.lr_on_plateau.enabled) and not (
                self.validation.enabled and (self.data.val or self.net.val_prototxt)):
            errs.append("early_stop/lr_on_plateau: need validation data (data.val) and validation.enabled")
        return errs

    @property
    def gpu_id(self) -> int | None:
        return int(self.device.split(":")[1]) if self.device.startswith("gpu:") else None


_PATH_KEYS = (("data", "train"), ("data", "val"), ("data", "build", "root"), ("net", "prototxt"),
              ("net", "val_prototxt"), ("weights",))


def parse_override(text: str) -> tuple[str, Any]:
    """'solver.base_lr=1e4' -> ('solver.base_lr', 10000.0 or '1e4'); values are YAML scalars."""
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected dotted.key=value", "for example --set solver.base_lr=0.001")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def from_dict(raw: dict[str, Any], overrides: list[str] = (), source: str = "<dict>") -> Experiment:
    """Validate a raw mapping (plus --set overrides); raise UserError listing every problem."""
    raw = dict(raw or {})
    for o in overrides:
        schema.set_dotted(raw, *parse_override(o))
    errors: list[str] = []
    exp = schema.load(Experiment, raw, "", errors)
    if errors:
        raise UserError(f"{source}: {len(errors)} problem(s) in the experiment:\n  - " + "\n  - ".join(errors),
                        "correct the keys named above (orchestrate validate EXP.yaml lists them all)")
    return exp


def load_experiment(path: str | os.PathLike[str], overrides: list[str] = ()) -> Experiment:
    """Read an experiment YAML (safe loader), apply overrides, make paths absolute."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: experiment file not found", "give the path of an experiment YAML, e.g. experiments/demo.yaml")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{p}: not valid YAML: {e}", "fix the YAML syntax at the line shown") from e
    if not isinstance(raw, dict):
        raise UserError(f"{p}: the experiment must be a YAML mapping", "start from experiments/demo.yaml")
    exp = from_dict(raw, overrides, str(p))
    return absolutize(exp)


def absolutize(exp: Experiment) -> Experiment:
    """Resolve relative paths against the current directory, so a run dir's config stands alone."""
    for keys in _PATH_KEYS:
        node: Any = exp
        for k in keys[:-1]:
            node = getattr(node, k)
            if node is None:
                break
        if node is not None and getattr(node, keys[-1]):
            setattr(node, keys[-1], os.path.abspath(getattr(node, keys[-1])))
    return exp


def to_yaml(exp: Experiment) -> str:
    """The resolved config as YAML (written to the run directory)."""
    return yaml.safe_dump(schema.to_dict(exp), sort_keys=False)
