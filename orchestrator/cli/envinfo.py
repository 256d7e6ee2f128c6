"""What is installed: `orchestrate --version` and `orchestrate doctor-env`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any


def caffe_dir() -> Path | None:
    """The cached Caffe build this venv uses (its src/python is on sys.path through a .pth)."""
    try:
        import caffe
    except ImportError:
        return None
    return Path(caffe.__file__).resolve().parents[3]


def build_info() -> dict[str, Any]:
    """build-info.json written by caffe_build/build_caffe.sh ({} when unknown)."""
    d = caffe_dir()
    p = d / "build-info.json" if d else None
    return json.loads(p.read_text()) if p and p.exists() else {}


def tool(name: str) -> Path | None:
    """A tool built with Caffe (caffe, convert_imageset, ...), or None."""
    d = caffe_dir()
    p = d / "src" / "build" / "tools" / name if d else None
    return p if p and p.exists() else None


def version_text() -> str:
    """Project version, Caffe commit, CPU/GPU build, BLAS and the pycaffe path."""
    try:
        version = metadata.version("segorch")
    except metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    lines = [f"orchestrate {version}"]
    try:
        import caffe
    except ImportError as e:
        return "\n".join(lines + [f"caffe: NOT importable ({e}); run make setup"])
    info = build_info()
    lines += [
        f"caffe commit: {info.get('commit', '?')} (BVLC; Debian source {info.get('debian_version', '?')})",
        f"caffe build: {'GPU (CUDA)' if info.get('gpu') else 'CPU only'}, BLAS {info.get('blas', '?')}",
        f"pycaffe: {Path(caffe.__file__).parent}",
        f"patches: {', '.join(info.get('patches', []))}",
    ]
    return "\n".join(lines)


def check_environment() -> list[tuple[str, bool, str]]:
    """(what, ok, how to fix) for each thing the tool needs."""
    out: list[tuple[str, bool, str]] = []
    try:
        import caffe

        ok, why = True, str(Path(caffe.__file__).parent)
    except Exception as e:  # any import failure is the finding
        ok, why = False, f"{e}"
    out.append(("pycaffe importable", ok, why if ok else f"{why}; run make setup"))
    if ok:
        import caffe

        out.append(
            (
                "Blob.asum_*/sumsq_* bindings",
                hasattr(caffe._caffe.Blob, "asum_data"),
                "the build lacks our patch 0003; delete the cache dir and run make setup",
            )
        )
        out.append(
            (
                "Python layers (WITH_PYTHON_LAYER)",
                "Python" in caffe.layer_type_list(),
                "rebuild Caffe with BUILD_python_layer=ON (make setup does)",
            )
        )
    # a build without OpenCV (the portable bundle) has no convert_imageset: the data stage replaces it
    tools = ("caffe", "convert_imageset") if build_info().get("opencv", True) else ("caffe",)
    for t in tools:
        p = tool(t)
        out.append((f"tool {t}", p is not None, "run make setup (it builds Caffe's tools)"))
    gpu = shutil.which("nvidia-smi") is not None and subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0
    gpu_build = bool(build_info().get("gpu"))
    out.append(
        (
            "GPU usable (optional)",
            gpu and gpu_build,
            "CPU mode works; for GPU: a CUDA GPU and CAFFE_GPU=1 make setup"
            if not gpu_build
            else "no working NVIDIA driver found (nvidia-smi)",
        )
    )
    out.append(tensorboard_check())
    out.append(("glog verbosity", True, f"GLOG_minloglevel={os.environ.get('GLOG_minloglevel', 'unset')}"))
    return out


def tensorboard_check(env: dict[str, str] | None = None) -> tuple[str, bool, str]:
    """`tensorboard --logdir` starts: its entry module imports (tensorboard 2.20 needs setuptools'
    pkg_resources there, which setuptools 82 removed), in a child so that a broken set cannot
    leave half-imported modules behind."""
    code = "import warnings; warnings.simplefilter('ignore'); import tensorboard.main"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if r.returncode == 0:
        return ("tensorboard starts", True, "tensorboard --logdir runs/")
    last = (r.stderr.strip().splitlines() or ["?"])[-1]
    return (
        "tensorboard starts",
        False,
        f"{last}; run make setup (requirements.lock pins a setuptools with pkg_resources)",
    )
