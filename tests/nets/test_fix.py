"""`orchestrate fix` on minimal nets, one per repair, through the real CLI: the finding is there
before (the doctor, with its one-batch probe on real Caffe), gone after, and the diff is the one
edit the repair makes. Also: idempotence, what is not repaired, bad input, the user's files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from nets.doctor import diagnose
from orchestrator.cli import main

pytestmark = pytest.mark.caffe

DATA_DIR = Path(__file__).parent / "data"
CONV = 'weight_filler { type: "msra" } bias_filler { type: "constant" }'
SOLVER = 'base_lr: 0.01\nmomentum: 0.9\nlr_policy: "fixed"\nmax_iter: 10\n'


def data_layers(lmdb: tuple[str, str], image_tp: str = "", label_tp: str = "") -> str:
    return (
        f'layer {{ name: "data" type: "Data" top: "data" transform_param {{ mean_value: 100 {image_tp} }}\n'
        f'  data_param {{ source: "{lmdb[0]}" batch_size: 2 backend: LMDB }} }}\n'
        f'layer {{ name: "label" type: "Data" top: "label" {label_tp}\n'
        f'  data_param {{ source: "{lmdb[1]}" batch_size: 2 backend: LMDB }} }}\n'
    )


def net_text(
    lmdb: tuple[str, str], body: str = "", *, conv: str = CONV, score: str = CONV, loss: str = "", **kw
) -> str:
    """data -> conv1 (8) -> [body] -> relu1 -> score (4) -> SoftmaxWithLoss."""
    return (
        data_layers(lmdb, **kw) + f'layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"\n'
        f"  convolution_param {{ num_output: 8 kernel_size: 3 pad: 1 {conv} }} }}\n"
        + body
        + 'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }\n'
        'layer { name: "score" type: "Convolution" bottom: "conv1" top: "score"\n'
        f"  convolution_param {{ num_output: 4 kernel_size: 1 {score} }} }}\n"
        f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" {loss} }}\n'
    )


def stats_dir(tmp_path: Path, num_classes: int = 4, weights: list[float] | None = None) -> str:
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    mf = weights or [1.0] * num_classes
    stats = {"num_classes": num_classes, "ignore_label": 255, "class_weights": {"median_frequency": mf}}
    (d / "stats.json").write_text(json.dumps(stats))
    return str(d)


def run_fix(tmp_path: Path, text: str, *args: str, solver: str | None = SOLVER, out: str = "out") -> dict:
    """Write the net (and solver), run `orchestrate fix`; the doctor before and after, the diff."""
    net = tmp_path / "net.prototxt"
    net.write_text(text)
    extra = list(args)
    if solver is not None:
        (tmp_path / "solver.prototxt").write_text(f'net: "{net}"\n' + solver)
        extra += ["--solver", str(tmp_path / "solver.prototxt")]
    data = dict(zip(extra[::2], extra[1::2], strict=False)).get("--data")
    stats = json.loads((Path(data) / "stats.json").read_text()) if data else None
    before = diagnose(str(net), data_stats=stats, solver=extra[extra.index("--solver") + 1] if solver else None)
    rc = main(["fix", "--prototxt", str(net), *extra, "--out", str(tmp_path / out)])
    o = tmp_path / out
    after = diagnose(
        str(o / "train_val.prototxt"), data_stats=stats, solver=str(o / "solver.prototxt") if solver else None
    )
    return {
        "rc": rc,
        "before": {(f.code, f.layer): f for f in before},
        "after": {(f.code, f.layer): f for f in after},
        "diff": net_part((o / "changes.diff").read_text()),
        "solver_diff": net_part((o / "changes.diff").read_text(), "solver.prototxt"),
        "changes": (o / "changes.md").read_text(),
        "net": (o / "train_val.prototxt").read_text(),
        "out": o,
    }


def net_part(diff: str, name: str = "train_val.prototxt") -> str:
    """The net's part of changes.diff (or the solver's, which follows it)."""
    parts = re.split(r"(?m)^(?=--- )", diff)
    return next((p for p in parts if p.startswith("--- ") and name in p.splitlines()[1]), "")


def added(diff: str) -> list[str]:
    return [x[1:].strip() for x in diff.splitlines() if x.startswith("+") and not x.startswith("+++")]


def removed(diff: str) -> list[str]:
    return [x[1:].strip() for x in diff.splitlines() if x.startswith("-") and not x.startswith("---")]


def layer_block(text: str, name: str) -> str:
    """The prototxt text of one layer of a fix's output (MessageToString layout)."""
    start = text.index(f'  name: "{name}"')
    end = text.find("\nlayer {", start)
    return text[start : end if end > 0 else None]


def test_zero_init_fills_the_conv_under_a_zero_classifier_and_leaves_the_classifier(small_lmdb, tmp_path):
    r = run_fix(tmp_path, net_text(small_lmdb, conv="", score=""))
    assert r["before"][("zero-init", "conv1")].severity == "error"
    assert r["before"][("zero-init", "score")].severity == "error"
    assert ("zero-init", "conv1") not in r["after"] and r["rc"] == 0
    # the classifier now reads live features and learns from zero, as FCN's do
    assert r["after"][("zero-init", "score")].severity == "info"
    assert added(r["diff"]) == [
        "weight_filler {",
        'type: "msra"',
        "}",
        "bias_filler {",
        'type: "constant"',
        "value: 0.0",
        "}",
    ]
    assert "weight_filler" not in layer_block(r["net"], "score") and removed(r["diff"]) == []


def test_zero_init_msra_before_a_relu_xavier_otherwise(small_lmdb, tmp_path):
    conv2 = (
        'layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"\n'
        "  convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }\n"
    )
    text = net_text(small_lmdb, conv2, conv="").replace(
        'bottom: "conv1" top: "conv1" }', 'bottom: "conv2" top: "conv2" }'
    )
    r = run_fix(tmp_path, text.replace('bottom: "conv1" top: "score"', 'bottom: "conv2" top: "score"'))
    assert r["before"][("zero-init", "conv1")].severity == "error"
    assert r["before"][("zero-init", "conv2")].severity == "error"
    assert not [k for k in r["after"] if k[0] == "zero-init"] and r["rc"] == 0
    assert 'type: "xavier"' in layer_block(r["net"], "conv1") and 'type: "msra"' in layer_block(r["net"], "conv2")


@pytest.mark.parametrize("scale", [0.1, 0.0], ids=["trained", "zeros"])
def test_zero_init_leaves_a_layer_the_weights_file_fills(small_lmdb, tmp_path, scale):
    """A filler never reaches a layer the weights file gives, not even all-zero weights (said)."""
    from caffe.proto import caffe_pb2

    model = caffe_pb2.NetParameter()
    layer = model.layer.add(name="conv1", type="Convolution")
    for shape in ((8, 3, 3, 3), (8,)):
        blob = layer.blobs.add()
        blob.shape.dim.extend(shape)
        blob.data.extend((np.random.default_rng(0).normal(0, 1, int(np.prod(shape))) * scale).tolist())
    (tmp_path / "w.caffemodel").write_bytes(model.SerializeToString())
    r = run_fix(tmp_path, net_text(small_lmdb, conv=""), "--weights", str(tmp_path / "w.caffemodel"))
    assert r["diff"] == "" and "## Changes (0)" in r["changes"]
    if scale == 0.0:
        assert r["before"][("zero-init", "conv1")].severity == "error" and r["rc"] == 1
        assert "the weights file gives this layer (a filler would be overwritten)" in r["changes"]


BN_PER_PHASE = (
    'layer { name: "bn_train" type: "BatchNorm" bottom: "conv1" top: "conv1" include { phase: TRAIN }\n'
    "  batch_norm_param { use_global_stats: false } }\n"
    'layer { name: "bn_test" type: "BatchNorm" bottom: "conv1" top: "conv1" include { phase: TEST }\n'
    "  batch_norm_param { use_global_stats: true } }\n"
    'layer { name: "sc" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }\n'
)


def test_bn_phase_duplicate_becomes_one_batchnorm(small_lmdb, tmp_path):
    r = run_fix(tmp_path, net_text(small_lmdb, BN_PER_PHASE))
    assert r["before"][("bn-phase-duplicate", "bn_test")].severity == "error"
    assert not [k for k in r["after"] if k[0].startswith("bn-")] and r["rc"] == 0
    assert 'name: "bn_test"' in removed(r["diff"]) and "phase: TRAIN" in removed(r["diff"])
    assert added(r["diff"]).count("lr_mult: 0.0") == 3 and r["net"].count('type: "BatchNorm"') == 1


def test_bn_global_stats_is_removed(small_lmdb, tmp_path):
    bn = (
        'layer { name: "bn" type: "BatchNorm" bottom: "conv1" top: "conv1"\n'
        "  batch_norm_param { use_global_stats: true } }\n"
    )
    scale = 'layer { name: "sc" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }\n'
    r = run_fix(tmp_path, net_text(small_lmdb, bn + scale))
    assert ("bn-global-stats", "bn") in r["before"] and ("bn-global-stats", "bn") not in r["after"]
    assert "use_global_stats: true" in removed(r["diff"]) and added(r["diff"]) == []


def test_bn_lr_mult_that_makes_caffe_abort_is_repaired(small_lmdb, tmp_path):
    bn = 'layer { name: "bn" type: "BatchNorm" bottom: "conv1" top: "conv1" param { lr_mult: 1 } }\n'
    scale = 'layer { name: "sc" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }\n'
    r = run_fix(tmp_path, net_text(small_lmdb, bn + scale))
    assert r["before"][("bn-lr-mult", "bn")].severity == "error"
    assert ("net-invalid", "bn") in r["before"] or any(k[0] == "net-invalid" for k in r["before"])  # Caffe aborts
    assert not any(k[0] in ("bn-lr-mult", "net-invalid") for k in r["after"]) and r["rc"] == 0
    assert "lr_mult: 1.0" in removed(r["diff"]) and added(r["diff"]).count("lr_mult: 0.0") == 3


def test_bn_without_scale_gets_a_scale_with_bias(small_lmdb, tmp_path):
    bn = 'layer { name: "bn" type: "BatchNorm" bottom: "conv1" top: "conv1" }\n'
    r = run_fix(tmp_path, net_text(small_lmdb, bn))
    assert ("bn-without-scale", "bn") in r["before"] and ("bn-without-scale", "bn") not in r["after"]
    assert 'name: "bn_scale"' in added(r["diff"]) and "bias_term: true" in added(r["diff"])
    assert r["net"].index('name: "bn_scale"') < r["net"].index('name: "relu1"')


UPSCORE = (
    'layer {{ name: "upscore" type: "Deconvolution" bottom: "score" top: "upscore" param {{ lr_mult: 0 }}\n'
    "  convolution_param {{ num_output: 4 group: {group} kernel_size: 4 stride: 2 pad: 1 {extra} }} }}\n"
)


def deconv_net(lmdb: tuple[str, str], group: int, extra: str = "") -> str:
    head = net_text(lmdb).replace('bottom: "score" bottom: "label"', 'bottom: "upscore" bottom: "label"')
    pool = (
        'layer { name: "pool" type: "Pooling" bottom: "conv1" top: "pool"\n'
        "  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"
    )
    head = head.replace('bottom: "conv1" top: "score"', 'bottom: "pool" top: "score"')
    at = head.index('layer { name: "loss"')
    relu_end = head.index('layer { name: "score"')
    return head[:relu_end] + pool + head[relu_end:at] + UPSCORE.format(group=group, extra=extra) + head[at:]


def test_deconv_group_becomes_one_bilinear_kernel_per_class(small_lmdb, tmp_path):
    r = run_fix(tmp_path, deconv_net(small_lmdb, 2, "bias_term: true"))
    assert r["before"][("deconv-group", "upscore")].severity == "error"
    assert not any(k[0].startswith("deconv-") for k in r["after"]) and r["rc"] == 0
    assert {"group: 2", "bias_term: true"} <= set(removed(r["diff"]))
    assert {"group: 4", "bias_term: false", 'type: "bilinear"', "decay_mult: 0.0"} <= set(added(r["diff"]))


def test_a_learned_decoder_is_left_as_it_is(small_lmdb, tmp_path):
    text = deconv_net(small_lmdb, 1, 'weight_filler { type: "msra" }').replace("lr_mult: 0 }", "lr_mult: 1 }")
    r = run_fix(tmp_path, text)
    assert not any(k[0].startswith("deconv-") for k in r["before"]) and r["diff"] == "" and r["rc"] == 0


def test_deconv_not_bilinear_is_repaired_when_nothing_else_fills_it(small_lmdb, tmp_path):
    """With the run's surgery off (the experiment's surgery.bilinear: false) the prototxt must
    fill it; with the surgery on, the doctor's info stays and nothing changes."""
    import yaml

    r = run_fix(tmp_path, deconv_net(small_lmdb, 4, "bias_term: false"), out="on")
    assert r["before"][("deconv-not-bilinear", "upscore")].severity == "info" and r["diff"] == ""
    exp = {
        "name": "x",
        "data": {"train": stats_dir(tmp_path), "batch_size": 2},
        "net": {"prototxt": str(tmp_path / "net.prototxt")},
        "solver": {"prototxt": str(tmp_path / "solver.prototxt")},
        "surgery": {"bilinear": False},
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    assert main(["fix", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "off")]) == 0
    diff = (tmp_path / "off" / "changes.diff").read_text()
    assert 'type: "bilinear"' in added(diff) and "group: 4" not in removed(diff)
    fixed = yaml.safe_load((tmp_path / "off" / "experiment.yaml").read_text())
    assert fixed["net"]["prototxt"] == str(tmp_path / "off" / "train_val.prototxt")
    found = diagnose(str(tmp_path / "off" / "train_val.prototxt"), surgery=False, dynamic=False)
    assert not [f for f in found if f.code.startswith("deconv-")]


def test_summed_loss_with_a_tiny_lr_gets_valid_and_the_per_pixel_default(small_lmdb, tmp_path):
    r = run_fix(
        tmp_path, net_text(small_lmdb, loss="loss_param { normalize: false }"), solver=SOLVER.replace("0.01", "1e-11")
    )
    assert ("loss-normalization-lr", "loss") in r["before"] and ("loss-normalization-lr", "loss") not in r["after"]
    assert removed(r["diff"]) == ["normalize: false"] and added(r["diff"]) == ["normalization: VALID"]
    assert "base_lr: 1e-11" in removed(r["solver_diff"]) and "base_lr: 0.01" in added(r["solver_diff"])
    assert "per-pixel default 0.01" in r["changes"]


def test_summed_loss_with_a_matching_lr_is_kept_unless_asked(small_lmdb, tmp_path):
    net = net_text(small_lmdb, loss="loss_param { normalize: false }")
    r = run_fix(tmp_path, net, solver=SOLVER.replace("0.01", "1e-5"), out="kept")
    assert r["before"][("loss-normalization-lr", "loss")].severity == "warning" and r["diff"] == ""
    assert "not repaired: warning loss-normalization-lr [loss] (a summed loss with a matching lr" in r["changes"]
    r = run_fix(tmp_path, net, "--normalize-loss", solver=SOLVER.replace("0.01", "1e-5"), out="norm")
    assert ("loss-normalization-lr", "loss") not in r["after"]
    # the same per-pixel step: 1e-5 summed over 32 x 32 pixels
    assert "base_lr: 0.01024" in added(r["solver_diff"]) and "same per-pixel step" in r["changes"]


def test_averaged_loss_with_an_lr_for_a_sum_is_raised(small_lmdb, tmp_path):
    r = run_fix(tmp_path, net_text(small_lmdb), solver=SOLVER.replace("0.01", "1e-10"))
    assert r["before"][("loss-normalization-lr", "loss")].severity == "error"
    assert ("loss-normalization-lr", "loss") not in r["after"] and r["diff"] == ""
    assert "base_lr: 0.01" in added(r["solver_diff"])


def test_an_experiments_own_solver_keys_are_fixed_in_its_yaml(small_lmdb, tmp_path):
    import yaml

    (tmp_path / "net.prototxt").write_text(net_text(small_lmdb))
    exp = {
        "name": "x",
        "data": {"train": stats_dir(tmp_path), "batch_size": 2},
        "net": {"prototxt": str(tmp_path / "net.prototxt")},
        "solver": {"type": "SGD", "base_lr": 1e-10, "momentum": 0.9, "max_iter": 10},
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    assert main(["check", str(tmp_path / "exp.yaml")]) == 1  # loss-normalization-lr: an lr for a sum
    assert main(["fix", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "out")]) == 0
    fixed = yaml.safe_load((tmp_path / "out" / "experiment.yaml").read_text())
    assert fixed["solver"]["base_lr"] == 0.01 and fixed["solver"]["max_iter"] == 10
    assert main(["check", str(tmp_path / "out" / "experiment.yaml")]) == 0


def test_ignore_label_and_num_output_from_stats(small_lmdb, tmp_path):
    r = run_fix(tmp_path, net_text(small_lmdb), "--data", stats_dir(tmp_path, num_classes=5))
    assert r["before"][("ignore-label-mismatch", "loss")].severity == "error"
    assert r["before"][("num-output-mismatch", "score")].severity == "error"
    assert not any(k[0] in ("ignore-label-mismatch", "num-output-mismatch") for k in r["after"])
    assert {"num_output: 5", "ignore_label: 255"} <= set(added(r["diff"])) and "num_output: 4" in removed(r["diff"])


def test_class_imbalance_becomes_infogain_with_the_data_stages_weights(small_lmdb, tmp_path):
    weights = [0.05, 1.0, 2.0, 4.0]
    r = run_fix(
        tmp_path,
        net_text(small_lmdb, loss="loss_param { ignore_label: 255 }"),
        "--data",
        stats_dir(tmp_path, 4, weights),
    )
    assert r["before"][("class-imbalance", "loss")].data["span"] == 80.0
    assert not [k for k in r["after"] if k[0] in ("class-imbalance", "net-invalid")] and r["rc"] == 0
    h = r["out"] / "infogain_H_sqrt_median_frequency.binaryproto"
    assert 'type: "InfogainLoss"' in added(r["diff"]) and f'source: "{h}"' in added(r["diff"])
    from caffe.proto import caffe_pb2

    blob = caffe_pb2.BlobProto.FromString(h.read_bytes())
    assert np.allclose(np.diag(np.array(blob.data).reshape(4, 4)), np.sqrt(weights))


def test_unsynced_augmentation_becomes_the_paired_layer(small_lmdb, tmp_path):
    r = run_fix(tmp_path, net_text(small_lmdb, image_tp="mirror: true"))
    assert r["before"][("unsynced-augmentation", "data")].severity == "error"
    assert not any(k[0] in ("unsynced-augmentation", "net-invalid") for k in r["after"]) and r["rc"] == 0
    assert 'layer: "PairedDataLayer"' in added(r["diff"]) and 'name: "label"' in removed(r["diff"])
    param = json.loads(json.loads(next(x for x in added(r["diff"]) if x.startswith("param_str")).split(": ", 1)[1]))
    assert param["mirror"] is True and param["images"] == small_lmdb[0] and param["mean_bgr"] == [100.0] * 3


def test_label_transform_is_removed(small_lmdb, tmp_path):
    r = run_fix(tmp_path, net_text(small_lmdb, label_tp="transform_param { scale: 0.5 }"))
    assert r["before"][("label-transform", "label")].severity == "error"
    assert ("label-transform", "label") not in r["after"] and removed(r["diff"]) == [
        "transform_param {",
        "scale: 0.5",
        "}",
    ]


def seed_files(tmp_path: Path, lmdb: tuple[str, str]) -> tuple[str, str]:
    text = (DATA_DIR / "seed_train_val.prototxt").read_text().replace("IMAGES", lmdb[0]).replace("LABELS", lmdb[1])
    (tmp_path / "seed.prototxt").write_text(text)
    (tmp_path / "seed_solver.prototxt").write_text(
        (DATA_DIR / "seed_solver.prototxt").read_text().replace("NET", str(tmp_path / "seed.prototxt"))
    )
    return str(tmp_path / "seed.prototxt"), str(tmp_path / "seed_solver.prototxt")


def test_seed_net_is_fixed_idempotently_and_the_users_files_are_untouched(small_lmdb, tmp_path, capsys):
    net, solver = seed_files(tmp_path, small_lmdb)
    data = stats_dir(tmp_path, 4, [0.05, 1.0, 2.0, 4.0])
    originals = {p: Path(p).read_bytes() for p in (net, solver)}
    assert main(["fix", "--prototxt", net, "--solver", solver, "--data", data, "--out", str(tmp_path / "a")]) == 0
    assert "written to" in capsys.readouterr().out
    assert {p: Path(p).read_bytes() for p in originals} == originals
    a = tmp_path / "a"
    codes = {line.split("**")[1] for line in (a / "changes.md").read_text().splitlines() if line.startswith("- **")}
    assert codes == {
        "zero-init",
        "bn-phase-duplicate",
        "ignore-label-mismatch",
        "class-imbalance",
        "loss-normalization-lr",
    }
    args = ["--solver", str(a / "solver.prototxt"), "--data", data, "--out", str(tmp_path / "b")]
    assert main(["fix", "--prototxt", str(a / "train_val.prototxt"), *args]) == 0
    b = tmp_path / "b"
    assert "## Changes (0)" in (b / "changes.md").read_text()
    assert net_part((b / "changes.diff").read_text()) == ""
    assert (a / "train_val.prototxt").read_text() == (b / "train_val.prototxt").read_text()


def test_what_has_no_repair_is_listed_with_the_doctors_advice(small_lmdb, tmp_path):
    r = run_fix(tmp_path, net_text(small_lmdb))
    assert ("no-validation", None) in r["before"] and r["diff"] == ""
    assert "not repaired: warning no-validation (no repair for this code)" in r["changes"]
    assert "advice: give the run val data" in r["changes"]


def test_bad_input_exits_2_and_writes_nothing(small_lmdb, tmp_path, capsys):
    (tmp_path / "bad.prototxt").write_text("layer { name: 'x' type: 'Convolution' oops }")
    assert main(["fix", "--prototxt", str(tmp_path / "bad.prototxt"), "--out", str(tmp_path / "out")]) == 2
    assert "line 1" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.prototxt"]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("x")
    assert main(["fix", "--prototxt", str(tmp_path / "bad.prototxt"), "--out", str(tmp_path / "taken")]) == 2
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["mine.txt"]
