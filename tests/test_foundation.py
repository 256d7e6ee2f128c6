"""The Caffe build: pycaffe imports, our Blob statistics bindings agree with numpy, set-up has
nothing left to do (checked without changing anything)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.caffe

NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "target" type: "Input" top: "target" input_param { shape { dim: 2 dim: 4 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 }
                      bias_filler { type: "constant" value: -0.3 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "loss" type: "EuclideanLoss" bottom: "conv" bottom: "target" top: "loss" }
"""


@pytest.fixture()
def net(tmp_path):
    import caffe

    caffe.set_mode_cpu()
    p = tmp_path / "net.prototxt"
    p.write_text(NET)
    n = caffe.Net(str(p), caffe.TRAIN)
    rng = np.random.default_rng(0)
    n.blobs["data"].data[...] = rng.normal(size=n.blobs["data"].data.shape)
    n.blobs["target"].data[...] = rng.normal(size=n.blobs["target"].data.shape)
    n.forward()
    n.backward()
    return n


def test_blob_statistics_bindings_match_numpy(net):
    checked = 0
    for name, b in list(net.blobs.items()) + [(f"conv/{i}", p) for i, p in enumerate(net.params["conv"])]:
        d, g = b.data.astype(np.float64), b.diff.astype(np.float64)
        assert b.asum_data() == pytest.approx(np.abs(d).sum(), rel=1e-5), name
        assert b.asum_diff() == pytest.approx(np.abs(g).sum(), rel=1e-5), name
        assert b.sumsq_data() == pytest.approx((d * d).sum(), rel=1e-5), name
        assert b.sumsq_diff() == pytest.approx((g * g).sum(), rel=1e-5), name
        checked += 1
    assert checked == 6
    # the ReLU output really has zeros and the gradients are non-trivial
    assert 0 < net.blobs["conv"].asum_data() and net.params["conv"][0].asum_diff() > 0


def test_version_names_the_caffe_commit():
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--version"], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout
    assert "99bd997" in out and "pycaffe:" in out
    assert ("GPU (CUDA)" if os.environ.get("CAFFE_GPU") == "1" else "CPU only") in out


def test_build_variant_matches_caffe_gpu():
    """CAFFE_GPU=1 make test runs against the CUDA build: libcaffe links cuBLAS/cuRAND/cudart
    and still trains in CPU mode on a machine without a GPU (the rest of the suite does that)."""
    from orchestrator.cli.envinfo import build_info, caffe_dir

    want_gpu = os.environ.get("CAFFE_GPU") == "1"
    assert build_info()["gpu"] is want_gpu
    d = caffe_dir()
    assert d is not None
    libs = subprocess.run(
        ["ldd", str(d / "src" / "build" / "lib" / "libcaffe.so.1.0.0")], capture_output=True, text=True, check=True
    ).stdout
    for lib in ("libcublas.so", "libcurand.so", "libcudart.so"):
        assert (lib in libs) is want_gpu, (lib, libs)
    assert "not found" not in libs, libs


def test_python_layers_and_tools_are_built():
    import caffe

    from orchestrator.cli.envinfo import tool

    assert "Python" in caffe.layer_type_list()
    assert tool("caffe") is not None and tool("convert_imageset") is not None


def dry_setup(root: Path) -> str:
    """`setup.sh --dry-run` in `root`: it checks every step and only says what it would do."""
    r = subprocess.run(
        ["bash", str(root / "caffe_build" / "setup.sh"), "--dry-run"], capture_output=True, text=True, cwd=root
    )
    assert r.returncode == 0, r.stderr
    return r.stdout + r.stderr


def venv_files(venv: Path) -> dict[str, str | None]:
    """The files set-up writes into a venv, with their contents (None: absent)."""
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    files = [site / "bvlc_caffe.pth", venv / "caffe-dir", venv / ".deps-stamp"]
    return {str(f): f.read_text() if f.exists() else None for f in files}


def test_setup_has_nothing_left_to_do():
    """After `make setup` a second set-up would change nothing: apt packages there, the venv's
    stamp matches requirements.lock and pyproject.toml, Caffe's build is cached, the .pth is
    right. Checked with --dry-run, so the test never installs anything or rewrites the venv."""
    before = venv_files(REPO / ".venv")
    out = dry_setup(REPO)
    assert "cached build" in out and "compiling" not in out and "dry run: nothing changed" in out
    assert [line for line in out.splitlines() if "would" in line and "interrupted build" not in line] == []
    assert venv_files(REPO / ".venv") == before


def test_dry_setup_reports_and_changes_nothing(tmp_path):
    """A copy of the set-up files without a venv, then with a bare one of its own (it reads the
    project venv's packages through a .pth): the dry run says what it would install and write,
    and nothing is written, there or in the project venv."""
    for name in ("caffe_build", "pyproject.toml", "requirements.lock"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(REPO / name, tmp_path / name)
    out = dry_setup(tmp_path)
    assert "would create .venv" in out and not (tmp_path / ".venv").exists()
    venv = tmp_path / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    (site / "project-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    before, ours = venv_files(REPO / ".venv"), venv_files(venv)
    out = dry_setup(tmp_path)
    assert "would pip install -r requirements.lock" in out and "cached build" in out
    assert f"would write {site / 'bvlc_caffe.pth'}" in out and "would write .venv/caffe-dir" in out
    assert venv_files(REPO / ".venv") == before and venv_files(venv) == ours == dict.fromkeys(ours)
