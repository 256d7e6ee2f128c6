"""Loading weights by name, VGG16-style: fc6 as InnerProduct in the weights file, a 7x7-like
convolution in the FCN; same count, another shape."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import UserError
from nets.prototxt import weight_layer_names
from nets.weights import plan, transplant

pytestmark = pytest.mark.caffe

SOURCE = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 3 dim: 3 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "gaussian" std: 1 }
    bias_filler { type: "gaussian" std: 1 } } }
layer { name: "fc6" type: "InnerProduct" bottom: "conv1" top: "fc6"
  inner_product_param { num_output: 8 weight_filler { type: "gaussian" std: 1 }
    bias_filler { type: "gaussian" std: 1 } } }
layer { name: "fc8" type: "InnerProduct" bottom: "fc6" top: "fc8"
  inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 1 } } }
"""
TARGET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 5 dim: 5 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "fc6" type: "Convolution" bottom: "conv1" top: "fc6" convolution_param { num_output: 8 kernel_size: 3 } }
layer { name: "fc8" type: "Convolution" bottom: "fc6" top: "fc8" convolution_param { num_output: 3 kernel_size: 1 } }
"""


@pytest.fixture
def caffemodel(tmp_path):
    import caffe

    (tmp_path / "src.prototxt").write_text(SOURCE)
    src = caffe.Net(str(tmp_path / "src.prototxt"), caffe.TEST)
    path = tmp_path / "src.caffemodel"
    src.save(str(path))
    return path, {k: [b.data.copy() for b in v] for k, v in src.params.items()}


def test_transplant_reshapes_equal_counts_and_skips_the_rest(caffemodel, tmp_path):
    import caffe

    path, source = caffemodel
    (tmp_path / "dst.prototxt").write_text(TARGET)
    net = caffe.Net(str(tmp_path / "dst.prototxt"), caffe.TEST)
    report = transplant(net, path)
    assert report["copied"] == ["conv1"]
    assert [r["layer"] for r in report["reshaped"]] == ["fc6"]
    assert [s["layer"] for s in report["skipped"]] == ["fc8"]
    assert np.array_equal(net.params["conv1"][0].data, source["conv1"][0])
    assert net.params["fc6"][0].data.shape == (8, 4, 3, 3)
    assert np.array_equal(net.params["fc6"][0].data.ravel(), source["fc6"][0].ravel())
    assert np.array_equal(net.params["fc6"][1].data, source["fc6"][1])
    assert not np.any(net.params["fc8"][0].data)  # left as it was (no filler here: zeros)


def test_weight_layer_names_and_plan(caffemodel):
    from nets.prototxt import load_weights

    path, _ = caffemodel
    assert weight_layer_names(path) == {"conv1", "fc6", "fc8"}
    p = plan(load_weights(path), {"fc6": [(8, 36), (8,)], "new": [(2, 2)]})
    assert p["copied"] == ["fc6"] and p["not_in_weights"] == ["new"]


def test_bad_weights_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        weight_layer_names(tmp_path / "missing.caffemodel")
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(b"\xff\xff\xff\xff not a protobuf")
    with pytest.raises(UserError, match="cannot read the weights"):
        weight_layer_names(bad)
