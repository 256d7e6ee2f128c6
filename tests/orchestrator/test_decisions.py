"""Pure decisions driven directly with made-up inputs (no CLI, no child process): what a resume
may change and whether a finished run trains on, a sweep's trial plan, how a dead Caffe child
is told, and which layers a derived deploy net keeps."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from common.child import ChildResult
from orchestrator.run import resume_policy as policy
from orchestrator.run.supervisor import abort_finding
from orchestrator.sweep.sweepfile import ParamCfg, SweepCfg, plan_trials

# ------------------------------------------------------------------ resume_policy


def test_config_changes_are_dotted_keys_with_both_values() -> None:
    old = {"solver": {"base_lr": 0.01, "max_iter": 40, "stepvalue": [10, 20]}, "name": "a", "net": {}}
    new = {"solver": {"base_lr": 0.02, "max_iter": 40, "stepvalue": [10, 30]}, "name": "a", "seed": 3}
    assert policy.flatten(old) == {
        "solver.base_lr": 0.01,
        "solver.max_iter": 40,
        "solver.stepvalue": [10, 20],
        "name": "a",
        "net": {},
    }
    assert policy.config_changes(old, new) == {
        "net": ({}, None),
        "seed": (None, 3),
        "solver.base_lr": (0.01, 0.02),
        "solver.stepvalue": ([10, 20], [10, 30]),
    }
    assert policy.config_changes(old, old) == {}


def test_a_resume_may_change_the_controller_and_the_solver_but_not_what_was_trained() -> None:
    changes = {
        "solver.base_lr": (0.01, 0.02),
        "solver.type": ("SGD", "Adam"),  # the saved history is SGD's
        "early_stop.patience": (5, 10),
        "name": ("a", "b"),
        "device": ("cpu", "gpu:0"),
        "data.train": ("x", "y"),
        "net.arch": ("compact", "fcn8s"),
        "seed": (0, 1),
        "weights": (None, "w.caffemodel"),
        "solverx.base_lr": (1, 2),  # only the section itself, not a key that starts alike
    }
    allowed, refused = policy.split_changes(changes)
    assert set(allowed) == {"solver.base_lr", "early_stop.patience", "name", "device"}
    assert set(refused) == {"solver.type", "data.train", "net.arch", "seed", "weights", "solverx.base_lr"}
    assert policy.describe({"solver.base_lr": (0.002, 0.5)}) == "solver.base_lr 0.002 -> 0.5"
    assert policy.keeps_solver_lr(allowed) and not policy.keeps_solver_lr({"solver.max_iter": (40, 60)})


@pytest.mark.parametrize(
    "status,iterations,max_iter,allowed,trains_on,words",
    [
        ("running", 30, 40, {}, True, None),  # killed: always continues
        ("interrupted", 30, 40, {}, True, None),
        ("diverged", 30, 40, {}, True, None),
        ("completed", 40, 40, {}, False, "completed at iteration 40: nothing to do"),
        ("completed", 40, 60, {"solver.max_iter": (40, 60)}, True, None),
        ("early_stopped", 25, 60, {"solver.max_iter": (40, 60)}, False, "would stop again"),
        ("early_stopped", 25, 40, {"early_stop.patience": (5, 10)}, True, None),
        ("early_stopped", 40, 40, {"early_stop.enabled": (True, False)}, False, "raise solver.max_iter above 40"),
    ],
)
def test_a_finished_run_trains_on_only_when_a_change_asks_it_to(
    status: str, iterations: int, max_iter: int, allowed: dict[str, Any], trains_on: bool, words: str | None
) -> None:
    reason = policy.continue_decision(status, iterations, max_iter, allowed)
    assert (reason is None) == trains_on
    assert words is None or words in (reason or "")


# ------------------------------------------------------------------ sweep trial planning


def sweep(space: list[ParamCfg], samples: int = 1, seed: int = 0) -> SweepCfg:
    return SweepCfg(name="s", base="base.yaml", space=space, samples=samples, seed=seed)


def test_a_grid_gives_its_product_in_order_and_samples_do_not_repeat_it() -> None:
    cfg = sweep([ParamCfg("solver.base_lr", grid=[0.01, 0.1]), ParamCfg("data.batch_size", grid=[1, 2, 4])], samples=5)
    trials = plan_trials(cfg)
    assert trials == [
        {"solver.base_lr": lr, "data.batch_size": b} for lr in (0.01, 0.1) for b in (1, 2, 4)
    ]  # nothing drawn: `samples` does not copy the grid's points


def test_drawn_dimensions_are_sampled_per_grid_point_within_range_and_repeatably() -> None:
    space = [
        ParamCfg("net.arch", grid=["compact", "fcn8s"]),
        ParamCfg("solver.base_lr", loguniform=[1e-4, 1e-2]),
        ParamCfg("solver.momentum", uniform=[0.8, 0.99]),
        ParamCfg("solver.type", choice=["SGD", "Adam"]),
    ]
    trials = plan_trials(sweep(space, samples=3, seed=7))
    assert len(trials) == 6 and [t["net.arch"] for t in trials] == ["compact"] * 3 + ["fcn8s"] * 3
    assert all(1e-4 <= t["solver.base_lr"] <= 1e-2 and 0.8 <= t["solver.momentum"] <= 0.99 for t in trials)
    assert {t["solver.type"] for t in trials} <= {"SGD", "Adam"}
    assert len({t["solver.base_lr"] for t in trials}) == 6  # a fresh draw for every trial
    assert plan_trials(sweep(space, samples=3, seed=7)) == trials  # the same seed, the same trials
    assert plan_trials(sweep(space, samples=3, seed=8)) != trials


def test_without_a_grid_there_are_samples_trials() -> None:
    trials = plan_trials(sweep([ParamCfg("solver.base_lr", uniform=[0.1, 0.2])], samples=4))
    assert len(trials) == 4 and all(set(t) == {"solver.base_lr"} for t in trials)
    assert plan_trials(sweep([])) == [{}]  # no space: the base experiment once


# ------------------------------------------------------------------ supervisor.abort_finding


def died(fatal: str | None = None, source: str | None = None, layer: str | None = None, code: int = -6) -> ChildResult:
    return ChildResult(code, fatal, source, layer)


def test_a_dead_child_is_told_by_what_killed_it() -> None:
    f = abort_finding("child-died", died(code=-signal.SIGKILL))
    assert (f.code, f.message) == ("child-died", "the Caffe process ended with SIGKILL")
    assert abort_finding("child-died", died(code=7)).message == "the Caffe process ended with exit code 7"
    full = abort_finding("child-died", died("Check failed: fwrite", "io.cpp:70"), disk_full=True)
    assert full.code == "write-failed" and "no space left on device" in full.message and "resume" in full.fix
    assert abort_finding("x", died("Check failed: proto.SerializeToOstream(&output)", "io.cpp:77")).code == (
        "write-failed"
    )
    oom = abort_finding("x", died("Check failed: error == cudaSuccess (2 vs. 0)  out of memory", "syncedmem.cpp:56"))
    assert oom.code == "gpu-out-of-memory" and "batch_size" in oom.fix
    assert abort_finding("x", died("Cannot use GPU in CPU-only Caffe: check mode.", "common.cpp:1")).code == (
        "gpu-unavailable"
    )


def test_a_layer_abort_names_the_layer_when_caffe_did() -> None:
    f = abort_finding("x", died("Check failed: bottom[0]->num() == bottom[1]->num()", "loss_layer.cpp:19", "loss"))
    assert (f.code, f.layer) == ("net-invalid", "loss") and "loss_layer.cpp:19" in f.message
    assert "fix the layer" in f.fix
    anonymous = abort_finding("x", died("Check failed: something", "net.cpp:1"))
    assert anonymous.layer is None and "caffe.log" in anonymous.fix


# ------------------------------------------------------------------ deploy derivation

NET = """
name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { mean_value: 100 scale: 0.5 } data_param { source: "x" batch_size: 2 backend: LMDB } }
layer { name: "train_data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  data_param { source: "y" batch_size: 2 backend: LMDB } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "score" type: "Convolution" bottom: "conv" top: "score"
  convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "score" bottom: "label" top: "acc" include { phase: TEST } }
"""


@pytest.mark.caffe
def test_a_derived_deploy_net_keeps_the_test_path_to_the_scores() -> None:
    """A small NetParameter in, layers kept and dropped out: the TEST data layer becomes one
    Input of the asked size, the TRAIN-only layer and what reads the label go."""
    from nets.prototxt import parse_net
    from orchestrator.predict import deploy as dep

    net = parse_net(NET)
    deploy = dep.derive_deploy(net, 24, 32)
    assert [(x.name, x.type) for x in deploy.layer] == [
        ("data", "Input"),
        ("conv", "Convolution"),
        ("relu", "ReLU"),
        ("score", "Convolution"),
    ]
    assert list(deploy.layer[0].top) == ["data"] and list(deploy.layer[0].input_param.shape[0].dim) == [1, 3, 24, 32]
    assert not any(x.include for x in deploy.layer) and dep.check_deploy(deploy) == []
    info = dep.deploy_info(deploy, net)
    assert (info.input_blob, info.score_blob, info.input_shape) == ("data", "score", (1, 3, 24, 32))
    assert info.fully_convolutional
    assert dep.preprocess_of(net, None) == dep.Preprocess((100.0, 100.0, 100.0), 0.5)
