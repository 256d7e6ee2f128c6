"""The command line speaks to users: `orchestrate --help` (not a developer docstring), help for
every positional argument, no argparse escapes (`%%`) in any help text."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from orchestrator.cli.main import _parser, main


def all_parsers(p: argparse.ArgumentParser, path: str = "orchestrate") -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(path, p)]
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                out += all_parsers(sp, f"{path} {name}")
    return out


def help_text(argv: list[str]) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as e:
        main(argv + ["--help"])
    assert e.value.code == 0
    return buf.getvalue()


def test_top_level_help_is_for_users():
    text = help_text([])
    assert "Train semantic-segmentation nets on BVLC Caffe" in text
    assert "orchestrate run experiments/demo.yaml" in text and "tensorboard --logdir runs/" in text
    assert "thin command line" not in text and "turns\nexceptions" not in text  # the module docstring


def test_every_positional_argument_has_help_and_no_percent_escape_shows():
    parsers = all_parsers(_parser())
    assert len(parsers) > 10
    missing = [
        f"{path} {a.dest}"
        for path, p in parsers
        for a in p._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction) and not a.help
    ]
    assert missing == []
    for path, p in parsers:
        text = p.format_help()
        assert "%%" not in text, f"{path} --help shows %%"
    assert "(one under 2 % of pixels)" in help_text(["data", "synth"])
