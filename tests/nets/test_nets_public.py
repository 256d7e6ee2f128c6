"""The doctor on the nets users actually have: the official FCN nets (fcn.berkeleyvision.org)
through `orchestrate check`, with random backbone weights and without, and SegNet-Tutorial's
net for the caffe-segnet fork."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.errors import UserError
from nets.doctor import diagnose
from orchestrator.cli import main
from tests.nets import public

pytestmark = pytest.mark.caffe


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, ...], Path]:
    """One random caffemodel per backbone (VGG16 for four nets, AlexNet for one)."""
    tmp = tmp_path_factory.mktemp("backbones")
    return {
        public.VGG16: public.backbone_weights(
            public.with_input_layer("voc-fcn32s", tmp), public.VGG16, tmp / "vgg16.caffemodel"
        ),
        public.ALEXNET: public.backbone_weights(
            public.with_input_layer("voc-fcn-alexnet", tmp), public.ALEXNET, tmp / "alexnet.caffemodel"
        ),
    }


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict]]:
    """`orchestrate check ... --json`: exit code and the findings."""
    rc = main(["check", *args, "--json"])
    return rc, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", list(public.NETS))
def test_official_net_with_backbone_weights_is_ready(name, weights, tmp_path, capsys):
    _, _, backbone, classifiers = public.NETS[name]
    net = public.with_input_layer(name, tmp_path)
    rc, found = check(
        capsys, "--prototxt", str(net), "--solver", str(public.solver(name)), "--weights", str(weights[backbone])
    )
    assert [f for f in found if f["severity"] == "error"] == [] and rc == 0
    # FCN zero-fills its classifiers on purpose: they read live features and learn
    zero = {f["layer"]: f for f in found if f["code"] == "zero-init"}
    assert set(zero) == set(classifiers)
    assert all(f["severity"] == "info" and "gradient" in f["message"] for f in zero.values())
    codes = {f["code"] for f in found}
    assert not codes & {"dead-top", "zero-gradient", "deconv-group", "net-invalid", "weights-skipped"}


@pytest.mark.parametrize("name", list(public.NETS))
def test_official_net_without_weights_names_the_pretrained_layers(name, tmp_path, capsys):
    _, _, backbone, _ = public.NETS[name]
    net = public.with_input_layer(name, tmp_path)
    rc, found = check(capsys, "--prototxt", str(net), "--solver", str(public.solver(name)), "--static")
    assert rc == 1
    [first] = [f for f in found if f["code"] == "zero-init" and f["layer"] == backbone[0]]
    assert first["severity"] == "error" and first["data"]["layers"] == list(backbone)
    assert all(layer in first["message"] for layer in (backbone[0], backbone[-1]))
    assert "pretrained" in first["message"] and "--weights" in first["fix"] and "weights:" in first["fix"]
    # one finding for the backbone, not one per layer
    assert not [f for f in found if f["code"] == "zero-init" and f["layer"] in backbone[1:]]


def test_segnet_tutorial_net_is_answered_with_the_fork_and_bvlc_equivalents(tmp_path, capsys):
    path = public.PUBLIC / "segnet_basic_train.prototxt"
    with pytest.raises(UserError) as e:
        diagnose(str(path), dynamic=False)
    text = str(e.value)
    assert "caffe-segnet" in text and "dense_image_data_param" in text
    assert "BatchNorm" in text and "Scale" in text  # for BN / bn_param
    assert "Deconvolution" in text and "bilinear" in text  # for Upsample
    assert "orchestrate data build" in text and "PairedDataLayer" in text  # for DenseImageData
    assert "InfogainLoss" in text  # for class_weighting
    assert main(["check", "--prototxt", str(path)]) == 2
    assert "caffe-segnet" in capsys.readouterr().err
