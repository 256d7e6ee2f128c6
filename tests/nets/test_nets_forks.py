"""Nets written for Caffe forks (PSPNet, ICNet, DeepLab v2, DeconvNet, CRF-RNN, ENet, SegNet,
DIGITS' NVcaffe): `orchestrate check` exits 2 with every fork layer type and field at once,
the fork it comes from, the layers that use it and the BVLC way (or that BVLC has none)."""

from __future__ import annotations

import pytest

from common.errors import UserError
from nets import forks
from nets.doctor import diagnose
from orchestrator.cli import main
from tests.nets import public

pytestmark = pytest.mark.caffe


@pytest.mark.parametrize("name", public.FORK_NETS)
def test_fork_net_is_answered_with_every_fork_token_at_once(name, capsys):
    entry = public.REGISTRY[name]
    rc = main(["check", "--prototxt", str(public.PUBLIC / entry.file)])
    err = capsys.readouterr().err
    assert rc == 2
    assert entry.fork and forks.FORKS[entry.fork] in err
    missing = [t for t in entry.fork_tokens if t not in err]
    assert not missing, f"{name}: not named: {missing}"
    ways = {(forks.FIELDS.get(t) or forks.TYPES.get(t) or forks.V1_TYPES[t]).bvlc for t in entry.fork_tokens}
    assert err.count("-> BVLC:") == len(ways)  # one line per BVLC way, each token under its way
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("name", "layers"),
    [
        (
            "pspnet50-ade20k",
            [
                "conv5_3_pool1_interp",
                "conv5_3_pool2_interp",
                "conv5_3_pool3_interp",
                "conv5_3_pool6_interp",
                "conv6_interp",
            ],
        ),
        ("deconvnet-stage1", ["unpool1", "unpool2", "unpool3", "unpool4", "unpool5", "seg-accuracy"]),
        ("deeplabv2-aspp-vgg16", ["label_shrink", "accuracy"]),
        ("crfrnn", ["inference1"]),
        ("digits-binary-segmentation", ["lossL1"]),
    ],
)
def test_fork_layers_are_named(name, layers):
    with pytest.raises(UserError) as e:
        diagnose(str(public.PUBLIC / public.REGISTRY[name].file), dynamic=False)
    assert all(layer in str(e.value) for layer in layers)


def test_pspnet_is_not_called_a_segnet_net_and_interp_gets_the_bilinear_deconvolution():
    with pytest.raises(UserError) as e:
        diagnose(str(public.PUBLIC / "pspnet50-ade20k.deploy.prototxt"), dynamic=False)
    head = str(e.value).split("In BVLC terms")[0]
    assert "PSPNet" in head and "caffe-segnet" not in head
    assert "zoom_factor" in str(e.value) and 'weight_filler { type: "bilinear" }' in str(e.value)


def test_bvlc_has_none_is_said_plainly():
    with pytest.raises(UserError) as e:
        diagnose(str(public.PUBLIC / "crfrnn.deploy.prototxt"), dynamic=False)
    assert "BVLC has no CRF layer" in str(e.value)
    with pytest.raises(UserError) as e:
        diagnose(str(public.PUBLIC / "digits-binary-segmentation.train_val.prototxt"), dynamic=False)
    assert "BVLC has no L1 loss" in str(e.value) and "EuclideanLoss" in str(e.value)


def test_scan_reads_v1_enum_types_and_ignores_comments_and_strings():
    text = (
        "# type: BN in a comment\n"
        'layers { name: "u1" type: UNPOOLING bottom: "x" top: "y" }\n'
        'layer { name: "n" type: "Convolution" param { name: "BN" } }\n'
        'layer {\n  name: "up"\n  type: "Interp"\n  interp_param { zoom_factor: 2 }\n}\n'
    )
    hits = {h.token: h for h in forks.scan(text)}
    assert set(hits) == {"UNPOOLING", "Interp", "interp_param"}
    assert hits["UNPOOLING"].layers == ["u1"] and hits["Interp"].layers == ["up"] == hits["interp_param"].layers
    assert hits["Interp"].lines == [6]
