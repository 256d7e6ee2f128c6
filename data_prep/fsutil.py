"""Write a whole output folder or nothing: build in a hidden temp folder next to it, then rename.

Also the file-system errors a user can act on: --out below a file, a full disk (said as such, not
as LMDB's "Input/output error"), and text files that are not UTF-8.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from common.errors import UserError
from data_prep import partials

FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# LMDB reports a short write on a full disk as EIO; with less than this left we call it disk full.
NEARLY_FULL_BYTES = 64 << 20
UTF8_FIX = "save it as UTF-8, e.g. iconv -f latin1 -t utf-8 {path} > fixed && mv fixed {path}"


def read_utf8(path: Path, what: str, fix: str = UTF8_FIX) -> str:
    """The text of a UTF-8 file (a BOM is allowed); anything else is a UserError naming the byte,
    because guessing an encoding would turn file names into names that do not exist."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO would block the read for ever
        kind = "a folder" if path.is_dir() else "not a regular file (a pipe or a device)"
        raise UserError(f"{what} {path} is {kind}", f"give the path of the {what} itself")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise UserError(
            f"{what} {path} is not UTF-8 text: byte 0x{data[e.start]:02x} at line {line}, column {col}",
            fix.format(path=path),
        ) from None


def check_out_path(out_dir: Path) -> None:
    """Refuse an output below a regular file (mkdir would fail half-way) or in a folder we cannot write."""
    for parent in Path(out_dir).parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(
                    f"cannot create --out {out_dir}: {parent} is a file, not a folder",
                    f"choose another --out, or move {parent} away",
                )
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(
                    f"cannot create --out {out_dir}: no permission to write in {parent}",
                    "choose another --out in a folder you can write",
                )
            return


def _free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding `path`."""
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def write_failure(err: OSError, out_dir: Path, tmp: Path | None) -> UserError:
    """The user's view of a failed write into the temp folder `tmp` of `out_dir`: which output, and
    whether the disk is full. Called before the temp folder is removed, so the free space is the
    space that was left when the write failed."""
    where = Path(err.filename) if err.filename else (tmp or out_dir)
    shown = out_dir
    if tmp is not None and where.is_relative_to(tmp):
        shown = out_dir / where.relative_to(tmp)
    free = _free_bytes(where)
    if err.errno in FULL_ERRNOS or (err.errno == errno.EIO and free < NEARLY_FULL_BYTES):
        return UserError(
            f"no space left writing {shown} ({free / 1e6:.1f} MB free on its file system)",
            "free space on that disk, or choose another --out on a disk with room "
            "(nothing of this build was left behind)",
        )
    return UserError(
        f"cannot write {shown}: {err.strerror or err}",
        "check that disk and the folder's permissions, or choose another --out (nothing of this build was left behind)",
    )


def _is_write_error(err: OSError, out_dir: Path) -> bool:
    """A failure writing our output (not, say, fork() failing for lack of memory)."""
    if err.errno in FULL_ERRNOS:
        return True
    if not err.filename:
        return False
    where, parent = Path(err.filename), out_dir.parent
    return where.is_relative_to(parent) or parent.is_relative_to(where)


def _make_parents(out_dir: Path) -> list[Path]:
    """mkdir -p of out_dir's parent; returns the folders it created, outermost first. A folder
    that another build made meanwhile (two builds into data/a and data/b) is not ours to remove."""
    made = []
    for p in [p for p in reversed(out_dir.parents) if not p.exists()]:
        try:
            p.mkdir()
        except FileExistsError:
            if not p.is_dir():
                raise
            continue
        made.append(p)
    return made


def _publish(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists():
        if not overwrite:
            raise UserError(
                f"output {out_dir} appeared while this build ran (another build finished first)",
                "pass --overwrite to replace it, or choose another --out",
            )
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.rename(out_dir, old / "x")
        os.rename(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out_dir)


@contextmanager
def atomic_dir(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A temp folder next to `out_dir`, renamed to it when the block finishes without error.

    The temp folder is claimed (partials.claim) for as long as the block runs, and the folders that
    builds of the same output left behind when they were killed are removed first. A write that
    fails (disk full, ...) becomes a UserError; the temp folder and any parent folders made for it
    are removed."""
    out_dir = Path(out_dir)
    check_out_path(out_dir)
    if out_dir.exists() and not overwrite:
        raise UserError(f"output {out_dir} already exists", "pass --overwrite to replace it, or choose another --out")
    for note in partials.clear_stale(out_dir):
        print(f"note: {note}", file=sys.stderr)
    made: list[Path] = []
    tmp: Path | None = None
    claim: partials.Claim | None = None
    done = False
    try:
        made = _make_parents(out_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the output should not be
        claim = partials.claim(tmp)
        yield tmp
        claim.drop_record()  # the output must not contain it; the lock is held until after the rename
        _publish(tmp, out_dir, overwrite)
        done = True
    except OSError as e:
        if not _is_write_error(e, out_dir):
            raise
        raise write_failure(e, out_dir, tmp) from e
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if claim is not None:
            claim.release()  # after the removal: no other build may take a folder we still use
        if not done:
            for p in reversed(made):
                with suppress(OSError):
                    p.rmdir()
