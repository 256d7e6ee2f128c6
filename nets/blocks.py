"""NetSpec pieces shared by the compact FCN and the VGG16 FCNs: data, conv blocks, score,
upsampling, crop, loss and accuracy. One definition of each, so every generated net gets the
same fillers, the same frozen BatchNorm statistics and the same bilinear upsampling.

`caffe` is imported inside the functions: importing this module never loads Caffe.
"""

from __future__ import annotations

import json
from typing import Any

from nets.bilinear import kernel_size_for_stride

FILLERS = ("msra", "xavier")
LOSSES = ("softmax", "infogain")
NORMALIZATIONS = ("VALID", "FULL", "BATCH_SIZE", "NONE")

# weights learn at the base rate with decay, biases at twice the rate without decay (as in FCN)
LEARNED = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
# BatchNorm's mean, variance and moving-average factor are statistics, never gradients
BN_FROZEN = [dict(lr_mult=0, decay_mult=0)] * 3
BIAS_FILLER = dict(type="constant", value=0)
# written out, not left to Caffe's default: the doctor then reads it as meant (FCN's score_pool layers)
ZERO_FILLER = dict(type="constant", value=0)
# Caffe's default 0.999 averages the statistics over ~1000 iterations of weights that kept
# changing, so the TEST-phase net normalizes with stale numbers and val mIoU falls while the
# training loss keeps improving (measured on the demo: 0.80 -> 0.67). 0.95 averages ~20 batches.
BN_AVERAGE_FRACTION = 0.95


def weight_filler(kind: str) -> dict[str, Any]:
    """Explicit filler: Caffe's default is constant 0, which starts every blob at zero."""
    if kind not in FILLERS:
        raise ValueError(f"filler must be one of {FILLERS}, got {kind!r}")
    return dict(type=kind)


def conv(
    n: Any, name: str, bottom: Any, nout: int, *, ks: int = 3, pad: int = 1, filler: str | dict[str, Any] = "msra"
) -> Any:
    """A learned convolution with explicit weight and bias fillers (a filler name, or a
    FillerParameter as a dict, e.g. ZERO_FILLER); returns its top."""
    from caffe import layers as L

    n[name] = L.Convolution(
        bottom,
        kernel_size=ks,
        pad=pad,
        num_output=nout,
        weight_filler=filler if isinstance(filler, dict) else weight_filler(filler),
        bias_filler=BIAS_FILLER,
        param=LEARNED,
    )
    return n[name]


def conv_relu(
    n: Any,
    name: str,
    bottom: Any,
    nout: int,
    *,
    ks: int = 3,
    pad: int = 1,
    filler: str = "msra",
    batch_norm: bool = False,
) -> Any:
    """Convolution [+ BatchNorm + Scale] + ReLU, in place after the conv; returns the top.

    BatchNorm has no learned affine part, so the Scale (with bias) after it restores one;
    `use_global_stats` is left to follow the phase, so one layer serves train and test.
    """
    from caffe import layers as L

    top = conv(n, name, bottom, nout, ks=ks, pad=pad, filler=filler)
    if batch_norm:
        n[f"{name}_bn"] = L.BatchNorm(
            top, param=BN_FROZEN, in_place=True, batch_norm_param=dict(moving_average_fraction=BN_AVERAGE_FRACTION)
        )
        n[f"{name}_scale"] = L.Scale(
            top, bias_term=True, filler=dict(type="constant", value=1), bias_filler=BIAS_FILLER, in_place=True
        )
    n[f"{name}_relu"] = L.ReLU(top, in_place=True)
    return top


def max_pool(n: Any, name: str, bottom: Any) -> Any:
    """2x2 max pooling, stride 2 (kwargs at top level, as `caffe.coord_map` reads them)."""
    from caffe import layers as L
    from caffe import params as P

    n[name] = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    return n[name]


def score(n: Any, name: str, bottom: Any, num_classes: int, filler: str) -> Any:
    """1x1 class-score convolution with an explicit (non-zero) filler."""
    return conv(n, name, bottom, num_classes, ks=1, pad=0, filler=filler)


def skip_score(n: Any, name: str, bottom: Any, num_classes: int) -> Any:
    """1x1 class-score convolution over a skip (pooling) tap, zero-filled as FCN's score_pool
    layers: the fused net starts out as the net without the skip, and the layer learns from its
    live input at the first step (the doctor reports it as info, not as an error)."""
    return conv(n, name, bottom, num_classes, ks=1, pad=0, filler=ZERO_FILLER)


def fuse(n: Any, name: str, a: Any, b: Any) -> Any:
    """Element-wise sum of two score maps of the same shape (FCN's fuse layers)."""
    from caffe import layers as L
    from caffe import params as P

    n[name] = L.Eltwise(a, b, operation=P.Eltwise.SUM)
    return n[name]


def upsample(n: Any, name: str, bottom: Any, num_classes: int, stride: int, learnable: bool = False) -> Any:
    """Bilinear Deconvolution, one kernel per class (group = classes), no bias.

    The bilinear filler makes it correct without the controller's surgery; lr_mult 0 keeps it
    an interpolation unless learning is asked for.
    """
    from caffe import layers as L

    n[name] = L.Deconvolution(
        bottom,
        convolution_param=dict(
            num_output=num_classes,
            group=num_classes,
            kernel_size=kernel_size_for_stride(stride),
            stride=stride,
            bias_term=False,
            weight_filler=dict(type="bilinear"),
        ),
        param=[dict(lr_mult=1 if learnable else 0, decay_mult=1 if learnable else 0)],
    )
    return n[name]


def crop_to(n: Any, name: str, bottom: Any, reference: Any) -> Any:
    """Crop `bottom` to `reference` with offsets computed by `caffe.coord_map`."""
    from caffe.coord_map import crop

    n[name] = crop(bottom, reference)
    return n[name]


def data_layers(n: Any, source: Any) -> None:
    """`data` and `label` tops from the data stage's LMDBs, or the paired Python layer.

    Two native Data layers draw mirror/crop from separate random streams, so image and label
    would be transformed differently: augmentation needs the paired layer.
    """
    from caffe import layers as L
    from caffe import params as P

    if source.kind == "paired":
        param = dict(
            images=source.images,
            labels=source.labels,
            batch_size=source.batch_size,
            mean_bgr=list(source.mean_bgr) if source.mean_bgr else None,
            mirror=source.mirror,
            crop=list(source.crop) if source.crop else None,
            scale=list(source.scale) if source.scale else None,
            seed=source.seed,
            shuffle=source.shuffle,
        )
        if source.jitter:  # only when asked: nets written before jitter existed keep their param_str
            param["jitter"] = source.jitter
        n.data, n.label = L.Python(
            module="data_prep.layers", layer="PairedDataLayer", param_str=json.dumps(param), ntop=2
        )
        return
    image_kw: dict[str, Any] = {}
    if source.mean_bgr:
        image_kw["transform_param"] = dict(mean_value=list(source.mean_bgr))
    n.data = L.Data(
        data_param=dict(source=source.images, backend=P.Data.LMDB, batch_size=source.batch_size), **image_kw
    )
    n.label = L.Data(data_param=dict(source=source.labels, backend=P.Data.LMDB, batch_size=source.batch_size))


def loss_param(normalization: str, ignore_label: int | None) -> dict[str, Any]:
    """Explicit normalization (never the deprecated `normalize`) and the ignore label."""
    from caffe import params as P

    d: dict[str, Any] = dict(normalization=getattr(P.Loss, normalization))
    if ignore_label is not None:
        d["ignore_label"] = ignore_label
    return d


def loss(
    n: Any,
    scores: Any,
    label: Any,
    *,
    kind: str,
    normalization: str,
    ignore_label: int | None,
    infogain_file: str | None,
) -> Any:
    """`loss` top: SoftmaxWithLoss, or class-weighted InfogainLoss.

    In this Caffe (99bd997) InfogainLoss applies its own softmax along `axis`, so it takes the
    raw scores; a Softmax in front of it would squash the probabilities twice.
    """
    from caffe import layers as L

    if kind == "infogain":
        n.loss = L.InfogainLoss(
            scores,
            label,
            infogain_loss_param=dict(source=infogain_file, axis=1),
            loss_param=loss_param(normalization, ignore_label),
        )
    else:
        n.loss = L.SoftmaxWithLoss(scores, label, loss_param=loss_param(normalization, ignore_label))
    return n.loss


def accuracy(n: Any, scores: Any, label: Any, ignore_label: int | None) -> Any:
    """`accuracy` top (pixel accuracy over labelled pixels) for validation."""
    from caffe import layers as L

    param = dict(ignore_label=ignore_label) if ignore_label is not None else {}
    n.accuracy = L.Accuracy(scores, label, **(dict(accuracy_param=param) if param else {}))
    return n.accuracy
