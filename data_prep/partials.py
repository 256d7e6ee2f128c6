"""Hidden `.<out>.partial-*` build folders: claimed by their build while it runs, removed by a later
build of the same output once their builder is gone (SIGKILL, power loss, a closed terminal).

A build writes its pid into `OWNER_FILE` inside its folder and holds a POSIX lock on that file
until it ends. The kernel drops the lock when the process dies however it dies, and forked
decoding workers do not inherit it, so "the lock can be taken" means "the builder is gone"; the
pid is only for messages (pids are reused). Folders without the file (older versions, or a kill
between mkdtemp and the claim) are removed only when nothing in them changed for an hour.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from common.errors import UserError

OWNER_FILE = ".owner"
LEGACY_AGE_S = 3600.0
_OURS: set[Path] = set()  # claimed in this process: POSIX locks never conflict within one process


class Claim:
    """This process's hold on its temp folder."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder, self.fd = folder, fd

    def drop_record(self) -> None:
        """Delete the owner file (before the folder becomes the output); the lock stays held."""
        (self.folder / OWNER_FILE).unlink(missing_ok=True)

    def release(self) -> None:
        """Unlock; call once the folder is renamed or removed."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            _OURS.discard(self.folder)


def claim(folder: Path) -> Claim:
    """Lock `folder` for this process and record who we are in it."""
    folder = Path(folder).resolve()
    fd = os.open(folder / OWNER_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else can hold it
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    os.write(fd, json.dumps(info).encode())
    _OURS.add(folder)
    return Claim(folder, fd)


def _owner(folder: Path) -> tuple[str, dict[str, Any]]:
    """('live' | 'dead' | 'unknown', the owner record) of a partial folder."""
    try:
        fd = os.open(folder / OWNER_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return "unknown", {}
    try:
        try:
            info = json.loads(os.read(fd, 4096) or b"{}")
        except ValueError:
            info = {}
        if folder.resolve() in _OURS:
            return "live", info
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # conflicts with the builder's exclusive lock
        except OSError:
            return "live", info
        return "dead", info
    finally:
        os.close(fd)  # also drops the lock we may just have taken


def _newest_change(folder: Path) -> float:
    newest = folder.lstat().st_mtime
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
            except OSError:
                pass
    return newest


def _size(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _leftovers(out_dir: Path) -> list[tuple[Path, str, str]]:
    """(folder, 'live' | 'dead' | 'unknown', who) of each partial or swap folder of `out_dir`."""
    if not out_dir.parent.is_dir():
        return []
    name = glob.escape(out_dir.name)
    found = sorted(out_dir.parent.glob(f".{name}.partial-*")) + sorted(out_dir.parent.glob(f".{name}.old-*"))
    out = []
    for folder in found:
        if folder.is_symlink() or not folder.is_dir():
            continue
        state, info = _owner(folder)
        who = f"pid {info['pid']}" if "pid" in info else "an earlier build"
        if "host" in info and info["host"] != socket.gethostname():
            who += f" on {info['host']}"
        out.append((folder, state, who))
    return out


def live_builder(out_dir: Path) -> str | None:
    """Who is building `out_dir` right now (e.g. 'pid 7602'), or None: a second run started
    beside the first waits for its data instead of failing."""
    return next((who for _, state, who in _leftovers(Path(out_dir)) if state == "live"), None)


def clear_stale(out_dir: Path) -> list[str]:
    """Remove what killed builds of `out_dir` left beside it (partial folders, an interrupted
    --overwrite swap); return a note per folder removed. A build of it that is still running is a
    UserError: two builds of one output would overwrite each other."""
    notes = []
    for folder, state, who in _leftovers(Path(out_dir)):
        if state == "live":
            raise UserError(
                f"{out_dir} is being built by {who} right now (its temp folder: {folder})",
                "wait for that build to finish, or stop it; a later build removes what it leaves",
            )
        if state == "unknown" and time.time() - _newest_change(folder) < LEGACY_AGE_S:
            continue  # maybe a build that is starting, or one of an older version still running
        size = _size(folder)
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            notes.append(f"removed {folder.name}: left by {who} that did not finish ({size / 1e6:.1f} MB)")
    return notes
