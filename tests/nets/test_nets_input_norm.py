"""The compact net's `input_norm: mvn` (each image's channels brought to mean 0, variance 1 by an
MVN layer instead of a constant scale): structure and meta, invariance to a change of light in
real Caffe, the doctor's verdict, training, and the refusals (FCN nets, unknown values)."""

from __future__ import annotations

import numpy as np
import pytest

import nets
from common.errors import UserError
from nets.doctor import diagnose
from orchestrator.config import experiment as config
from tests.nets.test_nets_generate import K, layers_by_type, source
from tests.nets.test_nets_skips import skip_net

pytestmark = pytest.mark.caffe


def mvn_net(lmdb: tuple[str, str], batch: int = 2) -> nets.GeneratedNet:
    """The skip tests' net (width 8, depth 3, BatchNorm, one skip) with input_norm mvn."""
    return skip_net(lmdb, 1, batch, input_norm="mvn")


def test_mvn_replaces_the_constant_scale_in_every_net(small_lmdb):
    g = mvn_net(small_lmdb)
    for text in (g.train, g.val, g.deploy):
        (mvn,) = layers_by_type(text, "MVN")
        assert (mvn.name, list(mvn.bottom), list(mvn.top)) == ("data_mvn", ["data"], ["data_mvn"])
        assert (mvn.mvn_param.normalize_variance, mvn.mvn_param.across_channels) == (True, False)
        assert layers_by_type(text, "Power") == []
    assert g.meta["input_norm"] == "mvn" and "input_scale" not in g.meta
    plain = nets.generate("compact", num_classes=K, train_data=source(small_lmdb), val_data=None)
    assert plain.meta["input_norm"] == "scale" and plain.meta["input_scale"] == pytest.approx(1 / 64)
    assert len(layers_by_type(plain.deploy, "Power")) == 1 and layers_by_type(plain.deploy, "MVN") == []


def test_scores_do_not_change_with_the_light_of_the_image(small_lmdb, tmp_path):
    """A darker, lower-contrast, tinted copy of an image (per channel a * x + b) gets the same
    scores: what the option is for (a drive at dusk); the constant scale's net does not."""
    import caffe

    caffe.set_mode_cpu()
    rng = np.random.default_rng(0)
    image = rng.uniform(-120, 120, (1, 3, 37, 45)).astype(np.float32)
    dusk = image * np.array([0.4, 0.5, 0.6], np.float32)[None, :, None, None] + np.float32(-30.0)

    def scores(norm: str, x: np.ndarray) -> np.ndarray:
        g = nets.generate(
            "compact", num_classes=K, train_data=source(small_lmdb), val_data=None, deploy_shape=(37, 45),
            width=8, depth=3, batch_norm=True, input_norm=norm,
        )  # fmt: skip
        caffe.set_random_seed(0)
        net = caffe.Net(str(g.write(tmp_path / norm)["deploy"]), caffe.TEST)
        net.blobs["data"].data[...] = x
        net.forward()
        if norm == "mvn":
            normed = net.blobs["data_mvn"].data[0].reshape(3, -1)
            np.testing.assert_allclose(normed.mean(1), 0, atol=1e-4)
            np.testing.assert_allclose(normed.std(1), 1, atol=1e-3)
        return net.blobs["prob"].data.copy()

    np.testing.assert_allclose(scores("mvn", dusk), scores("mvn", image), atol=1e-4)
    assert np.abs(scores("scale", dusk) - scores("scale", image)).max() > 1e-3


def test_doctor_finds_no_errors_and_the_mvn_net_trains(lmdb64, small_lmdb, tmp_path):
    import caffe

    g = mvn_net(small_lmdb)
    paths = g.write(tmp_path / "doctor")
    found = diagnose(str(paths["train"]), val_prototxt=str(paths["val"]), log_dir=str(tmp_path))
    assert [f for f in found if f.severity == "error"] == []

    caffe.set_mode_cpu()
    caffe.set_random_seed(0)
    paths = mvn_net(lmdb64, batch=8).write(tmp_path / "train")
    (tmp_path / "solver.prototxt").write_text(
        f'train_net: "{paths["train"]}"\ntype: "Adam"\nbase_lr: 0.002\nmomentum: 0.9\nmomentum2: 0.999\n'
        f'lr_policy: "fixed"\nsnapshot_prefix: "{tmp_path}/s"\n'
    )
    solver = caffe.get_solver(str(tmp_path / "solver.prototxt"))
    losses = []
    for _ in range(41):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    assert np.mean(losses[-5:]) < 0.5 * losses[0]


def test_mvn_is_refused_where_it_does_not_apply(small_lmdb):
    with pytest.raises(UserError, match="input_norm"):
        nets.generate("fcn8s", num_classes=K, train_data=source(small_lmdb), val_data=None, input_norm="mvn")
    with pytest.raises(UserError, match="input_norm"):
        nets.generate("compact", num_classes=K, train_data=source(small_lmdb), val_data=None, input_norm="lrn")


def test_config_names_the_field_for_mvn_with_an_fcn_and_for_unknown_values():
    base = {"name": "x", "data": {"train": "d/train"}}
    with pytest.raises(UserError, match=r"net.input_norm: .*compact only"):
        config.from_dict({**base, "net": {"arch": "fcn8s", "input_norm": "mvn"}})
    with pytest.raises(UserError, match=r"net.input_norm: .*'scale'"):
        config.from_dict({**base, "net": {"input_norm": "whiten"}})
    assert config.from_dict({**base, "net": {"input_norm": "mvn"}}).net.input_norm == "mvn"
