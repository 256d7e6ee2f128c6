"""A misspelt prototxt field or enum value gets "did you mean", as a misspelt YAML key does."""

from __future__ import annotations

import contextlib
import io

import pytest

from common.errors import UserError
from nets.prototxt import did_you_mean, load_solver, parse_net

pytestmark = pytest.mark.caffe

CONV = 'layer {{ name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param {{ num_output: 2 {} }} }}'


def test_field_and_enum_typos_name_the_right_spelling(tmp_path):
    with pytest.raises(UserError) as e:
        parse_net(CONV.format("kernel_siz: 3"), "train.prototxt")
    assert "did you mean 'kernel_size'?" in e.value.message and "line 1" in e.value.message
    assert "write kernel_size instead of kernel_siz" in e.value.fix
    with pytest.raises(UserError, match="did you mean 'MAX'"):
        parse_net('layer { name: "p" type: "Pooling" pooling_param { pool: MAXX } }')
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "x"\nbase_lrr: 0.01\n')
    with pytest.raises(UserError, match="did you mean 'base_lr'"):
        load_solver(solver)
    # nothing close: no guess
    assert did_you_mean('Message type "caffe.LayerParameter" has no field named "foo_bar_baz".') is None


def test_the_command_line_says_it(tmp_path):
    from orchestrator.cli import main

    (tmp_path / "net.prototxt").write_text(CONV.format("kernel_siz: 3"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["check", "--prototxt", str(tmp_path / "net.prototxt"), "--static"])
    assert rc == 2 and "did you mean 'kernel_size'?" in err.getvalue()
