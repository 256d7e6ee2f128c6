"""The compact FCN: a few small conv blocks and the FCN head, small enough to train on a
2-core CPU in minutes (the demo's, the tests' and the CamVid recipe's net)."""
from __future__ import annotations

from typing import Any

from nets import blocks
from nets.options import ArchOptions

INPUT_SCALE = 1 / 64


def compact_fcn(n: Any, data: Any, o: ArchOptions) -> list[str]:
    """The input scaled by INPUT_SCALE (Power layer `data_scaled`), `depth` blocks of
    (3x3 conv [+BN+Scale] + ReLU) x2 + 2x2 max-pool with width*2^i channels, a 1x1 score conv,
    one bilinear Deconvolution by the total stride, and a Crop to the input as `score`.
    Returns the upsampling layer names."""
    from caffe import layers as L

    # pixels minus the mean are +-128: scaled to about unit variance, which msra assumes, so
    # the usual learning rates (1e-2 with momentum 0.9) work without BatchNorm too
    n.data_scaled = L.Power(data, scale=INPUT_SCALE)
    x = n.data_scaled
    for i in range(o.depth):
        channels = o.width * 2 ** i
        for j in (1, 2):
            x = blocks.conv_relu(n, f"conv{i + 1}_{j}", x, channels, filler=o.filler,
                                 batch_norm=o.batch_norm)
        x = blocks.max_pool(n, f"pool{i + 1}", x)
    scores = blocks.score(n, "score_fr", x, o.num_classes, o.filler)
    up = blocks.upsample(n, "upscore", scores, o.num_classes, 2 ** o.depth, o.learn_upsample)
    blocks.crop_to(n, "score", up, data)
    return ["upscore"]
