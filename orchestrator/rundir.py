"""The run directory: its paths (names in orchestrator.contract), append-only JSONL logs, atomic
summary and snapshots.

A snapshot is a folder `snapshots/iter_<N>/` holding `weights.caffemodel`, `state.solverstate`,
`hooks.json` and `manifest.json` (size and sha256 of the other three). It is assembled under
`iter_<N>.tmp/` and renamed when complete, so a crash mid-write never leaves a folder that
resume would take, and resume checks the manifest so a file damaged later is found too.

A run directory carries a marker file (`.segorch-run`) written when it is created: only a
folder with the marker is ever deleted (`--fresh`). One process owns it at a time: an OS lock
on `.lock` (`RunDir.acquire_lock`), which the worker child inherits.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from common.errors import UserError
from orchestrator.contract import (
    CAFFE_PREFIX,
    HOOKS,
    LOCK,
    MARKER,
    RESERVE,
    RUN_FILES,
    START_STATE,
    STATE,
    WEIGHTS,
    Status,
    caffe_snapshot_files,
    snapshot_iteration,
    snapshot_name,
    snapshot_relpath,
)
from orchestrator.jsonio import JsonlLog, read_json, read_jsonl, write_json_atomic
from orchestrator.snapcheck import CORRUPT, set_aside, verify_snapshot, write_manifest

# what a run writes at the top of its folder besides RUN_FILES (`--fresh` deletes these and nothing else)
_WRITTEN_PATTERNS = ("infogain_H_*.binaryproto", "*.tmp")  # class weights (run.class_weights); atomic writes


class _RunFile:
    """A RunDir attribute: the path of the run-dir file RUN_FILES[key] (an unknown key fails at import)."""

    def __init__(self, key: str) -> None:
        self.name = RUN_FILES[key]

    def __get__(self, run: RunDir, owner: type | None = None) -> Path:
        return run.root / self.name


class RunDir:
    """Paths and writers of one run directory."""

    config, solver, meta, findings = _RunFile("config"), _RunFile("solver"), _RunFile("meta"), _RunFile("findings")
    train_net, val_net, deploy_net = _RunFile("train_net"), _RunFile("val_net"), _RunFile("deploy_net")
    metrics, val, summary, log = _RunFile("metrics"), _RunFile("val"), _RunFile("summary"), _RunFile("log")
    report, curves, best, tb = _RunFile("report"), _RunFile("curves"), _RunFile("best"), _RunFile("tb")
    snapshots, partial = _RunFile("snapshots"), _RunFile("partial")

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.lock_fd: int | None = None

    @property
    def caffe_prefix(self) -> Path:
        """Caffe's snapshot_prefix: solver.snapshot() writes into the staging folder."""
        return self.partial / CAFFE_PREFIX

    def caffe_snapshot(self, iteration: int) -> tuple[Path, Path]:
        """(caffemodel, solverstate) that solver.snapshot() just wrote at `iteration`."""
        return caffe_snapshot_files(self.caffe_prefix, iteration)

    def snapshot_dir(self, iteration: int) -> Path:
        return self.snapshots / snapshot_name(iteration)

    def create(self) -> None:
        """Make the folder with its marker (the proof that `--fresh` may delete it later)."""
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.root / MARKER
        if not marker.exists():
            marker.write_text(
                json.dumps({"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "by": "orchestrate run"}) + "\n"
            )
        self.partial.mkdir(parents=True, exist_ok=True)

    @property
    def is_ours(self) -> bool:
        """True when `orchestrate run` created this folder (it holds the marker)."""
        return (self.root / MARKER).is_file()

    def acquire_lock(self) -> int:
        """Take the run directory's OS lock (non-blocking) and write our pid into it; UserError
        naming the holder's pid when another process has it. The lock lives as long as the
        returned descriptor (and its copies in a child); it is never unlocked explicitly."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a folder or an unwritable file where the lock belongs
            raise UserError(
                f"{self.root / LOCK}: cannot open the run's lock file ({e.strerror})",
                f"remove {self.root / LOCK} (a run makes it anew) or choose another --run-dir",
            ) from None
        try:
            _flock_soon(fd)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserError(
                f"{self.root} is in use by pid {holder} (a run or resume owns it)",
                f"wait for it to finish, stop it (kill -INT {holder}), or choose another --run-dir",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.lock_fd = fd
        return fd

    def foreign_files(self) -> list[Path]:
        """What in the folder a run does not write: a folder holding any is never emptied."""
        known = set(RUN_FILES.values()) | {MARKER, LOCK, RESERVE, START_STATE}
        out = []
        for p in sorted(self.root.iterdir()):
            if p.name in known or any(p.match(pat) and p.is_file() for pat in _WRITTEN_PATTERNS):
                if p.name == RUN_FILES["snapshots"] and p.is_dir():
                    out += [q for q in sorted(p.iterdir()) if not _snapshot_entry(q.name)]
                continue
            out.append(p)
        return out

    def clear(self) -> list[str]:
        """Delete what a run wrote, keeping the marker and the lock (a fresh start); returns the
        names removed. Refuses (UserError) when anything else is there, deleting nothing."""
        foreign = self.foreign_files()
        if foreign:
            raise foreign_error(self.root, foreign)
        removed = []
        for p in sorted(self.root.iterdir()):
            if p.name in (MARKER, LOCK):
                continue
            removed.append(p.name + ("/" if p.is_dir() else ""))
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        self.partial.mkdir(parents=True, exist_ok=True)
        return removed

    def reserve_space(self, size: int = 1 << 20) -> None:
        """Hold `size` bytes on the run's disk while the child trains, so that the final summary
        and report can still be written after the run has filled the disk."""
        try:
            with open(self.root / RESERVE, "wb") as f:
                f.write(bytes(size))
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            self.release_space()

    def release_space(self) -> None:
        (self.root / RESERVE).unlink(missing_ok=True)

    def remove_temp_files(self) -> None:
        """Leftovers of an interrupted write: the snapshot staging dirs and `*.tmp` files."""
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True, exist_ok=True)
        if self.snapshots.exists():
            for p in self.snapshots.glob("iter_*.tmp"):
                shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob("*.tmp"):
            p.unlink(missing_ok=True)

    # ---------------------------------------------------------------- logs
    def append(self, path: Path, record: dict[str, Any]) -> None:
        """Append one JSON record and flush it, so a killed run loses at most the line being written."""
        log = JsonlLog(path)
        try:
            log.write(record)
        finally:
            log.close()

    def truncate_after(self, path: Path, iteration: int) -> None:
        """Keep only records with iter <= iteration (resume continues after the restored snapshot)."""
        kept = [r for r in read_jsonl(path) if r.get("iter", -1) <= iteration]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, path)

    def summary_data(self) -> dict[str, Any]:
        """summary.json ({} when missing or damaged: the next write makes a whole one)."""
        data: dict[str, Any] = read_json(self.summary, {})
        return data

    def write_summary(self, **fields: Any) -> dict[str, Any]:
        """Merge fields into summary.json (atomically)."""
        data = self.summary_data()
        data.update(fields)
        try:
            data["status"] = Status(data.get("status", "")).value
        except ValueError:
            raise ValueError(f"bad status {data.get('status')!r}") from None
        write_json_atomic(self.summary, data)
        return data

    # ---------------------------------------------------------------- snapshots
    def snapshot_dirs(self) -> list[tuple[int, Path]]:
        """Snapshot folders (committed by one rename, so a missing file is damage, never a
        snapshot being written), oldest first; whether they are whole is verify_snapshot's call."""
        if not self.snapshots.exists():
            return []
        out = []
        for p in self.snapshots.iterdir():
            it = snapshot_iteration(p.name)
            if it is not None and p.is_dir():
                out.append((it, p))
        return sorted(out)

    def intact_snapshot(
        self, *, check_older: bool = False, rename: bool = True
    ) -> tuple[tuple[int, Path] | None, list[tuple[int, str]]]:
        """The newest whole snapshot, and (iteration, line) per damaged one (which file, how): the newer
        ones skipped and, with `check_older`, the older ones too. Damaged ones are renamed
        `iter_N.corrupt` (unless `rename` is false: another process owns the run)."""
        found: tuple[int, Path] | None = None
        damaged: list[tuple[int, str]] = []
        for it, p in reversed(self.snapshot_dirs()):
            if found is not None and not check_older:
                break
            problem = verify_snapshot(p)
            if problem is None:
                found = found or (it, p)
                continue
            damaged.append((it, self.set_aside(it, p, problem, rename)))
        return found, damaged

    def set_aside(self, iteration: int, p: Path, problem: str, rename: bool) -> str:
        """snapcheck.set_aside, and summary.json's best snapshot renamed with it: a reader of the
        summary finds the folder (iter_N.corrupt) and why, not a path that is gone."""
        line = set_aside(iteration, p, problem, rename)
        best = self.summary_data().get("best")
        if rename and isinstance(best, dict) and best.get("iteration") == iteration:  # no summary: no best
            where = snapshot_relpath(iteration) + CORRUPT
            self.write_summary(best={**best, "snapshot": where, "snapshot_damaged": problem})
        return line

    def trained_iterations(self) -> int:
        """How far the run trained by its own logs: the last metrics.jsonl record, else the newest
        snapshot (what summary.json cannot say after the child was killed)."""
        last = 0
        if self.metrics.exists():
            with open(self.metrics, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - (64 << 10)))
                for line in reversed(f.read().splitlines()):
                    try:
                        last = int(json.loads(line)["iter"])
                        break
                    except (ValueError, KeyError, TypeError):
                        continue
        snaps = self.snapshot_dirs()
        return max(last, snaps[-1][0] if snaps else 0)

    def lock_is_held(self) -> bool:
        """True while a process owns the run (its `.lock` is locked): a live `running` status,
        where a free lock means the status is stale (the process was killed)."""
        if self.lock_fd is not None:
            return True
        try:
            fd = os.open(self.root / LOCK, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def commit_snapshot(
        self,
        iteration: int,
        caffemodel: Path,
        solverstate: Path,
        hooks_state: dict[str, Any],
        config: dict[str, Any] | None = None,
    ) -> Path:
        """Move the files Caffe wrote into iter_<N>/ with the hooks' state, the config they were
        trained with and a manifest, and make the folder visible in one rename."""
        from caffe.proto import caffe_pb2

        final = self.snapshot_dir(iteration)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        os.replace(caffemodel, tmp / WEIGHTS)
        state = caffe_pb2.SolverState()
        state.ParseFromString(solverstate.read_bytes())
        # `caffe train --snapshot` loads the weights from learned_net: the final absolute path
        # (orchestrate resume ignores it and relinks it when the run dir has moved)
        state.learned_net = str(final / WEIGHTS)
        (tmp / STATE).write_bytes(state.SerializeToString())
        solverstate.unlink()
        write_json_atomic(tmp / HOOKS, {"iter": iteration, "hooks": hooks_state, "config": config})
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        write_manifest(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return final

    def prune_snapshots(self, keep_last: int, keep: set[int]) -> None:
        """Delete all but the newest `keep_last` snapshots and those in `keep` (the best)."""
        snaps = self.snapshot_dirs()
        recent = {it for it, _ in snaps[-keep_last:]} if keep_last > 0 else set()
        for it, p in snaps:
            if it not in recent and it not in keep:
                shutil.rmtree(p, ignore_errors=True)


def _flock_soon(fd: int, tries: int = 5) -> None:
    """flock(LOCK_EX) without blocking, a few tries over ~0.2 s: `orchestrate runs` holds a shared
    lock for an instant to tell a live run from a stale one. BlockingIOError when it stays held."""
    for i in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if i == tries - 1:
                raise
            time.sleep(0.05)


def _snapshot_entry(name: str) -> bool:
    """A name the snapshots/ folder holds: iter_N, its .tmp staging, its .corrupt quarantine, .partial."""
    base = name.removesuffix(".tmp").removesuffix(CORRUPT)
    return name == Path(RUN_FILES["partial"]).name or snapshot_iteration(base) is not None


def foreign_error(root: Path, foreign: list[Path]) -> UserError:
    """The refusal to empty a run folder that holds files a run does not write."""
    names = ", ".join(str(p.relative_to(root)) for p in foreign[:5]) + (" ..." if len(foreign) > 5 else "")
    return UserError(
        f"{root} holds {len(foreign)} file(s) a run does not write ({names}): refusing to delete or reuse it",
        "move those files out of the folder, or choose another --run-dir",
    )


def disk_nearly_full(path: Path, margin: int = 1 << 20) -> bool:
    """True when the file system holding `path` has less than `margin` bytes free."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < margin


def require_run_dir(path: str | os.PathLike[str]) -> RunDir:
    """A RunDir that exists and has a config, or a UserError saying what is wrong."""
    rd = RunDir(path)
    if not rd.config.exists():
        raise UserError(
            f"{rd.root}: not a run directory (no config.yaml)",
            "give the directory that `orchestrate run` created, e.g. runs/demo",
        )
    return rd
