"""Shared-library bookkeeping of the portable runtime: which libraries an ELF file loads,
which of them may come from the target machine, and $ORIGIN-relative RUNPATHs.

Why a module of its own: make_bundle.py gathers and relinks with it, and check_bundle.py
proves with the same rules, on the unpacked copy, that nothing else is loaded from outside.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

# glibc's own libraries (and the kernel's vDSO): every glibc >= Debian 12's has them.
GLIBC = re.compile(
    r"^(linux-vdso\.so\.1|ld-linux-x86-64\.so\.2|"
    r"lib(c|m|dl|pthread|rt|util|resolv|anl|mvec|nsl|BrokenLocale|thread_db|nss_\w+)\.so\.\d+)$"
)
# Found on the target, never carried: the NVIDIA driver (libcuda, loaded by libcudart) and
# cuBLAS/cuRAND (hundreds of MB; bin/env.sh finds them, e.g. in a Python env's nvidia wheels).
CUDA_TARGET = frozenset({"libcuda.so.1", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10"})

_LDD_LINE = re.compile(r"^\s*(\S+)\s+=>\s+(not found|(\S+)\s+\(0x[0-9a-f]+\))\s*$")


class BundleError(RuntimeError):
    """A bundle that cannot be made or does not pass its check (the message says which file)."""


def is_elf(path: Path) -> bool:
    """True for a regular file that starts with ELF's magic bytes."""
    if path.is_symlink() or not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(4) == b"\x7fELF"


def elf_files(root: Path) -> list[Path]:
    """Every ELF file under root, sorted (symlinks are not followed)."""
    return sorted(p for p in root.rglob("*") if is_elf(p))


def needed(path: Path) -> list[str]:
    """DT_NEEDED sonames of one ELF file."""
    out = subprocess.run(["patchelf", "--print-needed", str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise BundleError(f"patchelf cannot read {path}: {out.stderr.strip()}")
    return out.stdout.split()


def runpath(path: Path) -> str:
    """DT_RUNPATH (or DT_RPATH) of one ELF file, '' when it has none."""
    out = subprocess.run(["patchelf", "--print-rpath", str(path)], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def ldd(path: Path, env: dict[str, str] | None = None) -> dict[str, str | None]:
    """soname -> the file the dynamic loader picks (None: not found), for the whole tree of
    dependencies of `path`, as `ldd` reports it under `env` (default: an empty environment)."""
    out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, env=env if env is not None else {})
    if out.returncode != 0 and "not a dynamic executable" in (out.stdout + out.stderr):
        return {}
    deps: dict[str, str | None] = {}
    for line in out.stdout.splitlines():
        m = _LDD_LINE.match(line)
        if m:
            deps[m.group(1)] = None if m.group(2) == "not found" else m.group(3)
    return deps


def allowed_outside(soname: str, with_cuda: bool) -> bool:
    """May this library come from the target machine instead of the bundle?"""
    return bool(GLIBC.match(soname)) or (with_cuda and soname in CUDA_TARGET)


def set_runpath(path: Path, dirs: list[Path]) -> None:
    """RUNPATH of `path` := the given folders, each as $ORIGIN/<relative path>."""
    rel = []
    for d in dirs:
        r = os.path.relpath(d, path.parent)
        entry = "$ORIGIN" if r == "." else f"$ORIGIN/{r}"
        if entry not in rel:
            rel.append(entry)
    cmd = ["patchelf", "--set-rpath", ":".join(rel), str(path)] if rel else ["patchelf", "--remove-rpath", str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise BundleError(f"patchelf cannot set the RUNPATH of {path}: {out.stderr.strip()}")


def outside_libraries(root: Path, with_cuda: bool, env: dict[str, str] | None = None) -> list[str]:
    """'FILE: soname => where' for every library an ELF file under root would load from
    outside root, other than glibc's (and, with_cuda, the driver's and cuBLAS/cuRAND)."""
    root = root.resolve()
    bad = []
    for f in elf_files(root):
        for name, where in ldd(f, env).items():
            if allowed_outside(name, with_cuda):
                continue
            if where is None or not Path(where).resolve().is_relative_to(root):
                bad.append(f"{f.relative_to(root)}: {name} => {where or 'not found'}")
    return bad
