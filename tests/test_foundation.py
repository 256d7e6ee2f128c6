"""The Caffe build: pycaffe imports, our Blob statistics bindings agree with numpy, set-up is cached."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

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
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--version"], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    assert "99bd997" in out and "pycaffe:" in out
    assert ("GPU (CUDA)" if os.environ.get("CAFFE_GPU") == "1" else "CPU only") in out


def test_build_variant_matches_caffe_gpu():
    """CAFFE_GPU=1 make test runs against the CUDA build: libcaffe links cuBLAS/cuRAND/cudart
    and still trains in CPU mode on a machine without a GPU (the rest of the suite does that)."""
    from orchestrator.envinfo import build_info, caffe_dir
    want_gpu = os.environ.get("CAFFE_GPU") == "1"
    assert build_info()["gpu"] is want_gpu
    d = caffe_dir()
    assert d is not None
    libs = subprocess.run(["ldd", str(d / "src" / "build" / "lib" / "libcaffe.so.1.0.0")],
                          capture_output=True, text=True, check=True).stdout
    for lib in ("libcublas.so", "libcurand.so", "libcudart.so"):
        assert (lib in libs) is want_gpu, (lib, libs)
    assert "not found" not in libs, libs


def test_python_layers_and_tools_are_built():
    import caffe
    from orchestrator.envinfo import tool
    assert "Python" in caffe.layer_type_list()
    assert tool("caffe") is not None and tool("convert_imageset") is not None


def test_second_setup_uses_the_cache():
    r = subprocess.run(["bash", "caffe_build/setup.sh"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "cached build" in r.stderr + r.stdout
    assert "compiling" not in r.stderr + r.stdout
