"""Issue 21 case 5: a learned decoder is not an interpolation. DIGITS' binary segmentation
decodes 1024 channels to 1 with a 16x16 stride-16 Deconvolution (lr_mult 1, no filler): no
bilinear kernel fits it, the surgery leaves it alone, and the doctor gives it no group or
bilinear advice (whose fix would break the net); it learns from its zeros like a classifier."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from nets import bilinear
from nets.doctor import diagnose, static_findings
from nets.graph import Context
from nets.prototxt import load_net
from tests.nets import public

SRC = public.PUBLIC / "digits-binary-segmentation.train_val.prototxt"
ADVICE = {"deconv-group", "deconv-not-bilinear"}


def test_real_digits_prototxt_gets_no_group_advice():
    net = load_net(SRC)
    assert bilinear.learned_upsamplings(net) == {"upsample": "none"}
    assert bilinear.surgery_targets(net) == []
    for surgery in (True, False):
        found = static_findings(net, Context(surgery=surgery))
        assert not [f for f in found if f.code in ADVICE], surgery
        assert [f.code for f in found if f.layer == "upsample"] == ["zero-init"]


def bvlc_variant(tmp_path: Path, text: str) -> Path:
    """The DIGITS net with its NVcaffe L1Loss as BVLC's EuclideanLoss and an Input layer."""
    path = tmp_path / "digits-bin.prototxt"
    path.write_text(text.replace('type: "L1Loss"', 'type: "EuclideanLoss"'))
    entry = dataclasses.replace(public.REGISTRY["digits-binary-segmentation"], file=str(path))
    public.REGISTRY["digits-bin-bvlc"] = entry
    try:
        return public.with_input_layer("digits-bin-bvlc", tmp_path)
    finally:
        del public.REGISTRY["digits-bin-bvlc"]


def test_bvlc_variant_checks_clean_on_real_caffe(tmp_path):
    found = diagnose(str(bvlc_variant(tmp_path, SRC.read_text())), log_dir=str(tmp_path))
    assert not [f for f in found if f.severity == "error"]
    assert not [f for f in found if f.code in ADVICE]
    [zero] = [f for f in found if f.layer == "upsample"]
    assert zero.code == "zero-init" and zero.severity == "info" and "learn" in zero.message


def test_a_frozen_decoder_that_mixes_channels_is_still_an_error(tmp_path):
    """lr_mult 0 on the same decoder: its zeros never change, so the group finding stays."""
    text = SRC.read_text().replace(
        'top: "upsample"\n  param {\n    lr_mult: 1.0\n  }', 'top: "upsample"\n  param {\n    lr_mult: 0\n  }'
    )
    assert text != SRC.read_text()
    (tmp_path / "frozen.prototxt").write_text(text)
    found = static_findings(load_net(tmp_path / "frozen.prototxt"), Context())
    assert [(f.code, f.severity) for f in found if f.layer == "upsample" and f.code in ADVICE] == [
        ("deconv-group", "error")
    ]


def test_an_interpolation_with_matching_channels_is_still_filled():
    """FCN's upscore (lr_mult 0 or not, no filler, channels = classes) stays a surgery target."""
    net = load_net(public.PUBLIC / "voc-fcn8s.train.prototxt")
    assert bilinear.surgery_targets(net) == ["upscore2", "upscore_pool4", "upscore8"]
    assert bilinear.learned_upsamplings(net) == {}
