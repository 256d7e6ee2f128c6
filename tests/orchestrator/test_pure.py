"""The pure decisions, fed with made-up numbers: surgery kernel, metrics, rules, plateaus."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.errors import UserError
from nets import bilinear
from orchestrator import metrics
from orchestrator.train import decisions, rules
from orchestrator.train.stats import BlobStat


def independent_bilinear(size: int) -> np.ndarray:
    """Bilinear interpolation weights from their definition: weight of a source pixel for
    upsampling by f = ceil(size/2) is (1 - |x - c| / f) per axis (FCN / Long et al.)."""
    f = math.ceil(size / 2)
    c = (2 * f - 1 - f % 2) / (2 * f)
    w = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            w[i, j] = (1 - abs(i / f - c)) * (1 - abs(j / f - c))
    return w


@pytest.mark.parametrize("stride", [2, 3, 4, 8, 16, 32])
def test_bilinear_kernel_matches_independent_formula(stride):
    k = bilinear.kernel_size_for_stride(stride)
    assert k == 2 * stride - stride % 2
    np.testing.assert_allclose(bilinear.bilinear_kernel(k), independent_bilinear(k), atol=1e-12)


def test_bilinear_weights_fcn_layout():
    w = bilinear.bilinear_weights((5, 1, 16, 16), group=5, layer="up")
    assert all(np.allclose(w[c, 0], bilinear.bilinear_kernel(16)) for c in range(5))
    d = bilinear.bilinear_weights((3, 3, 4, 4), group=1, layer="up")
    assert np.allclose(d[0, 0], bilinear.bilinear_kernel(4)) and np.all(d[0, 1] == 0)
    assert bilinear.is_bilinear(w, 5) and not bilinear.is_bilinear(w * 2, 5)


def test_bilinear_weights_rejects_mixing_shapes():
    with pytest.raises(UserError, match="up2.*mix classes"):
        bilinear.bilinear_weights((4, 3, 4, 4), group=1, layer="up2")
    with pytest.raises(UserError, match="not square"):
        bilinear.bilinear_weights((2, 1, 4, 3), group=2, layer="up")


def test_metrics_match_hand_computed_confusion():
    label = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 1]])
    conf = metrics.confusion(pred, label, 3, 255)
    # rows true, cols predicted; the 255 pixel is ignored
    assert conf.tolist() == [[1, 1, 0], [0, 3, 0], [1, 0, 1]]
    s = metrics.scores(conf)
    assert s["pixel_accuracy"] == pytest.approx(5 / 7)
    assert s["mean_accuracy"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    ius = [1 / (2 + 2 - 1), 3 / (3 + 4 - 3), 1 / (2 + 1 - 1)]
    assert s["per_class_iu"] == pytest.approx(ius)
    assert s["mean_iu"] == pytest.approx(np.mean(ius))
    assert s["fw_iu"] == pytest.approx(2 / 7 * ius[0] + 3 / 7 * ius[1] + 2 / 7 * ius[2])


def test_metrics_class_never_seen_is_none():
    s = metrics.scores(metrics.confusion(np.zeros(4), np.zeros(4), 3, None))
    assert s["per_class_iu"] == [1.0, None, None] and s["mean_iu"] == 1.0


def test_mean_iu_counts_a_class_predicted_but_absent_from_the_labels():
    """FCN's mean IU averages over classes in the labels OR the predictions: a class the net
    predicts where no pixel has it has IU 0 and pulls the mean down (not dropped)."""
    label = np.array([0, 0, 0, 0, 2, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])  # class 1 predicted, never labelled; class 3 neither
    conf = metrics.confusion(pred, label, 4, None)
    assert conf.sum(axis=1)[1] == 0 and conf.sum(axis=0)[1] == 2
    s = metrics.scores(conf)
    assert s["per_class_iu"] == [pytest.approx(0.5), 0.0, 1.0, None]
    assert s["mean_iu"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert s["mean_accuracy"] == pytest.approx((0.5 + 1.0) / 2)  # accuracy: labelled classes only


T = rules.Thresholds(loss_factor=5, loss_window=10, warmup=3)


def test_loss_rules():
    assert rules.check_loss(1, math.nan, [], T)[0].code == "non-finite-loss"
    assert rules.check_loss(5, 87.3365, [1.0] * 5, T)[0].code == "loss-saturated"
    assert rules.check_loss(5, 60.0, [1.0, 1.1, 0.9, 1.0, 1.2], T)[0].code == "loss-explosion"
    assert rules.check_loss(5, 1.3, [1.0, 1.1, 0.9, 1.0, 1.2], T) == []
    assert rules.check_loss(2, 60.0, [1.0] * 5, T) == []  # still in warm-up


@pytest.mark.parametrize("t", [T, rules.Thresholds()], ids=["factor-5", "default"])
def test_loss_explosion_fires_just_over_the_factor(t):
    """The factor is the boundary: 1% under it is normal noise, 1% over it is an explosion."""
    history = [0.8, 1.2, 1.0, 0.9, 1.1, 1.0]  # median 1.0
    assert rules.check_loss(10, 0.99 * t.loss_factor, history, t) == []
    found = rules.check_loss(10, 1.01 * t.loss_factor, history, t)
    assert [f.code for f in found] == ["loss-explosion"] and found[0].data["median"] == 1.0


def test_default_loss_factor_is_ten():
    """The documented default (`checks.loss_factor`, 10x the running median) in both places."""
    from orchestrator.config.experiment import ChecksCfg

    assert rules.Thresholds().loss_factor == ChecksCfg().loss_factor == 10.0


def stat(name, kind="param", layer="conv1", asum=1.0, sumsq=1.0, diff=0.01, count=10):
    return BlobStat(name, kind, layer, count, asum, diff * count, sumsq, diff * diff)


def test_stats_rules():
    found = rules.check_stats(20, [stat("conv1/0"), stat("conv2/0", layer="conv2", asum=math.inf)], T)
    assert [f.code for f in found] == ["non-finite"] and found[0].layer == "conv2"
    found = rules.check_stats(20, [stat("conv1/0", asum=0.0, sumsq=0.0, diff=0.0)], T)
    assert found[0].code == "zero-param" and "weight_filler" in found[0].fix
    assert rules.check_stats(20, [stat("relu1", kind="top", asum=0.0)], T)[0].code == "dead-top"
    assert rules.check_stats(20, [stat("label", kind="top", asum=0.0)], T, exempt={"label"}) == []
    big = stat("conv1/0", sumsq=1.0, diff=10.0)
    assert big.update_ratio == pytest.approx(10.0)
    assert rules.check_stats(20, [big], T)[0].code == "update-ratio"


def test_diagnosis_names_iteration_layers_and_fix():
    trig = rules.check_loss(7, math.inf, [], T)[0]
    d = rules.diagnose(7, trig, [stat("conv1/0", diff=0.5), stat("score/0", layer="score", diff=5.0)], 1e4, "NONE")
    assert d.code == "diverged" and "iteration 7" in d.message and "score" in d.message
    assert "base_lr to 1000" in d.fix and "normalization: VALID" in d.fix


def test_plateau_and_reduced_lr():
    p = decisions.Plateau(patience=2, min_delta=0.01)
    assert p.update(10, 0.5) and not p.update(20, 0.505) and not p.exhausted
    assert not p.update(30, 0.4) and p.exhausted and p.best_iter == 10
    q = decisions.Plateau(patience=2)
    q.load_state_dict(p.state_dict())
    assert q.best == 0.5 and q.bad == 2
    assert decisions.reduced_lr(1e-3, 0.1, 5e-4) == 5e-4


def test_jsonl_log_lines_are_readable_while_open(tmp_path):
    """metrics.jsonl stays open during a run: each record must be on disk (flushed) at once,
    with non-finite numbers as null, so a killed run keeps every finished iteration."""
    from orchestrator.jsonio import JsonlLog, read_jsonl

    log = JsonlLog(tmp_path / "m.jsonl")
    log.write({"iter": 1, "loss": 0.5})
    log.write({"iter": 2, "loss": math.nan, "stats": {"top": {"x": {"sumsq_data": math.inf}}}})
    recs = read_jsonl(tmp_path / "m.jsonl")  # read through another handle before close
    log.close()
    assert [r["iter"] for r in recs] == [1, 2]
    assert recs[1]["loss"] is None and recs[1]["stats"]["top"]["x"]["sumsq_data"] is None
