"""The experiment schema: one strict, typed description of a run (YAML in, dataclasses out)."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import yaml

from common.errors import UserError
from data_prep.sizes import parse_size  # the data stage's own --resize parser
from orchestrator.config import schema, yamlio
from orchestrator.config.checks import Thresholds
from orchestrator.config.schema import Check, Count, Limits, NonNegFloat, NonNegInt, PosFloat, rule
from orchestrator.config.solver import Fraction, SolverCfg
from orchestrator.contract import TTA_MAX_SCALE, MetricName

# Limits shared by several fields here (schema has the common ones); the others are declared inline.
Label = Annotated[int, Limits(ge=0, le=255)]  # labels are stored as uint8
Classes = Annotated[int, Limits(ge=1, le=255)]


def _is_wxh(text: str) -> bool:
    try:
        parse_size(text, "WxH")
    except ValueError:
        return False
    return True


_NAME = re.compile(r"\w[\w.-]{0,99}")  # starts like a word: never '.', '..', a hidden dir or an option
NAME_BYTES = 100  # file systems allow 255 bytes per name; a run's files add suffixes (trial folders, .partial-PID)


def is_plain_name(text: str, max_bytes: int = NAME_BYTES) -> bool:
    """A name that is safe as one folder name: word characters, '.', '-', at most `max_bytes` bytes
    in UTF-8 (a name of CJK characters takes 3 bytes each: 100 of them would be 300 bytes)."""
    return bool(_NAME.fullmatch(text)) and len(text.encode("utf-8")) <= max_bytes


@dataclass
class BuildCfg:
    """Raw lists that `run` turns into LMDBs first when the data dirs are missing or stale."""

    root: str
    train_list: str
    num_classes: Classes
    val_list: str | None = None
    ignore_label: Label = 255
    resize: Annotated[str, Check(_is_wxh, "WIDTHxHEIGHT with positive integers, e.g. 240x180")] | None = None
    encoded: bool = False
    allow_lossy_labels: bool = False  # JPEG labels: compression invents classes at edges
    # one name per class, in label order: shown by reports, pictures and predict instead of "class k"
    class_names: list[str] | None = None
    # stored label value -> class id (`data build --label-map`): a preset (cityscapes, ade20k) or a file
    label_map: str | None = None

    @rule("class_names", "num_classes")
    def _one_name_per_class(self) -> str | None:
        n = self.class_names
        if n is None or len(n) == self.num_classes:
            return None
        return f"has {len(n)} names for num_classes {self.num_classes}: give one name per class, in label order"

    @property
    def size(self) -> tuple[int, int] | None:
        """`resize` as (width, height), parsed like `orchestrate data build --resize`."""
        return parse_size(self.resize, "WxH") if self.resize else None


@dataclass
class AugmentCfg:
    """Augmentation; only the paired data layer can apply it to image and label alike."""

    mirror: bool = False
    crop: list[Count] | None = None
    scale: list[PosFloat] | None = None
    jitter: Fraction = 0.0  # photometric: brightness/contrast/saturation factors in [1 - j, 1 + j]

    @rule("crop")
    def _crop_pair(self) -> str | None:
        return None if self.crop is None or len(self.crop) == 2 else f"must be [height, width], got {self.crop}"

    @rule("scale")
    def _scale_range(self) -> str | None:
        ok = self.scale is None or (len(self.scale) == 2 and self.scale[0] <= self.scale[1])
        return None if ok else f"must be [min, max] with min <= max, got {self.scale}"


@dataclass
class DataCfg:
    train: str
    val: str | None = None
    build: BuildCfg | None = None
    layer: Literal["lmdb", "paired"] = "lmdb"
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    batch_size: Count = 8
    val_batch_size: Count = 1

    @property
    def class_names(self) -> list[str] | None:
        """data.build.class_names, for data stages whose stats.json names no classes."""
        return list(self.build.class_names) if self.build and self.build.class_names else None

    @rule("augment", "layer")
    def _augment_needs_paired(self) -> str | None:
        a = self.augment
        if self.layer == "lmdb" and (a.mirror or a.crop or a.scale or a.jitter):
            return (
                "needs layer: paired (two native Data layers cannot share a random "
                "mirror/crop, so image and label would no longer match)"
            )
        return None


@dataclass
class NetCfg:
    arch: Literal["compact", "fcn32s", "fcn16s", "fcn8s"] = "compact"
    prototxt: str | None = None
    val_prototxt: str | None = None
    num_classes: Count | None = None
    ignore_label: NonNegInt | None = None
    width: Count = 16
    depth: Annotated[int, Limits(ge=1, le=6, hint="the compact net's pooling stages")] = 3
    batch_norm: bool = False
    filler: Literal["msra", "xavier"] = "msra"
    loss: Literal["softmax", "infogain"] = "softmax"
    normalization: Literal["VALID", "BATCH_SIZE", "FULL", "NONE"] = "VALID"
    learn_upsample: bool = False
    skips: NonNegInt = 0  # compact: fuse scores from the last `skips` pooling stages (FCN-16s/8s style)
    # the infogain H's class weights (loss infogain): the data stage's median-frequency H, or its square root
    class_weighting: Literal["median_frequency", "sqrt_median_frequency"] = "median_frequency"
    # compact: the input times a constant (scale), or each image's channels to mean 0, variance 1 (mvn)
    input_norm: Literal["scale", "mvn"] = "scale"

    @rule("val_prototxt", "prototxt")
    def _val_needs_train(self) -> str | None:
        return "needs prototxt (the user's train net) as well" if self.val_prototxt and not self.prototxt else None

    @rule("skips", "arch", "depth")
    def _skips(self) -> str | None:
        if self.skips and self.arch != "compact":
            return f"is for arch compact only ({self.arch} has its skips built in)"
        if self.skips >= self.depth:
            return f"must be below depth ({self.depth}): only the pooling stages under the last can be fused"
        return None

    @rule("width", "depth")
    def _widest_fits_int32(self) -> str | None:
        widest = self.width * 2 ** (self.depth - 1)  # the compact net doubles its channels per stage
        if widest <= schema.INT_MAX:
            return None
        return f"is too large: the widest layer would get width * 2^(depth-1) = {widest} channels (> {schema.INT_MAX})"

    @rule("input_norm", "arch")
    def _mvn_compact_only(self) -> str | None:
        ok = self.input_norm == "scale" or self.arch == "compact"
        return None if ok else f"mvn is for arch compact only ({self.arch} keeps its published input)"

    @rule("class_weighting", "loss")
    def _weighting_needs_infogain(self) -> str | None:
        ok = self.class_weighting == "median_frequency" or self.loss == "infogain"
        return None if ok else "weights classes through InfogainLoss: set loss: infogain"


@dataclass
class SurgeryCfg:
    bilinear: bool = True
    layers: list[str] = field(default_factory=list)  # empty: every Deconvolution with stride > 1


# the `checks` section is the divergence rules' own thresholds (one type, declared with the rules)
ChecksCfg = Thresholds


@dataclass
class TtaCfg:
    """Test-time augmentation of validation (orchestrator.predict.tta): the softmax
    probabilities of each scale (and of its horizontal flip) averaged; off by default."""

    flip: bool = False
    scales: list[Annotated[float, Limits(gt=0, le=TTA_MAX_SCALE)]] = field(default_factory=lambda: [1.0])

    @rule("scales")
    def _scales(self) -> str | None:
        if not self.scales:
            return "must list at least one scale (1: the image as it is)"
        return f"repeats a scale: {self.scales}" if len(set(self.scales)) != len(self.scales) else None


@dataclass
class ValidationCfg:
    enabled: bool = True
    interval: Count = 100
    max_images: Count | None = None
    pictures: NonNegInt = 4  # val images drawn at each new best (RUN_DIR/best/); 0: none
    tta: TtaCfg = field(default_factory=TtaCfg)


@dataclass
class EarlyStopCfg:
    """Stop when the monitored validation metric has not improved for `patience` validations."""

    enabled: bool = False
    metric: MetricName = "mean_iu"
    patience: Count = 5
    min_delta: NonNegFloat = 0.0


@dataclass
class LrPlateauCfg(EarlyStopCfg):
    """The same plateau test, but multiply base_lr by `factor` instead of stopping."""

    patience: Count = 3
    factor: Annotated[float, Limits(gt=0, lt=1)] = 0.5
    min_lr: NonNegFloat = 1e-7


@dataclass
class SnapshotCfg:
    interval: Count = 500
    # >= 1 even with keep_best: the best may be old or not exist yet (no validation so far), and a
    # crash must always leave the newest state to resume from.
    keep_last: Annotated[
        int,
        Limits(
            ge=1,
            hint=(
                "resume continues from the newest snapshot; with 0 each snapshot would be deleted as soon as it "
                "is written and a crash would leave nothing to resume; keep_best keeps the best one besides"
            ),
        ),
    ] = 2
    keep_best: bool = True


@dataclass
class ProgressCfg:
    quiet: bool = False
    log_interval: Count = 1
    tensorboard: bool = True  # event files in RUN_DIR/tb/


@dataclass
class Experiment:
    name: Annotated[
        str,
        Check(
            is_plain_name,
            (
                "a plain name (it names the run directory runs/<name>): letters, digits, '.', '_' or '-', "
                f"starting with a letter, digit or '_', at most {NAME_BYTES} bytes in UTF-8 "
                "(100 ASCII characters, 33 CJK ones)"
            ),
        ),
    ]
    data: DataCfg
    net: NetCfg = field(default_factory=NetCfg)
    solver: SolverCfg = field(default_factory=SolverCfg)
    device: Annotated[str, Check(re.compile(r"cpu|gpu:[0-9]+").fullmatch, "'cpu' or 'gpu:N'")] = "cpu"
    weights: str | None = None
    seed: NonNegInt = 0
    surgery: SurgeryCfg = field(default_factory=SurgeryCfg)
    checks: ChecksCfg = field(default_factory=ChecksCfg)
    validation: ValidationCfg = field(default_factory=ValidationCfg)
    early_stop: EarlyStopCfg = field(default_factory=EarlyStopCfg)
    lr_on_plateau: LrPlateauCfg = field(default_factory=LrPlateauCfg)
    snapshot: SnapshotCfg = field(default_factory=SnapshotCfg)
    progress: ProgressCfg = field(default_factory=ProgressCfg)

    def _has_validation(self) -> bool:
        return self.validation.enabled and bool(self.data.val or self.net.val_prototxt)

    @rule("early_stop.enabled", "validation.enabled", "data.val", "net.val_prototxt")
    def _early_stop_needs_val(self) -> str | None:
        return None if not self.early_stop.enabled or self._has_validation() else _NEEDS_VAL

    @rule("lr_on_plateau.enabled", "validation.enabled", "data.val", "net.val_prototxt")
    def _plateau_needs_val(self) -> str | None:
        return None if not self.lr_on_plateau.enabled or self._has_validation() else _NEEDS_VAL

    @property
    def gpu_id(self) -> int | None:
        return int(self.device.split(":")[1]) if self.device.startswith("gpu:") else None


_NEEDS_VAL = "needs validation data (data.val) and validation.enabled"

_PATH_KEYS = (
    ("data", "train"),
    ("data", "val"),
    ("data", "build", "root"),
    ("net", "prototxt"),
    ("net", "val_prototxt"),
    ("weights",),
    ("solver", "prototxt"),
)


_SET_FIX = "quote it or close its brackets, e.g. --set solver.stepvalue=[100,200]"


def parse_override(text: str) -> tuple[str, Any]:
    """'solver.base_lr=1e4' -> ('solver.base_lr', 10000.0 or '1e4'); values are YAML scalars."""
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected dotted.key=value", "for example --set solver.base_lr=0.001")
    key, raw = text.split("=", 1)
    where = f"--set {yamlio.shown(text)}"
    return key.strip(), yamlio.load_text(raw, where, _SET_FIX, "not a YAML value") if raw.strip() else ""


def from_dict(
    raw: dict[str, Any], overrides: Sequence[str] = (), source: str = "<dict>", solver_file: bool = False
) -> Experiment:
    """Validate a raw mapping (plus --set overrides); raise UserError listing every problem.
    With `solver_file`, solver.prototxt (the user's solver) fills the solver keys not given."""
    raw = copy.deepcopy(raw or {})  # overrides must not leak into the caller's nested dicts
    for o in overrides:
        schema.set_dotted(raw, *parse_override(o))
    errors: list[str] = []
    if solver_file:
        from orchestrator.config import solverfile

        solverfile.merge_into(raw, errors)
    exp = schema.load(Experiment, raw, "", errors)
    if errors:
        raise UserError(
            f"{source}: {len(errors)} problem(s) in the experiment:" + yamlio.problem_list(errors),
            "correct the keys named above (orchestrate validate EXP.yaml lists them all)",
        )
    return exp


def load_experiment(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Experiment:
    """Read an experiment YAML (safe loader, bounded: yamlio), apply overrides, make paths absolute."""
    raw = yamlio.load_mapping(
        path, "experiment file", "give the path of an experiment YAML, e.g. experiments/demo.yaml"
    )
    exp = from_dict(raw, overrides, str(path), solver_file=True)
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
