"""The doctor end to end: static rules through `diagnose`, and the dynamic check in a child
process on real Caffe (aborts become findings, not crashes)."""

from __future__ import annotations

from pathlib import Path

import pytest

import nets
from common.errors import UserError
from common.findings import Finding
from nets.doctor import diagnose, format_findings

pytestmark = pytest.mark.caffe

DATA_DIR = Path(__file__).parent / "data"
STATS = {"num_classes": 4, "ignore_label": 255}


def by_code(findings: list[Finding]) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = {}
    for f in findings:
        out.setdefault(f.code, []).append(f)
    return out


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture
def seed_net(small_lmdb, tmp_path):
    text = (DATA_DIR / "seed_train_val.prototxt").read_text()
    net = write(tmp_path / "seed.prototxt", text.replace("IMAGES", small_lmdb[0]).replace("LABELS", small_lmdb[1]))
    solver = write(tmp_path / "solver.prototxt", (DATA_DIR / "seed_solver.prototxt").read_text().replace("NET", net))
    return net, solver


def test_seed_layout(seed_net, tmp_path):
    net, solver = seed_net
    findings = diagnose(net, solver=solver, data_stats=STATS, log_dir=str(tmp_path))
    codes = by_code(findings)
    assert codes["zero-init"][0].layer == "conv1" and codes["zero-init"][0].severity == "error"
    assert {f.layer for f in codes["bn-phase-duplicate"]} == {"conv1_bn_test", "conv2_bn_test"}
    [lr] = codes["loss-normalization-lr"]
    assert lr.data["normalization"] == "BATCH_SIZE" and lr.data["base_lr"] == pytest.approx(1e-11)
    assert lr.data["pixels"] == 32 * 32  # measured by the probe
    assert lr.data["equivalent_lr"] == pytest.approx(1e-11 * 1024)
    # the probe confirms the zeros, and says nothing the zero-init errors already explain
    assert "dead-top" not in codes and "zero-gradient" not in codes
    assert {"deconv-not-bilinear", "ignore-label-mismatch"} <= set(codes)
    # group 1 over 4 channels into 4: the run's surgery writes a per-class diagonal kernel
    assert "deconv-group" not in codes
    # every conv is zero-initialised: none can recover, each says what holds it
    zero = {f.layer: f for f in codes["zero-init"]}
    assert set(zero) == {"conv1", "conv2", "score"} and {f.severity for f in zero.values()} == {"error"}
    assert zero["conv1"].data["reason"] == "blocked" and "conv2" in zero["conv1"].data["by"]
    assert zero["conv2"].data == {"reason": "input-zero", "by": ["conv1"]}
    assert zero["score"].data == {"reason": "input-zero", "by": ["conv2"]}
    assert findings[0].severity == "error" and findings[-1].severity != "error"


def test_generated_net_is_clean(small_lmdb, tmp_path):
    src = nets.DataSource(small_lmdb[0], small_lmdb[1], 2, mean_bgr=(100.0, 100.0, 100.0))
    g = nets.generate(
        "compact", num_classes=4, train_data=src, val_data=src, width=8, depth=2, batch_norm=True, ignore_label=255
    )
    paths = g.write(tmp_path)
    solver = write(
        tmp_path / "solver.prototxt",
        f'train_net: "{paths["train"]}"\ntest_net: "{paths["val"]}"\n'
        'test_iter: 1\ntest_interval: 10\nbase_lr: 0.01\nmomentum: 0.9\nlr_policy: "fixed"\n',
    )
    findings = diagnose(
        str(paths["train"]), val_prototxt=str(paths["val"]), solver=solver, data_stats=STATS, log_dir=str(tmp_path)
    )
    assert findings == []
    assert format_findings(findings).startswith("no findings")


def test_meta_header_gives_the_class_count(small_lmdb, tmp_path):
    src = nets.DataSource(small_lmdb[0], small_lmdb[1], 2)
    g = nets.generate("compact", num_classes=4, train_data=src, val_data=src, depth=1)
    edited = g.train.replace("num_output: 4\n    pad: 0", "num_output: 5\n    pad: 0")  # score_fr
    assert edited != g.train
    path = write(tmp_path / "train.prototxt", edited)
    found = by_code(diagnose(path, dynamic=False))
    assert [f.layer for f in found["num-output-mismatch"]] == ["score_fr"]
    assert "num-output-mismatch" not in by_code(diagnose(write(tmp_path / "ok.prototxt", g.train), dynamic=False))


def test_weights_exempt_layers_from_zero_init(tmp_path):
    import caffe

    text = (
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
        'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
        "convolution_param { num_output: 4 kernel_size: 3 } }\n"
    )
    path = write(tmp_path / "net.prototxt", text)
    assert [f.code for f in diagnose(path, dynamic=False)] == ["zero-init"]
    net = caffe.Net(path, caffe.TEST)
    net.params["conv1"][0].data[...] = 0.5
    net.save(str(tmp_path / "w.caffemodel"))
    assert diagnose(path, weights=str(tmp_path / "w.caffemodel"), dynamic=False) == []
    # the probe loads them too: the conv's output is no longer dead
    assert "dead-top" not in by_code(diagnose(path, weights=str(tmp_path / "w.caffemodel"), log_dir=str(tmp_path)))


INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
CONV = (
    'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
    'convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 weight_filler {{ type: "msra" }} }} }}\n'
)


def test_caffe_abort_becomes_net_invalid(tmp_path):
    bn = (
        'layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" '
        "param { lr_mult: 1 } }\n"
        'layer { name: "sc1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }\n'
    )
    path = write(tmp_path / "bn.prototxt", INPUT + CONV.format(name="conv1", bottom="data") + bn)
    found = by_code(diagnose(path, log_dir=str(tmp_path)))
    [invalid] = found["net-invalid"]
    assert invalid.severity == "error" and invalid.layer == "bn1"
    assert "Cannot configure batch normalization statistics" in invalid.message
    assert "batch_norm_layer.cpp" in invalid.message and "lr_mult 0" in invalid.fix
    assert Path(invalid.data["log"]).is_file()
    assert [f.layer for f in found["bn-lr-mult"]] == ["bn1"]


def test_crop_that_does_not_fit_names_its_layer(tmp_path):
    crop = 'layer { name: "crop" type: "Crop" bottom: "conv1" bottom: "data" top: "crop" '
    crop += "crop_param { axis: 2 offset: 5 } }\n"
    path = write(tmp_path / "crop.prototxt", INPUT + CONV.format(name="conv1", bottom="data") + crop)
    [invalid] = [f for f in diagnose(path, log_dir=str(tmp_path)) if f.code == "net-invalid"]
    assert invalid.layer == "crop" and "coord_map" in invalid.fix


def test_unknown_bottom_and_python_errors(tmp_path):
    path = write(tmp_path / "bottom.prototxt", INPUT + CONV.format(name="conv1", bottom="nope"))
    [invalid] = [f for f in diagnose(path, log_dir=str(tmp_path)) if f.code == "net-invalid"]
    assert invalid.layer == "conv1" and "nope" in invalid.message
    py = (
        'layer { name: "pydata" type: "Python" top: "data" top: "label" '
        'python_param { module: "no_such_module_here" layer: "X" } }\n'
    )
    [invalid] = [
        f for f in diagnose(write(tmp_path / "py.prototxt", py), log_dir=str(tmp_path)) if f.code == "net-invalid"
    ]
    assert "no_such_module_here" in invalid.message


def test_non_finite_is_reported_where_it_starts(tmp_path):
    text = (
        'layer { name: "data" type: "DummyData" top: "data" dummy_data_param { '
        'shape { dim: 1 dim: 1 dim: 4 dim: 4 } data_filler { type: "constant" value: -1 } } }\n'
        'layer { name: "log" type: "Log" bottom: "data" top: "logged" }\n'
        'layer { name: "relu" type: "ReLU" bottom: "logged" top: "out" }\n'
    )
    findings = diagnose(write(tmp_path / "nan.prototxt", text), log_dir=str(tmp_path))
    assert [(f.code, f.layer) for f in findings] == [("non-finite", "log")]


def test_dead_top_quiet_on_a_live_net(tmp_path):
    text = (
        INPUT
        + CONV.format(name="conv1", bottom="data")
        + 'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }\n'
    )
    assert diagnose(write(tmp_path / "live.prototxt", text), log_dir=str(tmp_path)) == []


def test_probe_timeout(tmp_path):
    path = write(tmp_path / "net.prototxt", INPUT + CONV.format(name="conv1", bottom="data"))
    [f] = diagnose(path, log_dir=str(tmp_path), timeout=0.05)
    assert (f.code, f.severity) == ("probe-timeout", "warning")


def test_bad_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        diagnose(str(tmp_path / "missing.prototxt"))
    bad = write(tmp_path / "bad.prototxt", 'name: "x"\nlayer {\n  name: "a"\n  typo: "b"\n}\n')
    with pytest.raises(UserError, match=r"bad\.prototxt, line 4"):
        diagnose(bad)
    good = write(tmp_path / "good.prototxt", INPUT)
    with pytest.raises(UserError, match="solver"):
        diagnose(good, solver=write(tmp_path / "s.prototxt", "base_lr: fast\n"))


def test_format_findings_orders_and_counts():
    fs = [
        Finding("warning", "w-code", None, "careful", "do x"),
        Finding("error", "e-code", "conv1", "broken", "do y"),
        Finding("info", "i-code", "l", "fyi", "none"),
    ]
    text = format_findings(fs)
    assert text.index("ERROR e-code [conv1]") < text.index("WARNING w-code") < text.index("INFO i-code")
    assert text.splitlines()[-1] == "1 error, 1 warning, 1 info"


def test_weights_that_do_not_fit_are_skipped_not_fatal(tmp_path):
    import caffe

    wide = write(
        tmp_path / "wide.prototxt",
        INPUT + CONV.format(name="conv1", bottom="data").replace("num_output: 4", "num_output: 6"),
    )
    caffe.Net(wide, caffe.TEST).save(str(tmp_path / "wide.caffemodel"))
    path = write(tmp_path / "net.prototxt", INPUT + CONV.format(name="conv1", bottom="data"))
    found = diagnose(path, weights=str(tmp_path / "wide.caffemodel"), log_dir=str(tmp_path))
    assert [(f.code, f.layer) for f in found] == [("weights-skipped", "conv1")]
    assert "6, 3, 3, 3" in found[0].message


def test_meta_ignore_label_is_the_reference_without_stats(tmp_path):
    text = (
        INPUT
        + CONV.format(name="score", bottom="data")
        + 'layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }\n'
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }\n'
    )
    path = write(tmp_path / "net.prototxt", text)
    found = diagnose(path, meta={"num_classes": 4, "ignore_label": 11}, dynamic=False)
    assert [f.code for f in found if f.severity == "error"] == ["ignore-label-mismatch"]
    assert not [f for f in diagnose(path, meta={"num_classes": 4}, dynamic=False) if f.code == "ignore-label-mismatch"]
