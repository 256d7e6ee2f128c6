"""`orchestrate fix` over the public corpus (tests/nets/public.py): on the official FCN nets it
changes nothing their authors chose (zero-filled score layers, a summed loss with a tiny lr for
fine-tuning), with the pretrained weights given and without; on every BVLC net it never fills a
classifier the net zero-fills on purpose, and fixing its output changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from nets.doctor import diagnose
from orchestrator.cli import main
from tests.nets import public

pytestmark = pytest.mark.caffe


def names_only_weights(layers: tuple[str, ...], out: Path) -> str:
    """A caffemodel that names the backbone's layers, with a non-zero blob each (what the static
    doctor reads of it)."""
    from caffe.proto import caffe_pb2

    model = caffe_pb2.NetParameter()
    for name in layers:
        model.layer.add(name=name).blobs.add().data.append(0.5)
    out.write_bytes(model.SerializeToString())
    return str(out)


def fix(net: Path, name: str, out: Path, weights: str | None) -> tuple[int, str]:
    entry = public.REGISTRY[name]
    args = ["fix", "--prototxt", str(net), "--static", "--out", str(out)]
    args += ["--solver", str(public.solver(name))] if entry.solver else []
    args += ["--weights", weights] if weights else []
    return main(args), (out / "changes.md").read_text()


FCN = [n for n in public.BVLC_NETS if public.REGISTRY[n].repo == "shelhamer/fcn.berkeleyvision.org"]


@pytest.mark.parametrize("with_weights", [True, False], ids=["weights", "no-weights"])
@pytest.mark.parametrize("name", FCN)
def test_fix_changes_nothing_fcn_chose(name, with_weights, tmp_path, capsys):
    entry = public.REGISTRY[name]
    net = public.with_input_layer(name, tmp_path)
    weights = names_only_weights(entry.backbone, tmp_path / "w.caffemodel") if with_weights else None
    rc, changes = fix(net, name, tmp_path / "out", weights)
    assert "## Changes (0)" in changes
    assert (tmp_path / "out" / "train_val.prototxt").read_text() == net.read_text()
    left = diagnose(
        str(tmp_path / "out" / "train_val.prototxt"), solver=str(public.solver(name)), weights=weights, dynamic=False
    )
    # the summed loss with FCN's lr is at most a warning, and is listed as kept on purpose
    assert all(f.severity != "error" for f in left if f.code == "loss-normalization-lr")
    if any(f.code == "loss-normalization-lr" for f in left):
        assert "not repaired: warning loss-normalization-lr" in changes
    if with_weights:
        assert rc == 0 and not [f for f in left if f.severity == "error"]
        assert {f.layer for f in left if f.code == "zero-init"} == set(entry.zero_classifiers)
    else:  # the pretrained backbone is missing: said, not papered over with fillers
        assert rc == 1 and "pass its weights (--weights)" in changes


@pytest.mark.parametrize("name", [n for n in FCN if n.startswith("voc-")])
def test_fcn_nets_fit_voc_data_as_they_are(name, tmp_path, capsys):
    """With VOC's stats.json (21 classes, void 255, VOC's mild imbalance) nothing changes either."""
    import json

    entry = public.REGISTRY[name]
    (tmp_path / "data").mkdir()
    weights = [0.6] + [5.0] * 20  # background ~3/4 of the pixels: weights span < 10x
    stats = {"num_classes": 21, "ignore_label": 255, "class_weights": {"median_frequency": weights}}
    (tmp_path / "data" / "stats.json").write_text(json.dumps(stats))
    net = public.with_input_layer(name, tmp_path)
    w = names_only_weights(entry.backbone, tmp_path / "w.caffemodel")
    args = ["--prototxt", str(net), "--solver", str(public.solver(name)), "--weights", w, "--static"]
    assert main(["fix", *args, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]) == 0
    assert "## Changes (0)" in (tmp_path / "out" / "changes.md").read_text()


@pytest.mark.parametrize("name", [n for n in public.BVLC_NETS if n not in FCN])
def test_fix_on_other_bvlc_nets_is_idempotent(name, tmp_path, capsys):
    entry = public.REGISTRY[name]
    net = public.with_input_layer(name, tmp_path)
    weights = names_only_weights(entry.backbone, tmp_path / "w.caffemodel") if entry.backbone else None
    rc, first = fix(net, name, tmp_path / "a", weights)
    assert rc in (0, 1)
    if not entry.loss:  # a deploy net takes every weight from a weights file: no fillers added
        assert "## Changes (0)" in first
    fixed = (tmp_path / "a" / "train_val.prototxt").read_text()
    for layer in entry.zero_classifiers:
        assert "weight_filler" not in fixed.split(f'name: "{layer}"', 1)[1].split("\nlayer {", 1)[0]
    _, again = fix(tmp_path / "a" / "train_val.prototxt", name, tmp_path / "b", weights)
    assert "## Changes (0)" in again
