"""`orchestrate data build` flags, progress bar, throughput line and recorded options."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from dp_helpers import build_argv, coded_pairs, read_lmdb, write_pairs

from data_prep.progress import Progress
from orchestrator.cli import main


@pytest.fixture()
def lst(tmp_path: Path) -> Path:
    images, labels = coded_pairs(6)
    return write_pairs(tmp_path / "d", images, labels)


def test_progress_bar_and_throughput(lst: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_argv(
        ["--list", str(lst)], None, "--workers", "1", "--resize", "16x12", "--encoded", "--shuffle-seed", "4"
    )
    assert main([*args, "--out", str(tmp_path / "o")]) == 0
    cap = capsys.readouterr()
    assert "6/6" in cap.err and "rec/s" in cap.err and "ETA" in cap.err
    assert "throughput:" in cap.out and "pairs/s" in cap.out and "6 records (16x12)" in cap.out
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["options"]["workers"] == 1 and stats["options"]["list"] == str(lst)
    assert stats["encoded"] is True and stats["resize"] == [16, 12] and stats["shuffle_seed"] == 4
    assert stats["source"] == {"list": str(lst.resolve()), "root": str(lst.parent.resolve())}
    assert main([*args, "--out", str(tmp_path / "q"), "--workers", "2", "--quiet"]) == 0
    cap = capsys.readouterr()
    assert "rec/s" not in cap.err and "throughput:" in cap.out
    assert read_lmdb(tmp_path / "q" / "images") == read_lmdb(tmp_path / "o" / "images")  # workers don't matter


def test_root_and_bad_resize(lst: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    moved = tmp_path / "lists" / "l.txt"
    moved.parent.mkdir()
    moved.write_text(lst.read_text())
    base = ["data", "build", "--list", str(moved), "--num-classes", "5", "--ignore-label", "255", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 2
    assert "l.txt line 1" in capsys.readouterr().err
    assert main([*base, "--root", str(lst.parent), "--out", str(tmp_path / "b")]) == 0
    with pytest.raises(SystemExit):
        main([*base, "--out", str(tmp_path / "c"), "--resize", "big"])
    assert "not like 480x360" in capsys.readouterr().err


def test_data_without_subcommand_shows_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data"]) == 2
    assert "build" in capsys.readouterr().out


def test_progress_line_format() -> None:
    stream = io.StringIO()
    bar = Progress(4, "x", stream=stream)
    for _ in range(4):
        bar.update()
    text = stream.getvalue()
    assert text.count("\n") == 1 and "4/4" in text and "[########################]" in text
    quiet = io.StringIO()
    Progress(2, quiet=True, stream=quiet).update(2)
    assert quiet.getvalue() == ""
