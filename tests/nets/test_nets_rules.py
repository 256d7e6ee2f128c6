"""Each static doctor rule on a small prototxt that shows the mistake and one that does not.
The rules are pure functions over a parsed NetParameter; Caffe's caffe_pb2 parses."""

from __future__ import annotations

import pytest

from nets import lossnorm, rules_data, rules_params
from nets.doctor import legacy_findings
from nets.graph import Context
from nets.prototxt import parse_net
from nets.zeroinit import zero_layers

pytestmark = pytest.mark.caffe

DATA = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 64 dim: 64 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 1 dim: 1 dim: 64 dim: 64 } } }
"""
MSRA = 'weight_filler { type: "msra" } bias_filler { type: "constant" value: 0 }'


def conv(name: str, bottom: str, nout: int = 8, filler: str = MSRA, extra: str = "") -> str:
    return (
        f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" {extra} '
        f"convolution_param {{ num_output: {nout} kernel_size: 3 pad: 1 {filler} }} }}"
    )


def deconv(
    name: str,
    bottom: str,
    nout: int = 4,
    group: int = 4,
    filler: str = 'weight_filler { type: "bilinear" }',
    lr: float = 0,
) -> str:
    return (
        f'layer {{ name: "{name}" type: "Deconvolution" bottom: "{bottom}" top: "{name}" '
        f"param {{ lr_mult: {lr} }} convolution_param {{ num_output: {nout} group: {group} "
        f"kernel_size: 4 stride: 2 bias_term: false {filler} }} }}"
    )


def loss(
    bottom: str = "score", params: str = "normalization: VALID ignore_label: 255", kind: str = "SoftmaxWithLoss"
) -> str:
    return (
        f'layer {{ name: "loss" type: "{kind}" bottom: "{bottom}" bottom: "label" top: "loss" '
        f"loss_param {{ {params} }} }}"
    )


def net(*layers: str):
    return parse_net("\n".join(layers))


def codes(findings) -> list[str]:
    return [f.code for f in findings]


# ---------------------------------------------------------------- zero-init
def test_zero_init_flags_conv_without_filler():
    found = rules_params.check_zero_init(net(DATA, conv("conv1", "data", filler=""), conv("conv2", "conv1")), Context())
    assert [(f.code, f.layer, f.severity) for f in found] == [("zero-init", "conv1", "error")]
    assert "constant 0" in found[0].message and "weight_filler" in found[0].fix


def test_zero_init_flags_explicit_constant_zero_and_zero_scale():
    n = net(
        DATA,
        conv("conv1", "data", filler='weight_filler { type: "constant" }'),
        'layer { name: "sc" type: "Scale" bottom: "conv1" top: "conv1" scale_param { filler { value: 0 } } }',
    )
    assert {f.layer for f in rules_params.check_zero_init(n, Context())} == {"conv1", "sc"}


def test_zero_init_quiet_with_filler_or_weights():
    assert rules_params.check_zero_init(net(DATA, conv("conv1", "data")), Context()) == []
    n = net(DATA, conv("conv1", "data", filler=""))
    assert rules_params.check_zero_init(n, Context(weight_layers=frozenset({"conv1"}))) == []


@pytest.mark.parametrize("value, zero", [(0, True), (0.0, True), (0.1, False), (-0.5, False), (1e-8, False)])
def test_zero_init_counts_constant_fillers_by_their_value(value, zero):
    """A constant filler is zero-init only at value 0: `constant value: 0.1` (or a Scale's
    constant 1) starts the layer with non-zero weights, which it learns from."""
    filler = f'weight_filler {{ type: "constant" value: {value} }}'
    n = net(
        DATA,
        conv("conv1", "data", filler=filler),
        f'layer {{ name: "sc" type: "Scale" bottom: "conv1" top: "conv1" '
        f'scale_param {{ filler {{ type: "constant" value: {value} }} }} }}',
    )
    assert set(zero_layers(n, Context())) == ({"conv1", "sc"} if zero else set())
    assert {f.layer for f in rules_params.check_zero_init(n, Context())} == ({"conv1", "sc"} if zero else set())


RELU_ON = 'layer {{ name: "relu_{b}" type: "ReLU" bottom: "{b}" top: "{b}" }}'


def zero_init(*layers: str, ctx: Context | None = None) -> dict[str | None, tuple[str, str]]:
    return {f.layer: (f.severity, f.message) for f in rules_params.check_zero_init(net(*layers), ctx or Context())}


def test_zero_classifier_over_live_features_is_info():
    found = zero_init(
        DATA,
        conv("feat", "data"),
        RELU_ON.format(b="feat"),
        conv("score_fr", "feat", 4, filler=""),
        CROP.format(b="score_fr"),
        loss(),
    )
    assert list(found) == ["score_fr"] and found["score_fr"][0] == "info"
    assert "live" in found["score_fr"][1] and "gradient" in found["score_fr"][1]


def test_zero_layers_in_series_block_each_other():
    found = zero_init(
        DATA,
        conv("conv1", "data", filler=""),
        RELU_ON.format(b="conv1"),
        conv("conv2", "conv1", filler=""),
        RELU_ON.format(b="conv2"),
        conv("score", "conv2", 4),
        loss(),
    )
    assert {k: v[0] for k, v in found.items()} == {"conv1": "error", "conv2": "error"}
    assert "conv2" in found["conv1"][1] and "gradient" in found["conv1"][1]
    assert "conv1" in found["conv2"][1] and "zero" in found["conv2"][1]
    # without a ReLU between them the two still hold each other at zero
    plain = zero_init(DATA, conv("a", "data", filler=""), conv("b", "a", 4, filler=""), loss("b"))
    assert {k: v[0] for k, v in plain.items()} == {"a": "error", "b": "error"}


ALEX = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")


def backbone_net(weights: frozenset[str] = frozenset()) -> list:
    layers, bottom = [DATA], "data"
    for name in ALEX:
        layers += [conv(name, bottom, filler=""), RELU_ON.format(b=name)]
        bottom = name
    layers += [conv("score_fr", "fc7", 4, filler=""), CROP.format(b="score_fr"), loss()]
    return rules_params.check_zero_init(net(*layers), Context(weight_layers=weights))


def test_zero_backbone_expects_pretrained_weights():
    found = backbone_net()
    [bb] = [f for f in found if f.layer in ALEX]
    assert (bb.layer, bb.severity, bb.data["layers"], bb.data["backbone"]) == ("conv1", "error", list(ALEX), "AlexNet")
    assert "pretrained" in bb.message and "--weights" in bb.fix and "weights:" in bb.fix
    [score] = [f for f in found if f.layer == "score_fr"]
    assert score.severity == "error" and "fc7" in score.message
    # with the backbone's weights the zero classifier learns
    assert [(f.layer, f.severity) for f in backbone_net(frozenset(ALEX))] == [("score_fr", "info")]


# ---------------------------------------------------------------- deconvolution
def test_deconv_not_bilinear():
    n = net(DATA, conv("score", "data", 4), deconv("up", "score", filler=""))
    found = rules_params.check_deconv(n, Context())
    assert codes(found) == ["deconv-not-bilinear"] and found[0].layer == "up"
    # the run's surgery fills it: a note, not a warning
    assert found[0].severity == "info" and "surgery" in found[0].message and "zeros" in found[0].message
    assert rules_params.check_deconv(net(DATA, conv("score", "data", 4), deconv("up", "score")), Context()) == []
    # covered by a weights file (the surgery's output, or trained weights): fine
    assert rules_params.check_deconv(n, Context(weight_layers=frozenset({"up"}))) == []


def test_deconv_group_by_what_the_surgery_writes():
    # group 1 over as many channels as outputs: the surgery writes a per-class diagonal kernel
    diagonal = net(DATA, conv("score", "data", 4), deconv("up", "score", group=1))
    assert rules_params.check_deconv(diagonal, Context()) == []
    # 64 channels into 4 with one bilinear kernel: every output mixes all inputs
    mixing = net(DATA, conv("f", "data", 64), deconv("up", "f", group=1))
    [f] = rules_params.check_deconv(mixing, Context())
    assert (f.code, f.severity, f.layer) == ("deconv-group", "error", "up") and "mix" in f.message
    # the same with lr_mult > 0 is a learned decoder (issue 21 case 5): no kernel to advise on
    learnable = net(DATA, conv("f", "data", 64), deconv("up", "f", group=1, lr=1, filler=""))
    assert rules_params.check_deconv(learnable, Context()) == []
    assert rules_params.check_deconv(learnable, Context(surgery=False)) == []


LEARNED_UP = (
    'layer { name: "up" type: "Deconvolution" bottom: "f" top: "up" param { lr_mult: 1 } '
    'convolution_param { num_output: 4 kernel_size: 2 stride: 2 weight_filler { type: "msra" } } }'
)
CROP = 'layer {{ name: "score" type: "Crop" bottom: "{b}" bottom: "data" top: "score" }}'


def test_learned_upsampling_is_left_alone():
    n = net(DATA, conv("f", "data", 16), LEARNED_UP, CROP.format(b="up"), loss())
    assert rules_params.check_deconv(n, Context()) == []
    assert rules_params.check_zero_init(n, Context()) == []
    # the learned deconv makes the scores: it is blamed, not the 16-channel conv behind it
    assert rules_data.check_num_output(n, Context(num_classes=4)) == []
    assert [f.layer for f in rules_data.check_num_output(n, Context(num_classes=5))] == ["up"]


# ---------------------------------------------------------------- batch norm
BN = 'layer {{ name: "{n}" type: "BatchNorm" bottom: "conv1" top: "conv1" {extra} }}'
SCALE = 'layer { name: "sc1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }'
RELU = 'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }'


def bn_per_phase(
    train: str,
    test: str,
    train_extra: str = "batch_norm_param { use_global_stats: false }",
    test_extra: str = "batch_norm_param { use_global_stats: true }",
):
    """conv1 normalised by one BatchNorm layer in TRAIN (named `train`) and one in TEST (`test`), then Scale."""
    return net(
        DATA,
        conv("conv1", "data"),
        BN.format(n=train, extra=f"include {{ phase: TRAIN }} {train_extra}"),
        BN.format(n=test, extra=f"include {{ phase: TEST }} {test_extra}"),
        SCALE,
    )


def test_bn_lr_mult():
    bad = net(DATA, conv("conv1", "data"), BN.format(n="bn1", extra="param { lr_mult: 1 } "), SCALE)
    assert [(f.code, f.severity) for f in rules_params.check_batchnorm(bad, Context())] == [("bn-lr-mult", "error")]
    # three param blocks: this Caffe resets them to 0 on load (other Caffes do not)
    three = net(DATA, conv("conv1", "data"), BN.format(n="bn1", extra="param { lr_mult: 1 } " * 3), SCALE)
    assert [(f.code, f.severity) for f in rules_params.check_batchnorm(three, Context())] == [("bn-lr-mult", "warning")]
    good = net(DATA, conv("conv1", "data"), BN.format(n="bn1", extra="param { lr_mult: 0 } " * 3), SCALE)
    assert rules_params.check_batchnorm(good, Context()) == []


def test_bn_phase_duplicate():
    dup = bn_per_phase("bn_train", "bn_test")
    found = rules_params.check_batchnorm(dup, Context())
    assert [(f.code, f.severity, f.layer) for f in found] == [("bn-phase-duplicate", "error", "bn_test")]
    one = net(DATA, conv("conv1", "data"), BN.format(n="bn1", extra=""), SCALE)
    assert rules_params.check_batchnorm(one, Context()) == []


def test_bn_phase_duplicate_sharing_blobs_is_info():
    shared = 'param { name: "m" lr_mult: 0 } param { name: "v" lr_mult: 0 } param { name: "f" lr_mult: 0 }'
    n = bn_per_phase("bn_train", "bn_test", shared, shared)
    assert [(f.code, f.severity) for f in rules_params.check_batchnorm(n, Context())] == [
        ("bn-phase-duplicate", "info")
    ]


def test_bn_phase_duplicate_under_one_name_is_info():
    same = bn_per_phase("bn1", "bn1")
    [f] = rules_params.check_batchnorm(same, Context())
    assert (f.code, f.severity, f.layer) == ("bn-phase-duplicate", "info", "bn1")
    assert "by name" in f.message and "redundant" in f.message


def test_bn_global_stats_in_train():
    n = net(DATA, conv("conv1", "data"), BN.format(n="bn1", extra="batch_norm_param { use_global_stats: true }"), SCALE)
    assert codes(rules_params.check_batchnorm(n, Context())) == ["bn-global-stats"]


def test_bn_without_scale():
    assert codes(
        rules_params.check_batchnorm(net(DATA, conv("conv1", "data"), BN.format(n="bn1", extra=""), RELU), Context())
    ) == ["bn-without-scale"]
    no_bias = SCALE.replace("bias_term: true", "bias_term: false")
    assert codes(
        rules_params.check_batchnorm(net(DATA, conv("conv1", "data"), BN.format(n="bn1", extra=""), no_bias), Context())
    ) == ["bn-without-scale"]
    bias = 'layer { name: "b1" type: "Bias" bottom: "conv1" top: "conv1" }'
    assert (
        rules_params.check_batchnorm(
            net(DATA, conv("conv1", "data"), BN.format(n="bn1", extra=""), no_bias, bias), Context()
        )
        == []
    )


# ---------------------------------------------------------------- loss normalization and lr
def solver(text: str):
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    return text_format.Parse(text, caffe_pb2.SolverParameter())


def test_unnormalized_loss_explains_per_pixel_lr():
    n = net(DATA, conv("score", "data", 4), loss(params="normalize: false ignore_label: 255"))
    ctx = Context(solver=solver("base_lr: 1e-10 momentum: 0.99"), pixels=500 * 500, batch=1)
    [f] = lossnorm.check_loss_normalization(n, ctx)
    assert (f.code, f.severity, f.layer) == ("loss-normalization-lr", "warning", "loss")
    assert f.data["normalization"] == "BATCH_SIZE"
    assert f.data["equivalent_lr"] == pytest.approx(2.5e-5)
    assert "2.5e-05" in f.message and "250000 pixels" in f.message


def test_normalization_none_counts_the_batch_and_huge_steps_are_errors():
    n = net(DATA, conv("score", "data", 4), loss(params="normalization: NONE"))
    [f] = lossnorm.check_loss_normalization(
        n, Context(solver=solver("base_lr: 0.01 momentum: 0.9"), pixels=100, batch=10)
    )
    assert f.data["equivalent_lr"] == pytest.approx(10.0) and f.severity == "error"


def test_normalized_loss_with_lr_for_a_sum():
    n = net(DATA, conv("score", "data", 4), loss())
    [f] = lossnorm.check_loss_normalization(n, Context(solver=solver("base_lr: 1e-10 momentum: 0.99"), pixels=4096))
    assert (f.code, f.severity) == ("loss-normalization-lr", "error")
    assert lossnorm.check_loss_normalization(n, Context(solver=solver("base_lr: 0.001 momentum: 0.9"))) == []


def test_input_size_from_data_layers():
    n = parse_net(
        'layer { name: "d" type: "Data" top: "data" transform_param { crop_size: 321 } '
        'data_param { source: "x" batch_size: 2 } }'
    )
    assert lossnorm.input_size(n) == (321 * 321, 2)
    assert lossnorm.input_size(net(DATA)) == (64 * 64, 1)
    assert lossnorm.input_size(parse_net(""), {"height": 360, "width": 480}) == (172800, None)


# ---------------------------------------------------------------- classes and labels
def test_num_output_mismatch_follows_the_score_path():
    n = net(
        DATA,
        conv("score_fr", "data", 21),
        deconv("upscore", "score_fr", 21, 21),
        'layer { name: "score" type: "Crop" bottom: "upscore" bottom: "data" top: "score" }',
        loss(),
    )
    found = rules_data.check_num_output(n, Context(num_classes=4))
    assert {(f.code, f.layer) for f in found} == {
        ("num-output-mismatch", "score_fr"),
        ("num-output-mismatch", "upscore"),
    }
    assert found[0].data == {"num_output": 21, "num_classes": 4}
    assert rules_data.check_num_output(n, Context(num_classes=21)) == []


def test_ignore_label_mismatch():
    n = net(DATA, conv("score", "data", 4), loss(params="normalization: VALID"))
    [f] = rules_data.check_ignore_label(n, Context(num_classes=4, ignore_label=255, stats_given=True))
    assert (f.code, f.severity) == ("ignore-label-mismatch", "error") and "ignore_label: 255" in f.fix
    other = net(DATA, conv("score", "data", 4), loss(params="ignore_label: 11"))
    assert codes(rules_data.check_ignore_label(other, Context(ignore_label=255, stats_given=True))) == [
        "ignore-label-mismatch"
    ]
    good = net(DATA, conv("score", "data", 4), loss())
    assert rules_data.check_ignore_label(good, Context(num_classes=4, ignore_label=255, stats_given=True)) == []
    # without the data stage's stats there is nothing to compare
    assert rules_data.check_ignore_label(n, Context(num_classes=4)) == []


# ---------------------------------------------------------------- augmentation
def two_data(image_tp: str, label_tp: str, phase: str = "TRAIN") -> str:
    inc = f"include {{ phase: {phase} }}"
    return (
        f'layer {{ name: "data" type: "Data" top: "data" {inc} transform_param {{ {image_tp} }} '
        f'data_param {{ source: "i" batch_size: 1 }} }}\n'
        f'layer {{ name: "label" type: "Data" top: "label" {inc} transform_param {{ {label_tp} }} '
        f'data_param {{ source: "l" batch_size: 1 }} }}'
    )


def test_unsynced_augmentation():
    n = net(two_data("mirror: true crop_size: 32", "crop_size: 32"), conv("score", "data", 4), loss())
    [f] = rules_data.check_augmentation(n, Context())
    assert (f.code, f.layer, f.severity) == ("unsynced-augmentation", "data", "error")
    assert "PairedDataLayer" in f.fix


def test_identical_random_augmentation_is_still_unsynced():
    n = net(two_data("mirror: true", "mirror: true"), conv("score", "data", 4), loss())
    [f] = rules_data.check_augmentation(n, Context())
    assert "own random stream" in f.message


def test_synced_data_layers_are_fine():
    assert (
        rules_data.check_augmentation(net(two_data("mean_value: 104", ""), conv("score", "data", 4), loss()), Context())
        == []
    )
    # a TEST-phase centre crop is deterministic
    assert (
        rules_data.check_augmentation(
            net(two_data("crop_size: 32", "crop_size: 32", "TEST"), conv("score", "data", 4), loss()), Context()
        )
        == []
    )


def test_label_transform():
    n = net(two_data("mean_value: 104", "mean_value: 104"), conv("score", "data", 4), loss())
    assert codes(rules_data.check_augmentation(n, Context())) == ["label-transform"]


# ---------------------------------------------------------------- validation
def test_no_validation():
    n = net(two_data("", ""), conv("score", "data", 4), loss())
    assert codes(rules_data.check_validation(n, Context())) == ["no-validation"]
    assert rules_data.check_validation(n, Context(has_val_net=True)) == []
    assert rules_data.check_validation(n, Context(solver=solver('test_net: "val.prototxt" test_iter: 1'))) == []
    train_val = net(two_data("", ""), two_data("", "", "TEST"), conv("score", "data", 4), loss())
    assert rules_data.check_validation(train_val, Context()) == []
    # a deploy net (no loss) trains nothing
    assert rules_data.check_validation(net(DATA, conv("score", "data", 4)), Context()) == []


# ---------------------------------------------------------------- infogain, legacy
def test_infogain_softmax_input():
    prob = 'layer { name: "prob" type: "Softmax" bottom: "score" top: "prob" }'
    bad = net(DATA, conv("score", "data", 4), prob, loss("prob", kind="InfogainLoss"))
    assert codes(rules_data.check_infogain_input(bad, Context())) == ["infogain-softmax-input"]
    good = net(DATA, conv("score", "data", 4), loss("score", kind="InfogainLoss"))
    assert rules_data.check_infogain_input(good, Context()) == []


def test_legacy_format():
    old = parse_net('layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1" }')
    assert codes(legacy_findings(old)) == ["legacy-format"]
    assert legacy_findings(net(DATA)) == []


def test_a_diverging_summed_loss_gets_a_per_pixel_lr_in_the_normal_range():
    """base_lr 0.01 summed over 128x128 pixels acts like 164 per pixel: the fix proposes a
    per-pixel base_lr that does not diverge (never that same step) and says what 0.01 equals."""
    n = net(DATA, conv("score", "data", 4), loss(params="normalization: BATCH_SIZE"))
    ctx = Context(solver=solver("base_lr: 0.01 momentum: 0.9"), pixels=128 * 128, batch=4)
    [f] = lossnorm.check_loss_normalization(n, ctx)
    assert (f.code, f.severity) == ("loss-normalization-lr", "error")
    assert f.data["equivalent_lr"] == pytest.approx(163.84)
    lr = f.data["suggested_lr"]
    assert lossnorm.sane_per_pixel(lr, 0.9) and lr == pytest.approx(0.01)
    assert "normalization: VALID } with base_lr 0.01 (" in f.fix and "equals 1.6e+02 per pixel, which diverges" in f.fix
    assert "1.6e+02 (" not in f.fix  # the divergent step is not the advice
    # the summed alternative takes the same per-pixel step: 0.01 / 16384
    assert "keep the sum with base_lr 6.1e-07" in f.fix
    # a sane summed step is kept as it is (FCN's choice, rewritten as VALID)
    ctx = Context(solver=solver("base_lr: 1e-7 momentum: 0.9"), pixels=128 * 128, batch=4)
    [f] = lossnorm.check_loss_normalization(n, ctx)
    assert f.severity == "warning" and f.data["suggested_lr"] == pytest.approx(1e-7 * 16384)
