"""Is a snapshot whole? Before resume or predict reads one, every file must be there and
unchanged since it was written: the manifest's sizes and checksums say so. A snapshot without
a manifest (written before manifests, or its manifest deleted) is checked by parsing its files
with protobuf (never Caffe: its parser aborts the process): the weights as a NetParameter whose
blobs hold as many numbers as their shapes say, the state as a SolverState at the folder's
iteration whose history matches the weights' parameters, hooks.json as the hooks' JSON.

A damaged snapshot is renamed `iter_N.corrupt` (quarantine): it stays for inspection, and
neither resume, predict nor pruning counts it again. Nothing here ever rewrites a damaged file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

from orchestrator.contract import HOOKS, MANIFEST, SNAP_FILES, STATE, WEIGHTS, snapshot_iteration, snapshot_relpath
from orchestrator.jsonio import write_json_atomic

CORRUPT = ".corrupt"  # suffix of a quarantined snapshot folder


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifest_problem(p: Path) -> str | None:
    """Sizes and checksums against manifest.json (which must itself be readable)."""
    try:
        entries = json.loads((p / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        entries = None
    if not isinstance(entries, dict) or not all(isinstance(entries.get(n), dict) for n in SNAP_FILES):
        return f"{MANIFEST} is damaged (not the JSON written with the snapshot)"
    for name in SNAP_FILES:
        want, f = entries[name], p / name
        size = f.stat().st_size
        if size != want.get("size"):
            return f"{name} has {size} bytes, {want.get('size')} when written (truncated?)"
        if sha256_file(f) != want.get("sha256"):
            return f"{name} does not match its checksum (damaged)"
    return None


def _dims(blob: Any) -> tuple[int, ...]:
    """A BlobProto's shape (the legacy 4-D fields when it has no shape)."""
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    return (blob.num, blob.channels, blob.height, blob.width)


def _count(blob: Any) -> int:
    """Numbers the blob's shape calls for."""
    return math.prod(_dims(blob))


def _parse(message: Any, path: Path) -> str | None:
    from google.protobuf.message import DecodeError

    try:
        message.ParseFromString(path.read_bytes())
    except (DecodeError, RuntimeError, ValueError) as e:
        return f"{path.name} is not a whole {type(message).__name__} ({e}: truncated or damaged)"
    return None


def _learnable(net: Any) -> list[tuple[str, int, tuple[int, ...]]] | str:
    """(layer, blob index, shape) of the net's learnable parameters in Caffe's order (a shared
    parameter once), or what is wrong with a blob (fewer numbers than its shape: a cut file)."""
    out, seen = [], set()
    for layer in net.layer:
        for j, blob in enumerate(layer.blobs):
            held = max(len(blob.data), len(blob.double_data))
            if held != _count(blob):
                return f"{WEIGHTS}: layer {layer.name!r} blob {j} holds {held} numbers, its shape {_count(blob)}"
            name = layer.param[j].name if j < len(layer.param) else ""
            if name and name in seen:
                continue
            seen.add(name)
            out.append((layer.name, j, _dims(blob)))
    return out


def _history_problem(state: Any, learnable: list[tuple[str, int, tuple[int, ...]]], solver_type: Any) -> str | None:
    """The state's history must hold k whole blobs per learnable parameter, shaped like them
    (statecheck's comparison, as `run --from-snapshot` makes it)."""
    from orchestrator.run.statecheck import PER_BLOB, mismatch

    for i, blob in enumerate(state.history):
        if max(len(blob.data), len(blob.double_data)) != _count(blob):
            return f"{STATE}: history blob {i} is cut (fewer numbers than its shape)"
    history = [_dims(b) for b in state.history]
    if solver_type not in PER_BLOB:  # a snapshot without its config: whichever type fits the count
        n = len(learnable)
        solver_type = next((t for t, k in PER_BLOB.items() if len(history) == n * k), "SGD")
    why = mismatch(history, learnable, solver_type)
    return f"{STATE} and {WEIGHTS} do not fit each other ({why})" if why else None


def _parse_problem(p: Path, iteration: int | None) -> str | None:
    """A manifest-less snapshot: parse the files (protobuf only) and check they agree."""
    from caffe.proto import caffe_pb2

    net, state = caffe_pb2.NetParameter(), caffe_pb2.SolverState()
    problem = _parse(net, p / WEIGHTS) or _parse(state, p / STATE)
    if problem:
        return problem
    if not net.layer:
        return f"{WEIGHTS} holds no layers"
    learnable = _learnable(net)
    if isinstance(learnable, str):
        return learnable
    if iteration is not None and state.iter != iteration:
        return f"{STATE} is at iteration {state.iter}, its folder says {iteration} (damaged)"
    try:
        config = json.loads((p / HOOKS).read_text()).get("config") or {}
        solver_type = (config.get("solver") or {}).get("type")
    except (AttributeError, ValueError, OSError):
        solver_type = None  # hooks.json's own check names it
    return _history_problem(state, learnable, solver_type)


def _hooks_problem(p: Path, iteration: int | None) -> str | None:
    try:
        saved = json.loads((p / HOOKS).read_text())
        ok = isinstance(saved, dict) and isinstance(saved["hooks"], dict)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        ok = False
    if not ok:
        return f"{HOOKS} is not readable JSON (damaged)"
    if iteration is not None and saved.get("iter", iteration) != iteration:
        return f"{HOOKS} is for iteration {saved.get('iter')}, its folder says {iteration} (damaged)"
    return None


def verify_snapshot(p: Path) -> str | None:
    """None when the snapshot at `p` is whole, else which file is damaged and how: a missing or
    empty file, sizes and checksums against the manifest, or (no manifest) the parse checks.
    A live run may prune the folder while we read it: that is said, never a FileNotFoundError."""
    try:
        return _snapshot_problem(p)
    except FileNotFoundError as e:
        gone = Path(e.filename or p).name
        return f"{gone} vanished while it was read (the run that owns it pruned or replaced the snapshot)"


def _snapshot_problem(p: Path) -> str | None:
    for name in SNAP_FILES:
        f = p / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size == 0:
            return f"{name} is empty (0 bytes)"
    iteration = snapshot_iteration(p.name)
    if (p / MANIFEST).exists():
        problem = _manifest_problem(p)
    else:
        problem = _parse_problem(p, iteration)
    return problem or _hooks_problem(p, iteration)


def quarantine(p: Path) -> Path:
    """Rename a damaged snapshot folder to `<name>.corrupt` (replacing an older quarantine)."""
    bad = p.with_name(p.name + CORRUPT)
    shutil.rmtree(bad, ignore_errors=True)
    os.replace(p, bad)
    return bad


def set_aside(iteration: int, p: Path, problem: str, rename: bool) -> str:
    """Quarantine the damaged snapshot `p` (when `rename`) and return the line that says so."""
    where = snapshot_relpath(iteration)
    if rename:
        quarantine(p)
        where += f" (renamed {where}{CORRUPT})"
    return f"{where}: {problem}"


def write_manifest(p: Path) -> None:
    """manifest.json: size and sha256 of a snapshot's files, checked by resume."""
    write_json_atomic(
        p / MANIFEST, {f: {"size": (p / f).stat().st_size, "sha256": sha256_file(p / f)} for f in SNAP_FILES}
    )


def relink_snapshot(p: Path) -> bool:
    """Point the solverstate's learned_net at this folder's weights again (after a move or
    copy), so Caffe's own `caffe train --snapshot` finds them; True when it changed. Only a
    snapshot that verify_snapshot passes is touched, and only the state's manifest entry is
    renewed: a damaged file is never given a manifest that would vouch for it."""
    from caffe.proto import caffe_pb2

    if verify_snapshot(p) is not None:
        return False
    state_file, want = p / STATE, str(p.resolve() / WEIGHTS)
    state = caffe_pb2.SolverState()
    state.ParseFromString(state_file.read_bytes())
    if state.learned_net == want:
        return False
    state.learned_net = want
    tmp = state_file.with_name(state_file.name + ".tmp")
    tmp.write_bytes(state.SerializeToString())
    os.replace(tmp, state_file)
    if (p / MANIFEST).exists():
        entries = json.loads((p / MANIFEST).read_text())
        entries[STATE] = {"size": state_file.stat().st_size, "sha256": sha256_file(state_file)}
        write_json_atomic(p / MANIFEST, entries)
    else:
        write_manifest(p)  # a manifest-less snapshot that passed the parse checks
    return True
