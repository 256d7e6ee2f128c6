"""The doctor on the nets users actually have: the official FCN nets (fcn.berkeleyvision.org)
through `orchestrate check`, with random backbone weights and without, SegNet-Tutorial's
net for the caffe-segnet fork, and a U-Net with valid convolutions whose label is cropped to
its scores inside the net."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.errors import UserError
from nets.doctor import diagnose
from nets.prototxt import load_net
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


def _without_label_crop(name: str, out: Path) -> Path:
    """The public net with its data layer swapped but its label fed to the loss as published."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    net = text_format.Parse(public.with_input_layer(name, out).read_text(), caffe_pb2.NetParameter())
    kept = [x for x in net.layer if not x.name.endswith("_crop") or x.bottom[0] not in public.REGISTRY[name].label_tops]
    for layer in kept:
        layer.bottom[:] = [b.removesuffix("_crop") for b in layer.bottom]
        del layer.propagate_down[:]
    del net.layer[:]
    net.layer.extend(kept)
    path = out / f"{name}.published.prototxt"
    path.write_text(text_format.MessageToString(net))
    return path


def test_unet_with_its_label_cropped_in_the_net_checks_clean(tmp_path, capsys):
    """A U-Net with valid convolutions: scores (S - 184) a side, the label cropped to them inside
    the net. The probe fills the label input (not the crop) with classes: no false
    label-out-of-range, no error at all."""
    import caffe

    entry = public.REGISTRY["unet-valid"]
    net = public.with_input_layer("unet-valid", tmp_path)
    rc, found = check(capsys, "--prototxt", str(net))
    assert [f for f in found if f["severity"] == "error"] == [] and rc == 0
    built = caffe.Net(str(public.with_input_layer("unet-valid", tmp_path, size=188)), caffe.TRAIN)
    assert built.blobs[entry.score].data.shape == (1, entry.num_classes, 4, 4)  # 188 - 184
    assert built.blobs["label_crop"].data.shape == (1, 1, 4, 4)
    [loss] = [x for x in load_net(net).layer if x.type == "SoftmaxWithLoss"]
    assert list(loss.bottom) == [entry.score, "label_crop"] and list(loss.propagate_down) == [True, False]


def test_unet_label_as_published_gets_the_unet_fix(tmp_path, capsys):
    """Fed the full-size label, Caffe refuses the loss; the advice is the U-Net's (crop the label
    to the scores), not FCN's (crop the scores to the input)."""
    rc, found = check(capsys, "--prototxt", str(_without_label_crop("unet-valid", tmp_path)))
    [invalid] = [f for f in found if f["code"] == "net-invalid"]
    assert rc == 1 and invalid["layer"] == "loss" and "Number of labels must match" in invalid["message"]
    assert "Crop the label with the score blob" in invalid["fix"] and "propagate_down" in invalid["fix"]


# a valid 3x3 convolution scores 10x10 of a 12x12 input; the label is cropped to it in the net
CROP_NET = (
    'layer { name: "in" type: "Input" top: "data" top: "label" input_param { shape { dim: 1 dim: 3 dim: 12 '
    "dim: 12 } shape { dim: 1 dim: 1 dim: 12 dim: 12 } } }\n"
    'layer { name: "score" type: "Convolution" bottom: "data" top: "score" convolution_param { num_output: 2 '
    'kernel_size: 3 weight_filler { type: "msra" } } }\n'
    'layer { name: "label_crop" type: "Crop" bottom: "label" bottom: "score" top: "label_crop" '
    "crop_param { axis: 2 offset: 1 } }\n"
    'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label_crop" top: "loss" '
    "loss_param { ignore_label: 255 } }\n"
)


def test_label_crop_without_propagate_down_is_named(tmp_path, capsys):
    """A Crop of the label to the scores reads a learned blob, so Caffe backpropagates into the
    label and aborts: the fix names propagate_down."""
    net = tmp_path / "crop.prototxt"
    net.write_text(CROP_NET)
    rc, found = check(capsys, "--prototxt", str(net))
    [invalid] = [f for f in found if f["code"] == "net-invalid"]
    assert rc == 1 and invalid["layer"] == "loss" and "propagate_down: false" in invalid["fix"]
    assert not [f for f in found if f["code"] == "label-out-of-range"]


def test_label_inputs_follow_the_label_through_a_crop(tmp_path):
    """The probe fills what the loss reads as a label through a Crop: the Input top is a label."""
    from nets.probe import label_inputs

    net = tmp_path / "crop.prototxt"
    net.write_text(CROP_NET)
    labels = label_inputs(load_net(net), "TRAIN")
    assert set(labels) == {"label", "label_crop"}
    assert labels["label"]["scores"] == ["score"] and labels["label"]["ignore"] == 255
    assert labels["label"]["readers"] == ["loss"] and labels["label"]["kind"] == "class"
