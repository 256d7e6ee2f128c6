"""Issue 21 case 4: zeros that come from the weights file. DIGITS' net surgery saves the whole
FCN with its classifier (score_fr) as zeros; a zero classifier over live features learns from
the first step whether the zeros come from a filler or from the file, so `check --weights`
with such a caffemodel is clean (no dead-top on score_fr, no zero-gradient on conv1..fc7),
while zeros from the file that cannot recover are still errors."""

from __future__ import annotations

import json

import pytest

from nets.graph import Context
from nets.prototxt import load_net, weight_layer_info
from nets.zeroinit import check_zero_init
from orchestrator.cli import main
from tests.nets import public

BAD = {"dead-top", "zero-gradient", "net-invalid", "weights-skipped", "non-finite"}


@pytest.mark.parametrize("name", ["voc-fcn-alexnet", "digits-fcn-alexnet"])
def test_full_caffemodel_with_a_zero_classifier_is_fine(name, tmp_path, capsys):
    net = public.with_input_layer(name, tmp_path)
    weights = public.full_weights(net, tmp_path / "full.caffemodel", zero=("score_fr",))
    given, zero = weight_layer_info(weights)
    assert zero == {"score_fr"} and {"conv1", "fc7", "upscore"} <= given
    rc = main(["check", "--prototxt", str(net), "--weights", str(weights), "--json"])
    found = json.loads(capsys.readouterr().out)
    assert [f for f in found if f["severity"] == "error"] == [] and rc == 0
    assert not {f["code"] for f in found} & BAD
    [score] = [f for f in found if f["code"] == "zero-init"]
    assert (score["layer"], score["severity"]) == ("score_fr", "info")
    assert "weights file" in score["message"] and "learns" in score["message"]


def test_zeros_from_the_file_that_cannot_recover_are_errors(tmp_path):
    """conv3 given as zeros by the file: its ReLU sits at exactly 0 and holds back its gradient
    (the static judgement the dynamic check relies on; the weights file's parts are as above)."""
    net = load_net(public.with_input_layer("voc-fcn-alexnet", tmp_path))
    given = frozenset(public.ALEXNET + ("upscore",))
    found = check_zero_init(net, Context(weight_layers=given, zero_weight_layers=frozenset({"conv3", "score_fr"})))
    by = {f.layer: f for f in found}
    assert set(by) == {"conv3", "score_fr"}
    assert (by["conv3"].severity, by["conv3"].data["reason"]) == ("error", "blocked")
    assert (
        "weights file" in by["conv3"].message and "relu3" in by["conv3"].message and "weights file" in by["conv3"].fix
    )
    # score_fr reads zeros now (conv3 -> relu3 at 0 -> ... fc7): it cannot learn either
    assert by["score_fr"].severity == "error"
