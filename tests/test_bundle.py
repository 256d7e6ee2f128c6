"""The portable runtime (make gpu-bundle; README, "GPU runtime bundle") and the GPU check's dry
run, proven on the CPU variant: the same packaging code around a CPU build of Caffe.

The bundle is built when missing or older than what it packages (cold: the bundle-flavour
Caffe build, about 5 minutes on 2 cores, plus a venv and the packaging, about a minute; warm:
nothing). The check unpacks it into a fresh folder and runs it under `env -i`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO

TARBALL = REPO / "build" / "segorch-cpu-bundle.tar.gz"
PACKAGED = (
    "common",
    "data_prep",
    "nets",
    "orchestrator",
    "bench",
    "experiments",
    "caffe_build",
    "pyproject.toml",
    "requirements.lock",
)
sys.path.insert(0, str(REPO / "caffe_build" / "bundle"))
from elfdeps import outside_libraries  # noqa: E402
from make_bundle import project_files  # noqa: E402

pytestmark = [pytest.mark.caffe, pytest.mark.bundle, pytest.mark.slow]


def newest_source() -> float:
    """mtime of the newest file the bundle is made from (tracked or new, not ignored)."""
    return max((REPO / f).stat().st_mtime for f in project_files(REPO, PACKAGED))


@pytest.fixture(scope="module")
def cpu_bundle() -> Path:
    """build/segorch-cpu-bundle.tar.gz, (re)built when missing or stale."""
    if not TARBALL.exists() or TARBALL.stat().st_mtime < newest_source():
        r = subprocess.run(
            ["bash", str(REPO / "caffe_build" / "bundle" / "build_bundle.sh"), "cpu"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        assert "bundle: " in r.stdout and "MiB" in r.stdout  # make gpu-bundle prints the size
    return TARBALL


def test_cpu_bundle_runs_unpacked_with_nothing_else(cpu_bundle):
    """The acceptance check: --version and 50 demo iterations under env -i, then ldd and the
    libraries a process really maps show nothing from outside but glibc's."""
    r = subprocess.run(
        [sys.executable, str(REPO / "caffe_build" / "bundle" / "check_bundle.py"), str(cpu_bundle)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    for line in (
        "PASS orchestrate --version",
        "PASS demo, 50 iterations in CPU mode",
        "PASS ldd: every ELF file loads only the bundle's libraries and glibc's",
        "PASS mapped libraries (/proc/self/maps) outside the bundle",
        "PASS sys.path and sys.executable inside the bundle",
    ):
        assert line in r.stdout, r.stdout[-4000:]
    assert "FAIL" not in r.stdout


def test_cpu_bundle_layout_and_size(cpu_bundle):
    """What it carries and what it leaves out; within the size that reaches a GPU machine."""
    assert cpu_bundle.stat().st_size < 40 * 2**20
    with tarfile.open(cpu_bundle) as tar:
        names = tar.getnames()
        info = json.load(tar.extractfile("segorch-cpu-bundle/BUNDLE.json"))
    top = "segorch-cpu-bundle/"
    site = top + "python/lib/python3.11/site-packages/"
    for needed in (
        "bin/orchestrate",
        "bin/python",
        "bin/caffe",
        "bin/env.sh",
        "caffe/build-info.json",
        "caffe/src/python/caffe/_caffe.so",
        "caffe/src/build/tools/caffe",
        "lib/libcaffe.so.1.0.0",
        "orchestrator/cli/main.py",
        "orchestrator/train/worker.py",
        "experiments/demo.yaml",
        "data/synth/lmdb/train/images/data.mdb",
        "data/fcn500/train/stats.json",
        "python/lib/python3.11/os.py",
    ):
        assert top + needed in names, needed
    for left_out in ("cv2", "scipy", "skimage", "fontTools", "numpy/tests", "numpy/f2py"):
        assert not any(n.startswith(site + left_out) for n in names), left_out
    assert not any("/test/" in n and "python3.11/test/" in n for n in names)
    assert info["variant"] == "cpu" and info["caffe"]["flavor"] == "bundle" and info["caffe"]["opencv"] is False
    assert info["caffe"]["gpu"] is False and "numpy" in info["caffe"]["blas"]


def test_ldd_check_finds_a_library_from_outside(cpu_bundle, tmp_path):
    """The check can fail: the bundle's interpreter, taken out of the bundle, no longer finds its
    own libpython (RUNPATH $ORIGIN/../../lib); a system libstdc++ loads the system's libgcc_s."""
    with tarfile.open(cpu_bundle) as tar:
        tar.extract("segorch-cpu-bundle/python/bin/python3.11", tmp_path, filter="data")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.move(tmp_path / "segorch-cpu-bundle/python/bin/python3.11", alone / "python3.11")
    bad = outside_libraries(alone, with_cuda=False)
    assert any(b.startswith("python3.11: libpython3.11.so.1.0 => ") for b in bad), bad  # not found, or the system's
    system = tmp_path / "system"
    system.mkdir()
    shutil.copy2(Path("/usr/lib/x86_64-linux-gnu/libstdc++.so.6").resolve(), system / "libstdc++.so.6")
    bad = outside_libraries(system, with_cuda=False)
    assert any("libgcc_s.so.1 => /" in b for b in bad), bad


def test_numerics_comparison_flags_a_gradient_difference():
    """gpu_numerics' verdict is not vacuous: equal arrays pass, a 1 % gradient error fails, and
    a pass needs some non-zero parameter gradient."""
    from bench.gpu_numerics import TOL_DIFF, compare

    rng = np.random.default_rng(0)
    a = {
        "blob loss data": np.float32(1.0),
        "blob x data": rng.standard_normal(100).astype(np.float32),
        "param w/0 data": rng.standard_normal(10).astype(np.float32),
        "param w/0 diff": rng.standard_normal(10).astype(np.float32),
    }
    assert compare(a, {k: v.copy() for k, v in a.items()})["pass"]
    b = {k: v.copy() for k, v in a.items()}
    b["param w/0 diff"] = b["param w/0 diff"] * 1.01
    res = compare(a, b)
    assert not res["pass"] and res["where_diff"] == "param w/0 diff" and res["max_rel_err_diff"] > TOL_DIFF
    zero = {**a, "param w/0 diff": np.zeros(10, np.float32)}
    assert not compare(zero, {k: v.copy() for k, v in zero.items()})["pass"]


def test_gpu_check_quick_dry_run(cpu_bundle, tmp_path):
    """bench/gpu_check.sh end to end on the CPU (--quick: every step that needs no GPU, small):
    the bundle unpacks, numerics CPU vs CPU agree exactly, the demo trains, a killed run
    resumes, the overhead step measures; at most 8 files land in $OUT."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "GPU_CHECK_BUNDLE": str(cpu_bundle)}
    r = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--quick"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert r.returncode == 0, r.stdout[-4000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["artifacts.tar.gz", "gpu_check.log", "results.json", "summary.md"], files
    res = json.loads((out / "results.json").read_text())
    status = {s["step"]: s["status"] for s in res["steps"]}
    assert status == {
        "bundle": "PASS",
        "nvidia-smi": "SKIP",
        "device-query": "SKIP",
        "numerics": "PASS",
        "demo": "PASS",
        "resume": "PASS",
        "overhead": "PASS",
        "stats": "SKIP",
    }, status
    assert res["numerics"]["nets"][0]["max_rel_err_diff"] == 0.0
    assert res["demo"]["status"] == "completed"
    assert res["resume"]["killed_while_running"] and res["resume"]["resumed_from"] in (10, 20)
    assert res["resume"]["iterations"] == 30 and res["resume"]["iterations_logged_once"]
    # a quick run's handful of iterations gives no meaningful ratio, only the numbers' presence
    default = res["overhead"]["configs"]["default"]
    assert len(default["rounds"]) == 1 and {"ratio", "caffe_images_per_s", "ours_flops_per_s"} <= set(default)
    assert res["overhead"]["flops_step"] > res["overhead"]["flops_forward"] > 0
    assert "numerics compact-bn" in (out / "summary.md").read_text()
