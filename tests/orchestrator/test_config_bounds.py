"""Configuration input that used to explode or traceback (issue 22): YAML alias bombs and huge
files, names too long for the file system in bytes, broken sweep bases, a closed output pipe.
Each ends in one bounded error naming the file (exit 2), or, for the pipe, a quiet exit 141."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import UserError
from orchestrator.cli import main
from orchestrator.config import experiment as cfgmod
from orchestrator.config import yamlio
from orchestrator.contract import EXIT_BROKEN_PIPE
from tests.orchestrator.conftest import experiment, write_exp

ROOT = Path(__file__).resolve().parents[2]


def _bomb(levels: int, tail: str = "name: *{last}\ndata: {{train: /nonexistent/train}}\n") -> str:
    """The 'billion laughs': level k is nine aliases of level k - 1 (9**levels strings once expanded)."""
    names = "abcdefghij"[:levels]
    lines = ["a: &a [" + ",".join(['"lol"'] * 9) + "]"]
    lines += [f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]" for p, c in zip(names, names[1:], strict=False)]
    return "\n".join(lines) + "\n" + tail.format(last=names[-1])


def _validate(tmp_path: Path, text: str | bytes, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    path = tmp_path / "exp.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    rc = main(["validate", str(path), *extra])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def test_alias_bomb_is_refused_in_a_few_lines(tmp_path, capsys):
    """The issue's bomb (8 levels, ~390 bytes): was 312 MB of error text, 1.25 GB RSS, 17 s."""
    text = _bomb(8)
    assert len(text) < 400
    rc, out = _validate(tmp_path, text, capsys)
    assert rc == 2 and "exp.yaml" in out and "aliases" in out and "fix:" in out
    assert len(out) < 1000


def test_a_small_alias_tree_is_loaded_but_quoted_short(tmp_path, capsys):
    """4 levels (6561 strings, 46 kB as text) pass the size bound; the name is quoted in a few hundred characters."""
    rc, out = _validate(tmp_path, _bomb(4), capsys)
    assert rc == 2 and "name: expected a string" in out and "..." in out
    assert len(out) < 2000


def test_recursive_alias_and_set_bomb(tmp_path, capsys):
    rc, out = _validate(tmp_path, "name: &a [1, *a]\ndata: {train: x}\n", capsys)
    assert rc == 2 and "contains it" in out and "Traceback" not in out
    inline = "[&a [1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], "
    inline += "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], [*e,*e,*e,*e,*e,*e,*e,*e,*e]]"
    rc, out = _validate(tmp_path, "name: x\ndata: {train: x}\n", capsys, "--set", f"solver.stepvalue={inline}")
    assert rc == 2 and "--set" in out and "aliases" in out and len(out) < 1000


def test_a_file_over_one_mib_is_not_parsed(tmp_path, capsys):
    """A 50 MB YAML took 112 s and 2 GB; now the size is checked before parsing (reading at most 1 MiB + 1)."""
    text = "name: big\ndata: {train: x}\n" + "# padding\n" * (yamlio.MAX_BYTES // 10)
    rc, out = _validate(tmp_path, text, capsys)
    assert rc == 2 and "exp.yaml" in out and "larger than 1024 KiB" in out


def test_many_errors_are_counted_not_all_listed(tmp_path, capsys):
    text = "name: x\ndata: {train: x}\nsolver: {stepvalue: [" + ", ".join(['"no"'] * 5000) + "]}\n"
    rc, out = _validate(tmp_path, text, capsys)
    assert rc == 2 and "5000 problem(s)" in out and "and 4970 more" in out and len(out) < 10_000


@pytest.mark.parametrize(
    ("name", "ok"),
    [("a" * 100, True), ("a" * 101, False), ("語" * 33, True), ("語" * 34, False), ("語" * 100, False)],
)
def test_names_are_bounded_in_bytes(name: str, ok: bool, tmp_path, capsys):
    """100 CJK characters (300 bytes) passed validate and then failed `run` with 'File name too long'."""
    rc, out = _validate(tmp_path, f"name: {name}\ndata: {{train: x}}\n", capsys)
    assert rc == (0 if ok else 2), out
    if not ok:
        assert "100 bytes" in out


def test_sweep_names_leave_room_for_trial_numbers(tmp_path):
    from orchestrator.sweep.sweepfile import load_sweep

    base = write_exp(tmp_path, experiment(tmp_path))
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: {'s' * 97}\nbase: {base}\nspace: {{solver.base_lr: [0.1]}}\n")
    with pytest.raises(UserError, match="at most 96 UTF-8 bytes"):
        load_sweep(sweep)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("name: [unclosed\n", "not valid YAML"),
        ("", "is empty"),
        ("- a\n- b\n", "is a list, not a mapping"),
        ("just text\n", "is a str, not a mapping"),
        (None, "not found"),
    ],
)
def test_sweep_with_a_broken_base(content: str | None, words: str, tmp_path, capsys):
    base = tmp_path / "base.yaml"
    if content is not None:
        base.write_text(content)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: s\nbase: {base}\nspace: {{solver.base_lr: [0.1, 0.2]}}\n")
    rc = main(["sweep", str(sweep), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and str(base) in err and words in err and "fix:" in err, err
    assert not (tmp_path / "out").exists()


def test_a_grid_of_too_many_trials_is_refused(tmp_path, capsys):
    base = write_exp(tmp_path, experiment(tmp_path))
    space = ", ".join(f"solver.k{i}: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]" for i in range(12))
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: s\nbase: {base}\nspace: {{{space}}}\n")
    rc = main(["sweep", str(sweep), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "1000000000000 trials" in err


class _ClosedPipe(io.StringIO):
    """stdout whose reader has gone: writing (or flushing what was buffered) fails."""

    def write(self, s: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("argv", [["--help"], ["runs", "TMP"], ["--version"], ["validate", "EXP"], ["data", "--help"]])
def test_a_closed_stdout_is_a_quiet_exit(argv: list[str], tmp_path, capsys, monkeypatch):
    """Every verb goes through main(): the broken pipe is neither 'error: Broken pipe' nor a traceback."""
    exp = write_exp(tmp_path, experiment(tmp_path))
    argv = [{"EXP": str(exp), "TMP": str(tmp_path)}.get(a, a) for a in argv]
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(argv) == EXIT_BROKEN_PIPE
    assert capsys.readouterr().err == ""


@pytest.mark.caffe
def test_check_json_into_head(synth_lmdb, tmp_path):
    """The real thing: `orchestrate check --json EXP | head -c 1`, the reader gone before the output."""
    exp = write_exp(tmp_path, experiment(synth_lmdb))
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "check", "--json", "--static", str(exp)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # `head` exited
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_BROKEN_PIPE, err.decode()[-2000:]
    assert b"Broken pipe" not in err and b"Traceback" not in err


def test_set_values_are_bounded_too():
    with pytest.raises(UserError) as e:
        cfgmod.parse_override("solver.base_lr=" + "[" * 5000)
    assert len(str(e.value)) < 3000
