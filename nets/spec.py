"""`generate(...)`: train, val and deploy prototxt text for one architecture, with the choices
that matter later (normalization, ignore label, upsampling layers) recorded in `meta` and in
a leading `# segorch-meta:` comment of each prototxt."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.errors import UserError
from nets import blocks
from nets.compact import INPUT_SCALE, compact_fcn
from nets.fcn import STRIDES, fcn
from nets.options import ArchOptions
from nets.prototxt import meta_header

ARCHS = ("compact", "fcn32s", "fcn16s", "fcn8s")
INPUT_NORMS = ("scale", "mvn")
DATA_KINDS = ("lmdb", "paired")


@dataclass
class DataSource:
    """How a net reads its data: the data stage's two LMDBs, through two native Data layers
    ("lmdb", no augmentation) or through the paired Python layer ("paired")."""

    images: str
    labels: str
    batch_size: int
    kind: str = "lmdb"
    mean_bgr: tuple[float, float, float] | None = None
    mirror: bool = False
    crop: tuple[int, int] | None = None
    scale: tuple[float, float] | None = None
    seed: int = 0
    shuffle: bool = True
    jitter: float = 0.0  # photometric jitter strength (paired layer, TRAIN phase only)

    def check(self, role: str) -> None:
        """Refuse what the chosen layer cannot do correctly (UserError names the field)."""
        if self.kind not in DATA_KINDS:
            raise UserError(
                f"{role} data kind must be one of {DATA_KINDS}, got {self.kind!r}", 'use kind "lmdb" or "paired"'
            )
        if self.batch_size < 1:
            raise UserError(f"{role} batch_size must be >= 1, got {self.batch_size}", "set a positive batch size")
        augment = [
            k
            for k, v in (("mirror", self.mirror), ("crop", self.crop), ("scale", self.scale), ("jitter", self.jitter))
            if v
        ]
        if self.kind == "lmdb" and augment:
            raise UserError(
                f"{role} data asks for {', '.join(augment)} with two native Data layers, which "
                "draw their random mirror/crop independently: image and label would not match",
                'use kind "paired" (data_prep.layers.PairedDataLayer) for augmentation',
            )


@dataclass
class GeneratedNet:
    """Prototxt text of the three nets and the choices behind them."""

    train: str
    val: str | None
    deploy: str
    meta: dict[str, Any] = field(default_factory=dict)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write train/val/deploy.prototxt into `out_dir` (the run directory's names)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for name in ("train", "val", "deploy"):
            text = getattr(self, name)
            if text is not None:
                paths[name] = out / f"{name}.prototxt"
                paths[name].write_text(text)
        return paths


def _body(arch: str) -> Callable[[Any, Any, ArchOptions], list[str]]:
    if arch == "compact":
        return compact_fcn
    return lambda n, data, o: fcn(n, data, o, STRIDES[arch])


def _check_args(
    arch: str,
    num_classes: int,
    filler: str,
    loss: str,
    normalization: str,
    infogain_file: str | None,
    width: int,
    depth: int,
    skips: int,
) -> None:
    checks = [
        (arch in ARCHS, f"arch must be one of {ARCHS}, got {arch!r}", "pick one of the listed architectures"),
        (num_classes >= 2, f"num_classes must be >= 2, got {num_classes}", "use the data stage's num_classes"),
        (filler in blocks.FILLERS, f"filler must be one of {blocks.FILLERS}, got {filler!r}", "msra for ReLU nets"),
        (loss in blocks.LOSSES, f"loss must be one of {blocks.LOSSES}, got {loss!r}", "softmax or infogain"),
        (
            normalization in blocks.NORMALIZATIONS,
            f"normalization must be one of {blocks.NORMALIZATIONS}, got {normalization!r}",
            "VALID",
        ),
        (
            loss != "infogain" or bool(infogain_file),
            "loss infogain needs infogain_file",
            "pass the data stage's infogain_H.binaryproto",
        ),
        (
            width >= 1 and 1 <= depth <= 6,
            f"width must be >= 1 and depth in 1..6, got {width}, {depth}",
            "e.g. width 16, depth 3",
        ),
        (
            skips == 0 or (arch == "compact" and 0 < skips < depth),
            f"skips must be in 0..depth-1 (the pooling stages below the last) and only with arch compact, "
            f"got skips {skips} with arch {arch}, depth {depth}",
            "use skips 0, 1 or 2 with the compact net (fcn16s/fcn8s have their skips built in)",
        ),
    ]
    for ok, message, fix in checks:
        if not ok:
            raise UserError(message, fix)


def _meta(arch: str, opts: ArchOptions, data_kind: str, **head: Any) -> dict[str, Any]:
    """The generated net's meta: the body's options (width/depth/skips for the compact net only),
    its total stride, the loss head's settings."""
    shape = asdict(opts)
    if arch == "compact":
        shape.update(total_stride=2 ** (opts.depth - opts.skips))
        if opts.input_norm == "scale":
            shape.update(input_scale=INPUT_SCALE)
    else:
        shape = {k: v for k, v in shape.items() if k not in ("width", "depth", "skips", "input_norm")}
        shape.update(total_stride=int(arch[3:-1]))
    infogain_file = head.pop("infogain_file")
    backbone = "compact" if arch == "compact" else "vgg16"
    return dict(arch=arch, **head, data_kind=data_kind, infogain_file=infogain_file, backbone=backbone, **shape)


def generate(
    arch: str,
    *,
    num_classes: int,
    train_data: DataSource,
    val_data: DataSource | None,
    deploy_shape: tuple[int, int] = (64, 64),
    width: int = 32,
    depth: int = 3,
    batch_norm: bool = False,
    filler: str = "msra",
    loss: str = "softmax",
    normalization: str = "VALID",
    ignore_label: int | None = None,
    infogain_file: str | None = None,
    learn_upsample: bool = False,
    skips: int = 0,
    input_norm: str = "scale",
) -> GeneratedNet:
    """Train/val/deploy nets for `arch` (compact, fcn32s, fcn16s, fcn8s).

    Tops `data`, `label`, `score` (N x C x H x W, cropped to the input) and `loss` in train and
    val, `accuracy` in val, `score` and `prob` in deploy. `width`/`depth`/`skips` shape the
    compact net only (the FCNs are VGG16), and so does `input_norm` (scale or mvn).
    """
    _check_args(arch, num_classes, filler, loss, normalization, infogain_file, width, depth, skips)
    if input_norm not in INPUT_NORMS or (input_norm != "scale" and arch != "compact"):
        raise UserError(
            f"input_norm must be one of {INPUT_NORMS} (mvn with arch compact only), "
            f"got {input_norm!r} with arch {arch}",
            'use input_norm "scale", or "mvn" with the compact net',
        )
    train_data.check("train")
    if val_data is not None:
        val_data.check("val")
    opts = ArchOptions(num_classes, width, depth, batch_norm, filler, learn_upsample, skips, input_norm)  # field order
    body = _body(arch)
    meta = _meta(
        arch,
        opts,
        train_data.kind,
        ignore_label=ignore_label,
        loss=loss,
        loss_normalization=normalization,
        infogain_file=infogain_file,
    )
    head: dict[str, Any] = dict(
        kind=loss, normalization=normalization, ignore_label=ignore_label, infogain_file=infogain_file
    )

    def build(which: str, source: DataSource | None) -> str:
        import caffe
        from caffe import layers as L

        n = caffe.NetSpec()
        if source is None:
            n.data = L.Input(shape=dict(dim=[1, 3, *deploy_shape]))
        else:
            blocks.data_layers(n, source)
        meta["upsample_layers"] = body(n, n.data, opts)
        if source is None:
            n.prob = L.Softmax(n.score)
        else:
            blocks.loss(n, n.score, n.label, **head)
            if which == "val":
                blocks.accuracy(n, n.score, n.label, ignore_label)
        proto = n.to_proto()
        proto.name = f"{arch}_{which}"
        return str(proto)

    train, val, deploy = (
        build("train", train_data),
        build("val", val_data) if val_data is not None else None,
        build("deploy", None),
    )
    header = meta_header(meta)
    return GeneratedNet(
        train=header + train,
        val=header + val if val is not None else None,
        deploy=header + deploy,
        meta=dict(meta),
    )
