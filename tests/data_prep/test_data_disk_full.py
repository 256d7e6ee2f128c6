"""Disk full while writing: `no space left writing <path>` with the fix, exit 2, nothing half-written
(no partial folder, the file system as empty as before), an older output kept. On a real 2 MB
tmpfs; skipped with the reason where this process may not mount one."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from dp_helpers import assert_failed, cli_build, coded_pairs, write_pairs

from orchestrator.cli import main


@pytest.fixture()
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs mounted at tmp_path/small, unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command here: cannot make a size-limited file system")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a 2 MB tmpfs (needs root or CAP_SYS_ADMIN): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


def _used(mnt: Path) -> int:
    st = os.statvfs(mnt)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _big_data(tmp_path: Path) -> Path:
    """12 pairs of 240x320: about 3.7 MB of raw records, more than the tmpfs holds."""
    images, labels = coded_pairs(12, h=240, w=320, block=16)
    write_pairs(tmp_path / "big", images, labels)
    return tmp_path / "big"


def test_build_disk_full(tmp_path: Path, small_fs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """LMDB reports the short write as EIO ('mdb_txn_commit: Input/output error'): it must read as disk full."""
    before = _used(small_fs)
    out = small_fs / "out"
    rc, _, err = cli_build(_big_data(tmp_path), out, capsys)
    assert_failed(rc, err, out, "no space left", f"writing {out}", "free space", "--out")
    assert "Traceback" not in err and "mdb_txn_commit" not in err.splitlines()[0]
    assert list(small_fs.iterdir()) == []
    assert _used(small_fs) == before


def test_build_disk_full_overwrite_keeps_old_output(
    data: Path, tmp_path: Path, small_fs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = small_fs / "out"
    rc, _, err = cli_build(data, out, capsys)
    assert rc == 0, err
    old = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    big = _big_data(tmp_path)
    rc, _, err = cli_build(big, out, capsys, "--overwrite")
    assert rc == 2 and "no space left" in err and "fix:" in err, err
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == old
    assert sorted(p.name for p in small_fs.iterdir()) == ["out"]


def test_synth_disk_full(small_fs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """cv2.imwrite only returns False on a full disk: a truncated dataset must not pass as written."""
    out = small_fs / "s"
    rc = main(["data", "synth", "--out", str(out), "--train", "400", "--val", "10"])
    err = capsys.readouterr().err
    assert_failed(rc, err, out, "no space left", f"writing {out}")
    assert list(small_fs.iterdir()) == []


def test_full_before_start(tmp_path: Path, small_fs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Already full: not even the temp folder fits; the same message, and the filler file is untouched."""
    filler = small_fs / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(np.zeros(1 << 16, np.uint8).tobytes())
        except OSError:
            pass
    size = filler.stat().st_size
    out = small_fs / "deeper" / "out"
    images, labels = coded_pairs(4)
    data = write_pairs(tmp_path / "d", images, labels).parent
    rc, _, err = cli_build(data, out, capsys)
    assert_failed(rc, err, out, "no space left")
    assert sorted(p.name for p in small_fs.iterdir()) == ["filler"] and filler.stat().st_size == size
