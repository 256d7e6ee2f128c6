"""`run --from-snapshot` with a state of another net or solver type is refused before anything
is made, saying what differs (issue 21, case 8); a state that fits still continues."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.child import run_child
from orchestrator.run.statecheck import mismatch
from tests.orchestrator.conftest import experiment, orchestrate, user_net, write_exp

pytestmark = pytest.mark.caffe


def test_mismatch_says_what_differs():
    net = [("conv1", 0, (8, 3, 3, 3)), ("conv1", 1, (8,)), ("score", 0, (5, 8, 1, 1)), ("score", 1, (5,))]
    assert mismatch([s for _, _, s in net], net, "SGD") is None
    assert mismatch([s for _, _, s in net] * 2, net, "Adam") is None
    assert "Adam or AdaDelta" in mismatch([s for _, _, s in net] * 2, net, "SGD")
    assert "of another net (other depth" in mismatch([s for _, _, s in net][:3], net, "SGD")
    wide = [(16, 3, 3, 3), (16,), (5, 16, 1, 1), (5,)]
    why = mismatch(wide, net, "Nesterov")
    assert "history blob 0 is 16x3x3x3" in why and "'conv1' is 8x3x3x3" in why


def _state(tmp: Path, net_text: str, kind: str) -> Path:
    """A `caffe train`-style state: 2 iterations of `net_text` under solver `kind`."""
    net = tmp / f"{kind}_net.prototxt"
    net.write_text(net_text)
    solver = tmp / f"{kind}_solver.prototxt"
    solver.write_text(
        f'train_net: "{net}"\ntype: "{kind}"\nbase_lr: 0.001\nlr_policy: "fixed"\nsnapshot_prefix: "{tmp}/{kind}"\n'
    )
    res, _ = run_child(["-c", f"import caffe\ns = caffe.get_solver('{solver}')\ns.step(2)\ns.snapshot()"], tmp / "l")
    assert res.returncode == 0
    return tmp / f"{kind}_iter_2.solverstate"


@pytest.fixture(scope="module")
def states(synth_lmdb: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("states")
    wide = user_net(synth_lmdb, 4).replace("num_output: 8", "num_output: 12")
    deep = user_net(synth_lmdb, 4).replace(
        'layer { name: "score"',
        'layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv1"\n'
        '  convolution_param { num_output: 8 kernel_size: 1 weight_filler { type: "msra" } } }\nlayer { name: "score"',
    )
    out = {}
    for name, text, kind in (
        ("wide", wide, "SGD"),
        ("deep", deep, "Nesterov"),
        ("adam", user_net(synth_lmdb, 4), "Adam"),
    ):
        d = tmp / name
        d.mkdir()
        out[name] = _state(d, text, kind)
    return out


@pytest.mark.parametrize(
    ("state", "kind", "words"),
    [
        ("wide", "SGD", "history blob 0 is 12x3x3x3"),
        ("deep", "Nesterov", "a state of another net (other depth"),
        ("adam", "SGD", "the state of an Adam or AdaDelta solver"),
    ],
)
def test_a_state_of_another_net_or_solver_is_refused_before_anything_is_made(
    states, synth_lmdb, tmp_path, state, kind, words
):
    net = tmp_path / "net.prototxt"
    net.write_text(user_net(synth_lmdb, 4))
    exp = experiment(
        synth_lmdb,
        net={"prototxt": str(net), "num_classes": 5, "ignore_label": 255},
        solver={"type": kind, "base_lr": 0.001, "max_iter": 10},
    )
    run = tmp_path / "run"
    r = orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run), "--from-snapshot", str(states[state]))
    assert r.returncode == 2, r.stderr[-2000:]
    assert words in r.stderr and "does not fit this net" in r.stderr and "Traceback" not in r.stderr
    assert not run.exists()


def test_a_state_that_fits_continues(states, synth_lmdb, tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text(user_net(synth_lmdb, 4))
    exp = experiment(
        synth_lmdb,
        net={"prototxt": str(net), "num_classes": 5, "ignore_label": 255},
        solver={"type": "Adam", "base_lr": 0.001, "max_iter": 4},
        validation={"enabled": False},
    )
    run = tmp_path / "run"
    r = orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run), "--from-snapshot", str(states["adam"]))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "continuing from iteration 2" in r.stdout
