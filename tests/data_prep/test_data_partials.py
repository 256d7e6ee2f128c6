"""Builds killed with SIGKILL leave their hidden `.<out>.partial-*` folder; the next build of the same
--out removes it, but never the folder of a build that is still running (that build holds a lock
in it): a second build of the same --out meanwhile is refused, naming the pid."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import pytest
from dp_helpers import caffe_datum_array, cli_build, no_leftovers, read_lmdb, start_blocked_build

REPO = Path(__file__).resolve().parents[2]


def _partials(parent: Path, name: str) -> list[Path]:
    return sorted(parent.glob(f".{name}.partial-*"))


@pytest.mark.caffe
def test_killed_build_cleaned_live_build_kept(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    proc = start_blocked_build(data, out)
    try:
        [partial] = _partials(tmp_path, "out")
        rc, _, err = cli_build(data, out, capsys)
        assert rc == 2, err
        assert f"pid {proc.pid}" in err and str(out) in err and "fix:" in err
        assert partial.is_dir() and not out.exists()
    finally:
        proc.kill()
        proc.wait()
    assert partial.is_dir()  # SIGKILL leaves it: what the next build must clean
    rc, _, err = cli_build(data, out, capsys)
    assert rc == 0, err
    assert not partial.exists() and no_leftovers(tmp_path) == [] and not (out / ".owner").exists()
    assert f"removed {partial.name}" in err and f"pid {proc.pid}" in err
    labels = [cv2.imread(str(data / "lab" / f"{i:03d}.png"), cv2.IMREAD_UNCHANGED) for i in range(6)]
    got = [caffe_datum_array(v)[0] for _, v in read_lmdb(out / "labels")]
    assert len(got) == 6 and all((g == want).all() for g, want in zip(got, labels, strict=True))


def test_legacy_partials_by_age(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Folders without an owner record (older versions, or a kill right at the start): removed only
    when nothing in them changed for an hour; another output's folders are never touched."""
    stale, fresh, other = (
        tmp_path / ".out.partial-abc123",
        tmp_path / ".out.partial-def456",
        tmp_path / ".other.partial-xyz",
    )
    old_swap = tmp_path / ".out.old-q1w2e3"
    for d in (stale, fresh, other, old_swap):
        (d / "images").mkdir(parents=True)
        (d / "images" / "data.mdb").write_bytes(b"\0" * 4096)
    hour_ago = time.time() - 3700
    for d in (stale, other, old_swap):
        for p in (d / "images" / "data.mdb", d / "images", d):
            os.utime(p, (hour_ago, hour_ago))
    rc, _, err = cli_build(data, tmp_path / "out", capsys)
    assert rc == 0, err
    assert not stale.exists() and not old_swap.exists()
    assert fresh.is_dir() and other.is_dir()
    assert f"removed {stale.name}" in err


def test_parent_made_by_another_build_meanwhile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two builds into data/a/lmdb and data/b/lmdb both find data/ missing; the one that loses the
    mkdir race goes on (it used to fail with 'cannot write ...: File exists'), and if it fails
    later it removes only the folders it made itself, never the other build's data/."""
    from common.errors import UserError
    from data_prep import fsutil

    shared = tmp_path / "data"
    real_exists, looks = Path.exists, []

    def racing_exists(self: Path, *args: object, **kwargs: object) -> bool:
        if self == shared and not real_exists(self):
            looks.append(self)
            if len(looks) == 2:  # the check before mkdir -p: the other build makes it right after
                self.mkdir()
            return False
        return real_exists(self)

    monkeypatch.setattr(Path, "exists", racing_exists)
    out = shared / "b" / "lmdb"
    with pytest.raises(UserError, match="half-way"), fsutil.atomic_dir(out, overwrite=False) as tmp:
        assert tmp.parent == shared / "b"
        raise UserError("stopped half-way", "a failure after the parents were made")
    monkeypatch.undo()
    assert len(looks) == 2
    assert shared.is_dir() and list(shared.iterdir()) == []  # the other build's folder stays; ours is gone
