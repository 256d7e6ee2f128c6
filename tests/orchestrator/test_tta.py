"""Test-time augmentation: the pure averaging (orchestrator.predict.tta) with made-up arrays and
fake nets, the schema and --tta syntax, and on real Caffe a tiny run validating with TTA whose
snapshot `predict --eval --tta` scores the same, and mirror images predicted as mirror images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import UserError
from orchestrator.config.experiment import from_dict
from orchestrator.jsonio import read_jsonl
from orchestrator.predict.tta import TTA, parse, probabilities, resize_bilinear, softmax
from tests.orchestrator.conftest import data_layers, experiment, orchestrate, unet, write_exp

RNG = np.random.default_rng(0)


def _conv_net(x: np.ndarray) -> np.ndarray:
    """A fake net that is not flip-equivariant: each class score looks at the pixel to the right."""
    shifted = np.concatenate([x[..., 1:], x[..., -1:]], axis=-1)
    return np.concatenate([x[:, :1] * 3, shifted[:, :1] * 2 - x[:, 1:2], x[:, 1:2] - shifted[:, :1]], axis=1)


def _pointwise_net(x: np.ndarray) -> np.ndarray:
    """A fake per-pixel net (flip- and scale-equivariant where the input is constant)."""
    return np.concatenate([x[:, :1] * 2, -x[:, :1], x[:, 1:2]], axis=1)


def test_flip_equivariant_net_tta_equals_plain():
    x = RNG.normal(size=(2, 2, 5, 7))
    plain = softmax(_pointwise_net(x))
    assert np.allclose(probabilities(_pointwise_net, x, TTA(flip=True)), plain, atol=1e-12)


def test_flip_of_a_non_equivariant_net_is_the_average_of_both_views():
    x = RNG.normal(size=(1, 2, 4, 6))
    plain = softmax(_conv_net(x))
    mirrored = softmax(_conv_net(x[..., ::-1].copy()))[..., ::-1]
    got = probabilities(_conv_net, x, TTA(flip=True))
    assert not np.allclose(plain, mirrored)  # the fake net does see the flip
    assert np.allclose(got, (plain + mirrored) / 2, atol=1e-12)
    # the flip of a flipped image gives the same scores, flipped
    assert np.allclose(probabilities(_conv_net, x[..., ::-1].copy(), TTA(flip=True))[..., ::-1], got, atol=1e-12)


def test_probabilities_not_logits_are_averaged():
    x = np.zeros((1, 1, 2, 2))
    calls = iter([np.array([10.0, 0.0, 0.0]), np.array([-4.0, 0.0, 3.0])])

    def net(view: np.ndarray) -> np.ndarray:
        return np.broadcast_to(next(calls)[None, :, None, None], (1, 3, *view.shape[2:])).copy()

    got = probabilities(net, x, TTA(flip=True))[0, :, 0, 0]
    p1, p2 = (np.exp(v) / np.exp(v).sum() for v in ([10.0, 0, 0], [-4.0, 0, 3]))
    assert np.allclose(got, (p1 + p2) / 2)
    # the mean of the logits would pick class 0 with a different probability
    logits_mean = np.exp([3.0, 0, 1.5]) / np.exp([3.0, 0, 1.5]).sum()
    assert not np.allclose(got, logits_mean, atol=1e-3)
    assert abs(got.sum() - 1) < 1e-12


def test_scales_resize_the_input_and_average_the_resized_probabilities():
    seen: list[tuple[int, int]] = []
    outs = {(4, 6): np.array([2.0, 0.0]), (2, 3): np.array([0.0, 1.0]), (6, 9): np.array([0.0, 0.0])}

    def net(view: np.ndarray) -> np.ndarray:
        seen.append(view.shape[2:])
        return np.broadcast_to(outs[view.shape[2:]][None, :, None, None], (1, 2, *view.shape[2:])).copy()

    x = RNG.normal(size=(1, 3, 4, 6))
    got = probabilities(net, x, TTA(scales=(0.5, 1.0, 1.5)))
    assert seen == [(2, 3), (4, 6), (6, 9)] and got.shape == (1, 2, 4, 6)
    want = sum(np.exp(v) / np.exp(v).sum() for v in outs.values()) / 3
    assert np.allclose(got, want[None, :, None, None])


def test_views_from_a_larger_source_replace_the_enlarged_input():
    from orchestrator.predict.forward import source_views

    asked: list[tuple[int, int]] = []

    def input_of(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        asked.append(size)
        return np.full((1, 3, size[1], size[0]), float(size[0]))

    image = np.zeros((12, 16, 3), np.uint8)  # H x W; the data stage resized it to 8 x 6
    view = source_views(image, (8, 6), input_of)
    assert view is not None and view(1.5).shape == (1, 3, 9, 12) and asked == [(12, 9)]
    assert source_views(image, None, input_of) is None and source_views(image[:6, :8], (8, 6), input_of) is None
    fed: list[np.ndarray] = []

    def net(v: np.ndarray) -> np.ndarray:
        fed.append(v)
        return np.zeros((1, 2, *v.shape[2:]))

    x = np.ones((1, 3, 6, 8))
    probabilities(net, x, TTA(scales=(1.0, 1.5)), view)
    assert fed[0] is x and fed[1].shape == (1, 3, 9, 12) and (fed[1] == 12).all()  # not x enlarged


def test_bilinear_resize_keeps_constants_and_matches_pixel_centres():
    a = np.full((1, 2, 3, 5), 0.25)
    assert np.allclose(resize_bilinear(a, (7, 4)), 0.25)
    ramp = np.arange(4.0)[None, None, None, :]  # 0 1 2 3 at centres 0.5 1.5 2.5 3.5
    assert np.allclose(resize_bilinear(ramp, (1, 2))[0, 0, 0], [0.5, 2.5])
    # as torch's interpolate(mode="bilinear", align_corners=False), which mmsegmentation uses
    assert np.allclose(resize_bilinear(ramp, (1, 8))[0, 0, 0], [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])


def test_tta_syntax_and_schema():
    assert parse("flip,scales=0.75,1,1.25") == TTA(True, (0.75, 1.0, 1.25))
    assert parse("scales=0.5,1") == TTA(False, (0.5, 1.0)) and parse("flip").label() == "flip"
    assert not parse("off").active and parse("flip,scales=0.75,1,1.25").label() == "flip,scales=0.75,1,1.25"
    for bad, word in (
        ("flop", "unknown item 'flop'"),
        ("scales=0", "> 0"),
        ("scales=1,x", "'x'"),
        ("scales=1,1", "repeat"),
    ):
        with pytest.raises(UserError, match=word):
            parse(bad)
    base = {"name": "t", "data": {"train": "x"}}
    exp = from_dict({**base, "validation": {"tta": {"flip": True, "scales": [0.75, 1, 1.25]}}})
    assert exp.validation.tta.flip and exp.validation.tta.scales == [0.75, 1.0, 1.25]
    assert not from_dict(base).validation.tta.flip and from_dict(base).validation.tta.scales == [1.0]
    for tta, word in (
        ({"scales": [0]}, "validation.tta.scales"),
        ({"scales": []}, "at least one"),
        ({"flp": 1}, "flip"),
    ):
        with pytest.raises(UserError, match=word):
            from_dict({**base, "validation": {"tta": tta}})


@pytest.mark.caffe
def test_predict_tta_equals_validation_tta_and_mirrors(synth_lmdb: Path, tmp_path: Path):
    run = tmp_path / "run"
    tta = {"flip": True, "scales": [0.75, 1, 1.25]}
    exp = experiment(synth_lmdb, solver={"max_iter": 40}, validation={"interval": 40, "tta": tta})
    r = orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    [val] = read_jsonl(run / "val.jsonl")
    assert val["tta"] == "flip,scales=0.75,1,1.25" and val["seconds"] > 0
    out = tmp_path / "pred"
    val_list = str(synth_lmdb / "raw" / "val.txt")
    args = ("--list", val_list, "--out", str(out), "--eval", "--quiet")
    r = orchestrate("predict", str(run), *args, "--tta", "flip,scales=0.75,1,1.25")
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((out / "eval.json").read_text())
    assert result["tta"] == val["tta"] and abs(result["mean_iu"] - val["mean_iu"]) < 1e-6
    assert "images/s" in r.stdout and "6 passes per image" in r.stdout
    # mirror images are predicted as mirror images with flip TTA; a symmetric image symmetrically
    first = synth_lmdb / "raw" / Path(open(val_list).read().split()[0])
    img = np.asarray(Image.open(first).convert("RGB"))
    pics = tmp_path / "mirror"
    pics.mkdir()
    half = img[:, : img.shape[1] // 2]
    for name, a in (("a", img), ("b", img[:, ::-1]), ("sym", np.concatenate([half, half[:, ::-1]], axis=1))):
        Image.fromarray(np.ascontiguousarray(a)).save(pics / f"{name}.png")
    out2 = tmp_path / "pred2"
    r = orchestrate("predict", str(run), "--images", str(pics), "--out", str(out2), "--quiet", "--tta", "flip")
    assert r.returncode == 0, r.stderr[-2000:]
    a, b, sym = (np.asarray(Image.open(out2 / f"{n}.png")) for n in ("a", "b", "sym"))
    assert np.array_equal(a, b[:, ::-1]) and np.array_equal(sym, sym[:, ::-1])
    r = orchestrate("predict", str(run), "--images", str(pics), "--out", str(tmp_path / "p3"), "--tta", "flip,x")
    assert r.returncode == 2 and "--tta 'flip,x'" in r.stderr and not (tmp_path / "p3").exists()


@pytest.mark.caffe
def test_a_net_scoring_only_its_label_crop_validates_without_tta_and_predict_refuses(synth_lmdb: Path, tmp_path: Path):
    net = tmp_path / "unet.prototxt"
    net.write_text(unet(synth_lmdb, 2))  # valid convolutions: 22x22 scores of a 32x32 input
    exp = experiment(
        synth_lmdb,
        net={"prototxt": str(net), "num_classes": 5, "ignore_label": 255},
        solver={"max_iter": 10},
        validation={"interval": 10, "tta": {"flip": True}},
    )
    run = tmp_path / "run"
    r = orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    [no_tta] = [f for f in json.loads((run / "summary.json").read_text())["findings"] if f["code"] == "no-tta"]
    assert "the centre its label crop keeps" in no_tta["message"]
    [val] = read_jsonl(run / "val.jsonl")
    assert "tta" not in val and 0 <= val["mean_iu"] <= 1
    out = tmp_path / "pred"
    r = orchestrate(
        "predict", str(run), "--list", str(synth_lmdb / "raw" / "val.txt"), "--out", str(out), "--tta", "flip"
    )
    assert r.returncode == 2 and "test-time augmentation needs class scores" in r.stderr and not out.exists()
    # an ensemble averages probabilities at every pixel too: refused with the net named
    r = orchestrate(
        "predict", str(run), "--list", str(synth_lmdb / "raw" / "val.txt"), "--out", str(out), "--ensemble", str(run)
    )
    assert r.returncode == 2 and "--ensemble" in r.stderr and "label crop" in r.stderr and not out.exists()


FIXED = """input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param { num_output: 192 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "score" type: "Reshape" bottom: "fc" top: "score"
  reshape_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
"""


@pytest.mark.caffe
def test_a_fixed_size_net_gets_tta_through_the_tiler(tmp_path: Path):
    import caffe

    from orchestrator.predict.deploy import DeployInfo
    from orchestrator.predict.forward import full_scores, tiled

    (tmp_path / "fixed.prototxt").write_text(FIXED)
    net = caffe.Net(str(tmp_path / "fixed.prototxt"), caffe.TEST)
    info = DeployInfo("data", "score", (1, 3, 8, 8), fully_convolutional=False)
    x = RNG.normal(size=(1, 3, 12, 20)).astype(np.float32)
    scores = tiled(net, info, x, full_scores)  # 2 x 3 tiles, the edges padded by reflection
    assert scores.shape == (1, 3, 12, 20) and scores.dtype == np.float32
    corner = np.pad(x, ((0, 0), (0, 0), (0, 4), (0, 4)), mode="reflect")[..., 8:16, 16:24].copy()
    assert np.allclose(scores[..., 8:12, 16:20], full_scores(net, info, corner)[..., :4, :4])
    assert np.array_equal(scores.argmax(axis=1), tiled(net, info, x))  # the class-id tiler agrees
    p = probabilities(lambda b: tiled(net, info, b, full_scores), x, TTA(True, (0.5, 1.0)))
    assert p.shape == (1, 3, 12, 20) and np.allclose(p.sum(axis=1), 1)


def _crop_net(d: Path) -> str:
    """A user's FCN-like net: pooling by 3, a 3x upsampling and a Crop to the data at offset 1,
    which a 32x32 input fits (33 >= 32 + 1) and a 24x24 one does not (24 < 25: Caffe aborts)."""
    return (
        data_layers(d, "TRAIN", "train", 2)
        + data_layers(d, "TEST", "val", 1)
        + """layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
layer { name: "pool" type: "Pooling" bottom: "conv1" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 3 } }
layer { name: "small" type: "Convolution" bottom: "pool" top: "small"
  convolution_param { num_output: 5 kernel_size: 1 weight_filler { type: "msra" } } }
layer { name: "up" type: "Deconvolution" bottom: "small" top: "up"
  convolution_param { num_output: 5 kernel_size: 3 stride: 3 weight_filler { type: "msra" } } }
layer { name: "score" type: "Crop" bottom: "up" bottom: "data" top: "score" crop_param { axis: 2 offset: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 normalization: VALID } }
"""
    )


@pytest.mark.caffe
def test_a_scale_the_net_refuses_is_tried_in_a_child_not_in_training(synth_lmdb: Path, tmp_path: Path):
    net = tmp_path / "crop.prototxt"
    net.write_text(_crop_net(synth_lmdb))
    exp = experiment(
        synth_lmdb,
        net={"prototxt": str(net), "num_classes": 5, "ignore_label": 255},
        solver={"max_iter": 10},
        validation={"interval": 10, "tta": {"scales": [0.75, 1]}},
    )
    run = tmp_path / "run"
    r = orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    [no_tta] = [f for f in summary["findings"] if f["code"] == "no-tta"]
    assert "(24x24, 32x32, W x H)" in no_tta["message"] and "out-of-bounds" in no_tta["message"], no_tta
    assert summary["status"] == "completed" and "tta" not in read_jsonl(run / "val.jsonl")[0]
