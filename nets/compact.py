"""The compact FCN: a few small conv blocks and the FCN head, small enough to train on a
2-core CPU in minutes (the demo's, the tests' and the CamVid recipes' net). With `skips` it
fuses class scores from the last one or two pooling stages, as FCN-16s/8s do, to recover thin
classes (poles, signs, pedestrians) that the coarsest scores blur away."""

from __future__ import annotations

from typing import Any

from nets import blocks
from nets.options import ArchOptions

INPUT_SCALE = 1 / 64


def compact_fcn(n: Any, data: Any, o: ArchOptions) -> list[str]:
    """The input scaled by INPUT_SCALE (Power layer `data_scaled`; or normalized per image by an
    MVN layer `data_mvn` with input_norm "mvn"), `depth` blocks of
    (3x3 conv [+BN+Scale] + ReLU) x2 + 2x2 max-pool with width*2^i channels, a 1x1 score conv
    `score_fr`, then the skips, one bilinear Deconvolution `upscore` to the input and a Crop to
    it as `score`. Returns the upsampling layer names."""
    from caffe import layers as L

    if o.input_norm == "mvn":  # per image and channel: invariant to a global change of light
        n.data_mvn = L.MVN(data, normalize_variance=True, across_channels=False)
        x = n.data_mvn
    else:
        # pixels minus the mean are +-128: scaled to about unit variance, which msra assumes, so
        # the usual learning rates (1e-2 with momentum 0.9) work without BatchNorm too
        n.data_scaled = L.Power(data, scale=INPUT_SCALE)
        x = n.data_scaled
    pools = []
    for i in range(o.depth):
        channels = o.width * 2**i
        for j in (1, 2):
            x = blocks.conv_relu(n, f"conv{i + 1}_{j}", x, channels, filler=o.filler, batch_norm=o.batch_norm)
        x = blocks.max_pool(n, f"pool{i + 1}", x)
        pools.append(x)
    scores = blocks.score(n, "score_fr", x, o.num_classes, o.filler)
    ups = []
    for k in range(o.skips):
        scores, up = _skip(n, scores, pools, o.depth - 1 - k, o)
        ups.append(up)
    up = blocks.upsample(n, "upscore", scores, o.num_classes, 2 ** (o.depth - o.skips), o.learn_upsample)
    blocks.crop_to(n, "score", up, data)
    return [*ups, "upscore"]


def _skip(n: Any, scores: Any, pools: list[Any], stage: int, o: ArchOptions) -> tuple[Any, str]:
    """Upsample `scores` x2 (bilinear), crop it to the zero-filled scores of pool`stage` and add
    them (`fuse_pool<stage>`). Caffe's pooling rounds up, so the x2 map is the larger one here
    (unlike FCN, whose pad 100 makes the skip larger): the upsampled map is cropped. Returns the
    fused scores and the upsampling layer's name."""
    name = f"upscore_pool{stage}"
    up = blocks.upsample(n, name, scores, o.num_classes, 2, o.learn_upsample)
    skip = blocks.skip_score(n, f"score_pool{stage}", pools[stage - 1], o.num_classes)
    cropped = blocks.crop_to(n, f"{name}c", up, skip)
    return blocks.fuse(n, f"fuse_pool{stage}", cropped, skip), name
