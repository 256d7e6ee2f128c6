"""FCN-32s, FCN-16s and FCN-8s on a VGG16 backbone (Long, Shelhamer, Darrell).

Layer names follow VGG16 (conv1_1 .. conv5_3, fc6, fc7), so VGG16 weights load by name;
fc6/fc7 are convolutions (7x7 and 1x1) and `nets.weights.transplant` reshapes the
classifier's InnerProduct weights into them. conv1_1 pads by 100 so any input size
survives the five poolings and the 7x7 fc6; the Crop layers undo the padding.
"""

from __future__ import annotations

from typing import Any

from nets import blocks
from nets.options import ArchOptions

VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
FC_WIDTH = 4096
STRIDES = {"fcn32s": 32, "fcn16s": 16, "fcn8s": 8}


def vgg16(n: Any, data: Any, o: ArchOptions) -> dict[str, Any]:
    """VGG16 convolutions and fc6/fc7 as convolutions; returns the pool3, pool4 and fc7 tops."""
    from caffe import layers as L

    taps: dict[str, Any] = {}
    x = data
    for b, (channels, convs) in enumerate(VGG16_BLOCKS, start=1):
        for c in range(1, convs + 1):
            pad = 100 if (b, c) == (1, 1) else 1
            x = blocks.conv_relu(n, f"conv{b}_{c}", x, channels, pad=pad, filler=o.filler, batch_norm=o.batch_norm)
        x = taps[f"pool{b}"] = blocks.max_pool(n, f"pool{b}", x)
    for name, ks in (("fc6", 7), ("fc7", 1)):
        x = blocks.conv_relu(n, name, x, FC_WIDTH, ks=ks, pad=0, filler=o.filler, batch_norm=o.batch_norm)
        n[f"drop{name[2:]}"] = L.Dropout(x, dropout_ratio=0.5, in_place=True)
    taps["fc7"] = x
    return taps


def fcn(n: Any, data: Any, o: ArchOptions, stride: int) -> list[str]:
    """The FCN head at output stride 32, 16 or 8: score fc7, then for each skip (pool4, then
    pool3) upsample x2, add the cropped skip scores; finally upsample to the input and crop
    as `score`. Returns the upsampling layer names."""
    from caffe import layers as L
    from caffe import params as P

    if stride not in STRIDES.values():
        raise ValueError(f"FCN stride must be one of {sorted(STRIDES.values())}, got {stride}")
    taps = vgg16(n, data, o)
    x = blocks.score(n, "score_fr", taps["fc7"], o.num_classes, o.filler)
    skips = {32: [], 16: ["pool4"], 8: ["pool4", "pool3"]}[stride]
    ups: list[str] = []
    for i, skip in enumerate(skips):
        name = "upscore2" if i == 0 else f"upscore_{skips[i - 1]}"
        up = blocks.upsample(n, name, x, o.num_classes, 2, o.learn_upsample)
        skip_scores = blocks.score(n, f"score_{skip}", taps[skip], o.num_classes, o.filler)
        cropped = blocks.crop_to(n, f"score_{skip}c", skip_scores, up)
        n[f"fuse_{skip}"] = L.Eltwise(up, cropped, operation=P.Eltwise.SUM)
        x = n[f"fuse_{skip}"]
        ups.append(name)
    final = "upscore" if stride == 32 else f"upscore{stride}"
    up = blocks.upsample(n, final, x, o.num_classes, stride, o.learn_upsample)
    ups.append(final)
    blocks.crop_to(n, "score", up, data)
    return ups
