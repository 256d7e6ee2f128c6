"""The compact net's FCN-16s/8s-style skips (`skips: 1|2`): structure, shapes at any input size,
the doctor's verdict (no false errors on the zero-filled skip scores), and training in real Caffe."""

from __future__ import annotations

import numpy as np
import pytest

import nets
from common.errors import UserError
from nets.doctor import diagnose
from nets.prototxt import parse_net
from tests.nets.test_nets_generate import K, layers_by_type, source

pytestmark = pytest.mark.caffe


def skip_net(lmdb: tuple[str, str], skips: int, batch: int = 2, **kw) -> nets.GeneratedNet:
    return nets.generate(
        "compact",
        num_classes=K,
        train_data=source(lmdb, batch),
        val_data=source(lmdb, 1),
        width=8,
        depth=3,
        batch_norm=True,
        skips=skips,
        **kw,
    )


def test_skip_layers_fillers_and_meta(small_lmdb):
    g = skip_net(small_lmdb, 2)
    assert g.meta["upsample_layers"] == ["upscore_pool2", "upscore_pool1", "upscore"]
    assert (g.meta["skips"], g.meta["total_stride"]) == (2, 2)
    convs = {x.name: x for x in layers_by_type(g.train, "Convolution")}
    for name in ("score_pool2", "score_pool1"):
        cp = convs[name].convolution_param
        # explicitly zero, as FCN's score_pool layers, and learned like every other conv
        assert (cp.weight_filler.type, cp.weight_filler.value, cp.kernel_size[0]) == ("constant", 0, 1)
        assert [p.lr_mult for p in convs[name].param] == [1, 2]
    assert convs["score_fr"].convolution_param.weight_filler.type == "msra"
    fuses = layers_by_type(g.train, "Eltwise")
    assert [(f.name, list(f.bottom)) for f in fuses] == [
        ("fuse_pool2", ["upscore_pool2c", "score_pool2"]),
        ("fuse_pool1", ["upscore_pool1c", "score_pool1"]),
    ]
    ups = {x.name: x.convolution_param for x in layers_by_type(g.train, "Deconvolution")}
    assert {n: (c.stride[0], c.kernel_size[0], c.group, c.weight_filler.type) for n, c in ups.items()} == {
        "upscore_pool2": (2, 4, K, "bilinear"),
        "upscore_pool1": (2, 4, K, "bilinear"),
        "upscore": (2, 4, K, "bilinear"),
    }
    # skips 0 is the v1 net, unchanged
    plain = skip_net(small_lmdb, 0)
    assert plain.meta["upsample_layers"] == ["upscore"] and not layers_by_type(plain.train, "Eltwise")


@pytest.mark.parametrize("skips", [1, 2])
def test_skip_scores_reach_full_resolution_at_any_size(small_lmdb, tmp_path, skips):
    import caffe

    # 37 x 45 and 180 x 240: Caffe's pooling rounds up, so the x2 maps are cropped to the skips
    for shape in ((37, 45), (180, 240)):
        g = skip_net(small_lmdb, skips, deploy_shape=shape)
        paths = g.write(tmp_path)
        deploy = caffe.Net(str(paths["deploy"]), caffe.TEST)
        deploy.forward()
        assert deploy.blobs["prob"].data.shape == (1, K, *shape)
    offsets = [c.crop_param.offset[0] for c in layers_by_type(g.deploy, "Crop")]
    assert offsets == ([1, 2] if skips == 1 else [1, 1, 1])  # depth 3: final stride 4 or 2


def test_doctor_finds_no_errors_on_the_skip_net(small_lmdb, tmp_path):
    g = skip_net(small_lmdb, 2)
    paths = g.write(tmp_path)
    found = diagnose(str(paths["train"]), val_prototxt=str(paths["val"]), log_dir=str(tmp_path))
    assert [f for f in found if f.severity != "info"] == []
    zero = {f.layer for f in found if f.code == "zero-init"}
    assert zero == {"score_pool2", "score_pool1"}
    assert all("recovers" == f.data.get("reason") for f in found if f.code == "zero-init")


def test_skip_net_trains_and_the_skip_scores_learn(lmdb64, tmp_path):
    import caffe

    caffe.set_mode_cpu()
    caffe.set_random_seed(0)
    g = nets.generate(
        "compact",
        num_classes=K,
        train_data=source(lmdb64, 8),
        val_data=None,
        width=16,
        depth=3,
        batch_norm=True,
        skips=2,
    )
    paths = g.write(tmp_path)
    (tmp_path / "solver.prototxt").write_text(
        f'train_net: "{paths["train"]}"\ntype: "Adam"\nbase_lr: 0.002\nmomentum: 0.9\nmomentum2: 0.999\n'
        f'lr_policy: "fixed"\nweight_decay: 0.0005\nsnapshot_prefix: "{tmp_path}/s"\n'
    )
    solver = caffe.get_solver(str(tmp_path / "solver.prototxt"))

    def step() -> float:
        solver.step(1)
        return float(solver.net.blobs["loss"].data)

    losses = [step() for _ in range(41)]
    assert np.mean(losses[-5:]) < 0.5 * losses[0]
    for name in ("score_pool2", "score_pool1"):
        assert np.abs(solver.net.params[name][0].data).max() > 1e-3, f"{name} stayed at zero"
    scores, labels = solver.net.blobs["score"].data, solver.net.blobs["label"].data[:, 0]
    assert (scores.argmax(1) == labels).mean() > 0.85


def test_bad_skips_are_user_errors(small_lmdb):
    with pytest.raises(UserError, match="skips"):
        skip_net(small_lmdb, 3)  # depth 3: pool1 and pool2 only
    with pytest.raises(UserError, match="skips"):
        nets.generate("fcn8s", num_classes=K, train_data=source(small_lmdb), val_data=None, skips=1)
    text = skip_net(small_lmdb, 1).train
    assert {x.name for x in parse_net(text).layer} >= {"score_pool2", "fuse_pool2", "upscore_pool2c"}
