"""Config fuzzing (issue 22): random YAML trees and `--set` values through `validate`, `run`'s
pre-flight (everything before Caffe starts) and sweep files. Never a traceback (a UserError,
exit 2, is the only way to refuse), output bounded, and every value `validate` accepts survives
what reads it later: the resolved config.yaml round trip, the solver.prototxt and net prototxts
the run writes, parsed back by caffe_pb2 (int32/uint32 fields, the solver's float32).

Derandomized and bounded (hypothesis, max_examples per property): the same examples on every
machine, a few seconds each."""

from __future__ import annotations

import dataclasses
import math
import struct
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from common.errors import UserError
from orchestrator.cli import main
from orchestrator.config import experiment as cfgmod
from orchestrator.config import schema
from tests.orchestrator.conftest import experiment

pytestmark = pytest.mark.caffe  # caffe_pb2 reads back the prototxts
FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_OUTPUT = 10_000  # characters of stdout + stderr for one refused config


def _schema_keys(cls: type, prefix: str = "") -> dict[str, Any]:
    """Every dotted key of the schema (sections included: a whole section may be replaced) -> its type."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        out[path] = hints[f.name]
        for arg in (hints[f.name], *typing.get_args(hints[f.name])):
            if isinstance(arg, type) and dataclasses.is_dataclass(arg):
                out.update(_schema_keys(arg, path + "."))
    return out


KEYS = _schema_keys(cfgmod.Experiment)
PATHS = [*KEYS, "unknown", "solver.unknown", "data.build.unknown"]
EDGES: list[Any] = [
    0, 1, -1, 2, 255, 256, 2**31 - 1, 2**31, 2**32, 2**63, -(2**31), 10**30,
    0.0, -0.0, 1e-46, 1e-320, 1.5e-45, 3.4e38, 3.5e38, 1e308, math.inf, -math.inf, math.nan, 0.5, 1e-7,
    "", "x", "1e-3", "SGD", "adam", "gpu:0", "gpu:99999999999999999999", "../x", "a" * 300, "語" * 40,
    "null", "yes", "~", [], [1], [1, 2], [2, 1], [0.5, 2.0], [1e308, 1e308], [[1]], {}, {"x": 1},
    None, True, False,
]  # fmt: skip
SCALARS = st.one_of(
    st.sampled_from(EDGES),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.booleans(),
    st.none(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


INT_EDGES = [0, 1, -1, 2, 3, 255, 256, 2**31 - 2, 2**31 - 1, 2**31, 2**32, 2**63, 10**30]
FLOAT_EDGES = [0.0, -0.0, 1e-46, 1e-320, 1.5e-45, 1.2e-38, 3.4e38, 3.5e38, 1e308, 0.999999999, 1 - 1e-12, 1.0, 2.0]


def _typed(tp: Any) -> st.SearchStrategy[Any]:
    """Values of the key's own type, near its limits (most of them pass the type check)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _typed(args[0])
    if origin in (typing.Union, types.UnionType):
        return st.one_of([_typed(a) for a in args])
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(_typed(args[0]), max_size=4)
    if tp is type(None):
        return st.none()
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.sampled_from(INT_EDGES) | st.integers(-10, 10**6)
    if tp is float:
        return st.sampled_from(FLOAT_EDGES) | st.floats(-1e3, 1e40)
    if tp is str:
        return st.sampled_from(["x", "a" * 100, "語" * 33, "/tmp", "", "."]) | st.text(max_size=20)
    return VALUES


def _is_section(tp: Any) -> bool:
    return any(isinstance(a, type) and dataclasses.is_dataclass(a) for a in (tp, *typing.get_args(tp)))


# leaves whose own-typed values mostly pass (not paths that must exist, not the build section's required keys)
LEAVES = sorted(
    k
    for k, tp in KEYS.items()
    if not _is_section(tp) and not k.startswith("data.build") and not k.endswith(("prototxt", "weights", "train"))
)
TYPED_EDIT = st.sampled_from(LEAVES).flatmap(lambda k: st.tuples(st.just(k), _typed(KEYS[k])))
EDIT = st.one_of(
    TYPED_EDIT,
    st.sampled_from(sorted(KEYS)).flatmap(lambda k: st.tuples(st.just(k), _typed(KEYS[k]))),
    st.tuples(st.sampled_from(PATHS), VALUES),
)


def _mutated(base: dict[str, Any], edits: list[tuple[str, Any]]) -> dict[str, Any]:
    tree = yaml.safe_load(yaml.safe_dump(base))
    for key, value in edits:
        schema.set_dotted(tree, key, value)
    return tree


def _validate(path: Path, capsys: pytest.CaptureFixture[str], *sets: str) -> int:
    rc = main(["validate", str(path), *[a for s in sets for a in ("--set", s)]])
    cap = capsys.readouterr()
    assert rc in (0, 2), cap.err
    assert len(cap.out) + len(cap.err) < MAX_OUTPUT, (cap.out + cap.err)[:3000]
    assert "Traceback" not in cap.err
    if rc == 2:
        assert "fix:" in cap.err, cap.err
    event("accepted" if rc == 0 else "refused")
    return rc


def _as_float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def _solver_survives(exp: cfgmod.Experiment, run_root: Path) -> None:
    """solver.prototxt as `run` writes it, parsed back: every field as given (floats as float32,
    finite, not rounded to 0), and Caffe's int32 limits held."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    from orchestrator.run.runner import solver_text
    from orchestrator.rundir import RunDir

    text = solver_text(exp, RunDir(str(run_root)), bool(exp.data.val), exp.solver.prototxt)
    p = text_format.Parse(text, caffe_pb2.SolverParameter())
    for key, value in exp.solver.caffe_fields().items():
        got = getattr(p, key)
        if key == "stepvalue":
            assert list(got) == list(value)
        elif isinstance(value, float):
            assert math.isfinite(got) and got == _as_float32(value), (key, value, got)
            assert (got == 0) == (value == 0), (key, value, got)
        else:
            assert got == value, (key, value, got)
    assert 0 < p.max_iter <= schema.INT_MAX and 0 <= p.test_interval <= schema.INT_MAX


def _nets_survive(exp: cfgmod.Experiment, run_root: Path, data: Path) -> None:
    """The generated nets (on the synthetic data) parse back as NetParameter (uint32/int32 fields)."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    from orchestrator.run.runner import make_nets
    from orchestrator.rundir import RunDir

    if exp.net.prototxt or exp.data.build is not None:
        return
    exp.data.train = str(data / "train")
    exp.data.val = str(data / "val") if exp.data.val else None
    run = RunDir(str(run_root))
    run_root.mkdir(exist_ok=True)
    try:
        make_nets(exp, run)
    except UserError:
        return  # refused cleanly (e.g. more classes than the net can hold): the CLI's exit 2
    for net in run_root.glob("*.prototxt"):
        text_format.Parse(net.read_text(), caffe_pb2.NetParameter())


def _accepted(path: Path, data: Path, tmp: Path, capsys: pytest.CaptureFixture[str], *sets: str) -> None:
    """What `validate` accepted: the config.yaml round trip, the solver and nets, and `run` up to
    its input checks (data missing: exit 2 before anything is created)."""
    exp = cfgmod.load_experiment(path, list(sets))
    again = cfgmod.from_dict(yaml.safe_load(cfgmod.to_yaml(exp)), source="config.yaml")
    assert schema.to_dict(again) == schema.to_dict(exp)
    _solver_survives(exp, tmp / "solver-run")
    _nets_survive(exp, tmp / "net-run", data)
    tree = yaml.safe_load(path.read_text())
    tree["data"]["train"] = str(tmp / "missing-data")
    tree["data"].pop("build", None)
    path.write_text(yaml.safe_dump(tree, allow_unicode=True))
    rc = main(["run", str(path), "--run-dir", str(tmp / "run"), *[a for s in sets for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err) < MAX_OUTPUT, err[:3000]
    assert not (tmp / "run").exists()


@FUZZ
@given(edits=st.lists(TYPED_EDIT, min_size=1, max_size=2) | st.lists(EDIT, min_size=1, max_size=3))
def test_random_trees_through_validate_and_run(edits, synth_lmdb, capsys):
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        path = tmp / "exp.yaml"
        path.write_text(yaml.safe_dump(_mutated(experiment(synth_lmdb), edits), allow_unicode=True))
        if _validate(path, capsys) == 0:
            _accepted(path, synth_lmdb, tmp, capsys)


@FUZZ
@given(top=VALUES)
def test_any_document_through_validate(top, capsys):
    with tempfile.TemporaryDirectory() as t:
        path = Path(t) / "exp.yaml"
        path.write_text(yaml.safe_dump(top, allow_unicode=True))
        assert _validate(path, capsys) == 2


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip().removesuffix("...").strip()


SET_TEXT = st.one_of(
    st.text(max_size=40),
    VALUES.map(lambda v: _flow(v)),
    st.sampled_from(["[", "{a: ", "&a [1, *a]", "!!python/object:os.system x", "'", "*x", "1e400", "0x7fffffff"]),
)


SET = st.tuples(st.sampled_from(PATHS), SET_TEXT).map("=".join) | TYPED_EDIT.map(lambda kv: f"{kv[0]}={_flow(kv[1])}")


@FUZZ
@given(sets=st.lists(SET, min_size=1, max_size=3))
def test_set_values_through_validate_and_run(sets, synth_lmdb, capsys):
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        path = tmp / "exp.yaml"
        path.write_text(yaml.safe_dump(experiment(synth_lmdb)))
        if _validate(path, capsys, *sets) == 0:
            _accepted(path, synth_lmdb, tmp, capsys, *sets)


SWEEP_KEYS = ["name", "base", "space", "samples", "seed", "metric", "mode", "resources", "resources.cpus"]
SWEEP_KEYS += ["max_concurrent", "scheduler", "scheduler.type", "scheduler.grace_period", "set", "unknown"]
KINDS = ["grid", "choice", "uniform", "loguniform", "other"]
TYPED_DIM = st.sampled_from(LEAVES).flatmap(
    lambda k: st.tuples(
        st.just(k),
        st.dictionaries(st.sampled_from(KINDS[:2]), st.lists(_typed(KEYS[k]), min_size=1, max_size=3), max_size=1)
        | st.dictionaries(st.sampled_from(KINDS[2:4]), st.lists(st.sampled_from(FLOAT_EDGES), max_size=3), max_size=1),
    )
)
SPACE = st.lists(TYPED_DIM, max_size=3).map(dict) | st.dictionaries(
    st.sampled_from(PATHS), st.dictionaries(st.sampled_from(KINDS), VALUES, max_size=2) | VALUES, max_size=3
)


@FUZZ
@given(
    space=SPACE,
    edits=st.lists(st.tuples(st.sampled_from(SWEEP_KEYS), VALUES), max_size=2),
)
def test_random_sweep_files(space, edits, synth_lmdb):
    from orchestrator.sweep import sweepfile

    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        base = tmp / "base.yaml"
        base.write_text(yaml.safe_dump(experiment(synth_lmdb)))
        tree: dict[str, Any] = {"name": "fz", "base": str(base), "space": space}
        for key, value in edits:
            schema.set_dotted(tree, key, value)
        path = tmp / "sweep.yaml"
        path.write_text(yaml.safe_dump(tree, allow_unicode=True))
        try:
            cfg = sweepfile.load_sweep(path)
            trials = sweepfile.plan_trials(cfg)
            exps = sweepfile.trial_experiments(cfg, trials)
        except UserError as e:
            assert len(str(e)) < MAX_OUTPUT, str(e)[:3000]
            event("refused")
            return
        event("accepted")
        for exp in exps[:3]:
            _solver_survives(exp, tmp / "solver-run")
