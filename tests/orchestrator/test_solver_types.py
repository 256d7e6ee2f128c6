"""The user's solver file comes through field for field, and each of Caffe's six solver types
runs with its own defaults and rules (issue 21, cases 2 and 3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from common.errors import UserError
from orchestrator.config import experiment as cfg
from orchestrator.config.solverfile import MANAGED
from orchestrator.run.runner import solver_text
from orchestrator.rundir import RunDir
from tests.orchestrator.conftest import experiment, orchestrate, write_exp

pytestmark = pytest.mark.caffe

TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
# a value other than Caffe's default for each kind of field (and inside the schema's limits)
_STRINGS = {"type": "Nesterov", "lr_policy": "step", "regularization_type": "L1"}
_ENUMS = {"solver_mode": "GPU", "snapshot_format": "HDF5", "solver_type": "NESTEROV"}


def _caffe_pb2() -> Any:
    from caffe.proto import caffe_pb2

    return caffe_pb2


def _set_non_default(p: Any, f: Any) -> None:
    """Give field `f` of SolverParameter `p` a value that differs from its default."""
    from google.protobuf.descriptor import FieldDescriptor as FD

    kind = f.cpp_type
    if f.message_type is not None:
        target = p.__getattribute__(f.name)
        sub = target.add() if f.label == FD.LABEL_REPEATED else target
        sub.SetInParent()
        if hasattr(sub, "name"):
            sub.name = "x"
    elif f.label == FD.LABEL_REPEATED:
        getattr(p, f.name).extend([3, 5, 9] if kind != FD.CPPTYPE_STRING else ["a.caffemodel", "b.caffemodel"])
    elif f.enum_type is not None:
        setattr(p, f.name, f.enum_type.values_by_name[_ENUMS[f.name]].number)
    elif kind == FD.CPPTYPE_BOOL:
        setattr(p, f.name, not f.default_value)
    elif kind == FD.CPPTYPE_STRING:
        setattr(p, f.name, _STRINGS.get(f.name, "somewhere/x"))
    elif kind in (FD.CPPTYPE_FLOAT, FD.CPPTYPE_DOUBLE):
        setattr(p, f.name, 0.25)
    else:
        setattr(p, f.name, 7)


def converted(tmp_path: Path, user: Any, overrides: tuple[str, ...] = ()) -> Any:
    """The run's solver.prototxt (parsed) for an experiment built on the user's solver file."""
    from google.protobuf import text_format

    path = tmp_path / "user_solver.prototxt"
    path.write_text(text_format.MessageToString(user))
    raw = {"name": "s", "data": {"train": str(tmp_path)}, "solver": {"prototxt": str(path)}}
    exp = cfg.from_dict(raw, list(overrides), solver_file=True)
    text = solver_text(exp, RunDir(tmp_path / "run"), True, exp.solver.prototxt)
    return text_format.Parse(text, _caffe_pb2().SolverParameter())


def _fields() -> list[Any]:
    return list(_caffe_pb2().SolverParameter.DESCRIPTOR.fields)


@pytest.mark.parametrize("name", [f.name for f in _fields()])
def test_every_solver_field_of_the_users_file_comes_through_once(tmp_path, name):
    """Each field of Caffe's SolverParameter, set alone to a non-default value: the run's file
    holds it exactly as given (repeated fields: the same list, not doubled), or, for what the
    run manages itself, the run's own value once."""
    p = _caffe_pb2().SolverParameter()
    f = p.DESCRIPTOR.fields_by_name[name]
    _set_non_default(p, f)
    out = converted(tmp_path, p)
    from google.protobuf.descriptor import FieldDescriptor as FD

    if name == "solver_type":  # Caffe's deprecated enum becomes the `type` string
        assert out.type == "Nesterov" and not out.HasField("solver_type")
    elif name in MANAGED:  # the run's own value, as without the file
        assert getattr(out, name) == getattr(converted(tmp_path, _caffe_pb2().SolverParameter()), name), name
    elif f.label == FD.LABEL_REPEATED:
        assert list(getattr(out, name)) == list(getattr(p, name))
    else:
        assert getattr(out, name) == getattr(p, name), (name, getattr(out, name))


def test_three_stepvalues_stay_three(tmp_path):
    p = _caffe_pb2().SolverParameter(lr_policy="multistep", stepvalue=[100, 200, 300], max_iter=400)
    assert list(converted(tmp_path, p).stepvalue) == [100, 200, 300]
    # an override replaces the list, it does not add to it
    out = converted(tmp_path, p, ("solver.stepvalue=[50,60]",))
    assert list(out.stepvalue) == [50, 60]


@pytest.mark.parametrize("kind", TYPES)
def test_each_type_gets_its_own_defaults(tmp_path, kind):
    exp = cfg.from_dict({"name": "s", "data": {"train": str(tmp_path)}, "solver": {"type": kind}})
    f = exp.solver.caffe_fields()
    assert f["momentum"] == {"AdaGrad": 0.0, "RMSProp": 0.0, "AdaDelta": 0.95}.get(kind, 0.9)
    assert ("momentum2" in f) == (kind == "Adam") and ("rms_decay" in f) == (kind == "RMSProp")
    assert ("delta" in f) == (kind not in ("SGD", "Nesterov"))
    # a file of that type without momentum (as Caffe requires for AdaGrad/RMSProp): none injected
    out = converted(tmp_path, _caffe_pb2().SolverParameter(type=kind, base_lr=0.01))
    assert out.momentum == pytest.approx(f["momentum"]) and out.type == kind


def test_validate_names_every_combination_caffe_refuses_at_once(tmp_path):
    raw = {"name": "s", "data": {"train": str(tmp_path)}, "solver": {"type": "RMSProp", "momentum": 0.9}}
    with pytest.raises(UserError) as e:
        cfg.from_dict(raw, ["solver.rms_decay=1.5"])
    assert "Momentum cannot be used with RMSProp" in e.value.message and "rms_decay" in e.value.message
    # --set solver.type=AdaGrad on an experiment that asks for momentum
    raw = {"name": "s", "data": {"train": str(tmp_path)}, "solver": {"momentum": 0.9}}
    with pytest.raises(UserError, match="AdaGrad"):
        cfg.from_dict(raw, ["solver.type=AdaGrad"])
    # the file's own fields Caffe aborts on, all named with the file
    p = _caffe_pb2().SolverParameter(type="AdaGrad", momentum=0.5, average_loss=0, regularization_type="L3")
    with pytest.raises(UserError) as e:
        converted(tmp_path, p)
    for words in ("Momentum cannot be used with AdaGrad", "average_loss", "regularization_type"):
        assert words in e.value.message


def test_validate_refuses_adagrad_set_on_the_command_line_over_a_momentum(synth_lmdb, tmp_path):
    exp = write_exp(tmp_path, experiment(synth_lmdb, solver={"type": "SGD", "momentum": 0.9}))
    r = orchestrate("validate", str(exp), "--set", "solver.type=AdaGrad", "--set", "solver.rms_decay=2")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "Momentum cannot be used with AdaGrad" in r.stderr and "solver.rms_decay" in r.stderr
    assert (
        orchestrate("validate", str(exp), "--set", "solver.type=RMSProp", "--set", "solver.momentum=0").returncode == 0
    )


@pytest.mark.parametrize("kind", TYPES)
def test_each_solver_type_trains_from_the_schema_and_from_a_file(synth_lmdb, tmp_path, kind):
    """Six iterations of each type, once from the YAML schema, once from a solver file with the
    type's own settings (no momentum for AdaGrad/RMSProp): both finish with a finite loss."""
    base_lr = {"AdaDelta": 1.0, "Adam": 0.002}.get(kind, 0.01)
    own = {"AdaDelta": "momentum: 0.95\ndelta: 1e-6\n", "RMSProp": "rms_decay: 0.98\n", "Adam": "momentum: 0.9\n"}
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'type: "{kind}"\nbase_lr: {base_lr}\nlr_policy: "fixed"\n' + own.get(kind, ""))
    for name, section in (("schema", {"type": kind, "base_lr": base_lr}), ("file", {"prototxt": str(solver)})):
        exp = experiment(synth_lmdb, solver={**section, "max_iter": 6}, validation={"enabled": False})
        exp["solver"] = {k: v for k, v in exp["solver"].items() if k in section or k == "max_iter"}
        exp["snapshot"] = {"interval": 6, "keep_last": 1}
        run = tmp_path / name
        r = orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run))
        assert r.returncode == 0, (name, r.stderr[-2000:])
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["iterations"] == 6
        assert f'type: "{kind}"' in (run / "solver.prototxt").read_text()
