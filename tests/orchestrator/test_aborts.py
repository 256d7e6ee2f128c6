"""A Caffe abort in a child is pinned on what failed (issue 21, case 7): the solver's settings,
a solver state of another net, a truncated caffemodel; a layer only when Caffe was setting it
up or names it. The logs are Caffe's own, from real aborts in a child."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.child import ChildResult, parse_glog_fatal, run_child
from orchestrator.run.supervisor import abort_finding
from tests.orchestrator.conftest import unet

pytestmark = pytest.mark.caffe


def _solver(path: Path, net: Path, kind: str, extra: str = "") -> Path:
    path.write_text(
        f'train_net: "{net}"\ntest_net: "{net}"\ntest_iter: 1\ntest_interval: 1000\ntest_initialization: false\n'
        f'type: "{kind}"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 2\nsnapshot_prefix: "{path.parent}/s"\n' + extra
    )
    return path


def _abort(tmp: Path, name: str, code: str) -> ChildResult:
    """Run `code` (after `import caffe`) in a child with Caffe's INFO log on, as the training
    child runs; its result as the supervisor reads it."""
    res, _ = run_child(
        ["-c", "import caffe\ncaffe.set_mode_cpu()\n" + code],
        tmp / f"{name}.log",
        env={**os.environ, "GLOG_minloglevel": "0"},
        timeout=120,
    )
    assert res.returncode < 0 and res.fatal, (name, (tmp / f"{name}.log").read_text()[-2000:])
    assert "Setting up accuracy" in (tmp / f"{name}.log").read_text()  # the last layer Caffe set up
    return res


@pytest.fixture(scope="module")
def caffe_aborts(synth_lmdb: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ChildResult]:
    tmp = tmp_path_factory.mktemp("aborts")
    net = tmp / "unet.prototxt"
    net.write_text(unet(synth_lmdb, 2))
    wider = tmp / "wider.prototxt"
    wider.write_text(unet(synth_lmdb, 2).replace("num_output: 16", "num_output: 24"))
    deeper = tmp / "deeper.prototxt"
    deeper.write_text(
        unet(synth_lmdb, 2).replace(
            'layer { name: "score"',
            'layer { name: "c5" type: "Convolution" bottom: "c4" top: "c4"\n'
            "  convolution_param { num_output: 8 kernel_size: 1 } }\n"
            'layer { name: "score"',
        )
    )
    sgd = _solver(tmp / "sgd.prototxt", net, "SGD")
    # a state to restore elsewhere, and a caffemodel cut in half
    run_child(["-c", f"import caffe\ns = caffe.get_solver('{sgd}')\ns.step(1)\ns.snapshot()"], tmp / "make.log")
    model = (tmp / "s_iter_1.caffemodel").read_bytes()
    (tmp / "cut.caffemodel").write_bytes(model[: len(model) // 2])
    rms = _solver(tmp / "rms.prototxt", net, "RMSProp", "momentum: 0.9\n")
    deep = _solver(tmp / "deep.prototxt", deeper, "SGD")
    return {
        "rmsprop": _abort(tmp, "rmsprop", f"caffe.get_solver('{rms}')"),
        "history": _abort(tmp, "history", f"s = caffe.get_solver('{deep}')\ns.restore('{tmp}/s_iter_1.solverstate')"),
        "truncated": _abort(
            tmp, "truncated", f"s = caffe.get_solver('{sgd}')\ns.net.copy_from('{tmp}/cut.caffemodel')"
        ),
        "shape": _abort(
            tmp,
            "shape",
            f"s = caffe.get_solver('{_solver(tmp / 'wide.prototxt', wider, 'SGD')}')\n"
            f"s.net.copy_from('{tmp}/s_iter_1.caffemodel')",
        ),
    }


def test_momentum_with_rmsprop_is_the_solvers_fault_not_a_layers(caffe_aborts):
    f = abort_finding("child-died", caffe_aborts["rmsprop"])
    assert f.code == "solver-invalid" and f.layer is None
    assert "Momentum cannot be used with RMSProp" in f.message and "solver" in f.fix


def test_a_state_of_another_net_is_a_snapshot_mismatch(caffe_aborts):
    f = abort_finding("child-died", caffe_aborts["history"])
    assert f.code == "snapshot-mismatch" and f.layer is None
    assert "history blobs" in f.message and "weights" in f.fix


def test_a_truncated_caffemodel_is_named_not_a_layer(caffe_aborts):
    f = abort_finding("child-died", caffe_aborts["truncated"])
    assert f.code == "weights-unreadable" and f.layer is None and "cut.caffemodel" in f.message


def test_a_layer_is_named_when_caffe_names_it(caffe_aborts):
    f = abort_finding("child-died", caffe_aborts["shape"])
    assert f.code == "weights-mismatch" and f.layer == "c3"


def test_a_layer_being_set_up_is_still_the_one_blamed():
    log = (
        "I1202 08:00:00.000000 1 net.cpp:84] Creating Layer crop5\n"
        "F1202 08:00:00.000001 1 crop_layer.cpp:44] Check failed: offset too large\n"
    )
    assert parse_glog_fatal(log)[2] == "crop5"
    done = "I1202 08:00:00.000000 1 net.cpp:255] Network initialization done.\n"
    assert parse_glog_fatal(log.replace("F1202", done + "F1202", 1))[2] is None
