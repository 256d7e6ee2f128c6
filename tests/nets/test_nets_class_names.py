"""The doctor's class-imbalance finding names the classes (stats.json's class_names), keeping
the ids in its data for `orchestrate fix`."""

from __future__ import annotations

import pytest

from nets.graph import Context
from nets.prototxt import parse_net
from nets.rules_balance import check_class_balance

pytestmark = pytest.mark.caffe

NET = """layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }
layer { name: "score" type: "Convolution" bottom: "data" top: "score"
  convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "msra" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
"""


def test_imbalance_finding_names_the_classes():
    weights = (0.1, 1.0, 4.9)
    [f] = check_class_balance(parse_net(NET), Context(class_weights=weights, class_names=("sky", "road", "sign")))
    assert "weight of class 2 (sign) is 49x that of class 0 (sky)" in f.message
    assert (f.data["rarest"], f.data["commonest"]) == (2, 0)
    [f] = check_class_balance(parse_net(NET), Context(class_weights=weights))
    assert "weight of class 2 is 49x that of class 0)" in f.message
