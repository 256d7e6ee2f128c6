"""make gpu-bundle-check: the portable runtime works where it is unpacked, with nothing else.

Unpacks the tarball into a fresh folder and, under `env -i` (no venv, no PYTHONPATH, no
system Python packages), runs `orchestrate --version` and 50 iterations of the demo in CPU
mode; then shows that no file in it loads a library from outside but glibc's (and, for the
GPU variant, the NVIDIA driver's and cuBLAS/cuRAND): `ldd` on every ELF file, and the
libraries a Python process really has mapped after importing everything a run imports.
Exit 0 when every check passes; each line says PASS or FAIL and why.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from elfdeps import allowed_outside, outside_libraries

# what a run imports, in one process: the libraries it maps are the ones that matter
IMPORTS = (
    "import caffe, numpy, yaml, lmdb, google.protobuf, matplotlib.pyplot, PIL.Image; "
    "import tensorboardX, orchestrator.cli, orchestrator.train.worker, nets.probe, data_prep.layers, data_prep.datum"
)
MAPS = f"""{IMPORTS}
import json, sys
libs = sorted({{l.split()[-1] for l in open('/proc/self/maps') if '.so' in l.split()[-1]}})
print(json.dumps({{'libs': libs, 'path': sys.path, 'executable': sys.executable}}))"""


def clean_env(home: Path, cuda_libs: str | None) -> dict[str, str]:
    """What `env -i` leaves plus a PATH for the shell tools, a HOME, where cuBLAS is, and one
    BLAS thread (OpenBLAS threads spin and stall on a busy machine: 50 demo iterations took
    149 s instead of 5 at load 6 on 2 cores)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1"}
    if cuda_libs:
        env["SEGORCH_CUDA_LIBS"] = cuda_libs
    return env


def run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """The command under `env -i` with exactly `env`."""
    return subprocess.run(
        ["env", "-i", *[f"{k}={v}" for k, v in env.items()], *cmd],
        cwd=cwd,
        env={},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Report:
    """PASS/FAIL lines, printed as they come."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def check(self, name: str, ok: bool, detail: str) -> bool:
        """Print one verdict; remember a failure; return ok."""
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
        if not ok:
            self.failed.append(name)
        return ok


def check_version(bundle: Path, env: dict[str, str], rep: Report) -> None:
    """`orchestrate --version` answers, naming Caffe's commit and the bundle's own pycaffe."""
    p = run([str(bundle / "bin" / "orchestrate"), "--version"], env, bundle)
    inside = str(bundle / "caffe" / "src" / "python" / "caffe")
    rep.check(
        "orchestrate --version",
        p.returncode == 0 and "caffe commit: 99bd997" in p.stdout and inside in p.stdout,
        (p.stdout + p.stderr).strip().replace("\n", " | "),
    )


def check_demo(bundle: Path, env: dict[str, str], work: Path, iters: int, rep: Report) -> None:
    """The demo trains `iters` iterations in CPU mode and writes its curves and report."""
    run_dir = work / "runs" / "demo"
    t0 = time.time()
    p = run(
        [
            str(bundle / "bin" / "orchestrate"),
            "run",
            "experiments/demo.yaml",
            "--run-dir",
            str(run_dir),
            "--set",
            f"solver.max_iter={iters}",
            "--set",
            "device=cpu",
            "--quiet",
        ],
        env,
        bundle,
    )
    took = time.time() - t0
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    wrote = all((run_dir / f).exists() for f in ("curves.png", "report.md", "metrics.jsonl"))
    ok = p.returncode == 0 and summary.get("status") == "completed" and summary.get("iterations") == iters and wrote
    rep.check(
        f"demo, {iters} iterations in CPU mode",
        ok,
        f"exit {p.returncode}, status {summary.get('status')}, iterations {summary.get('iterations')}, "
        f"curves.png/report.md/metrics.jsonl written: {wrote}, {took:.0f} s"
        + ("" if ok else f"\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"),
    )


def check_libraries(bundle: Path, env: dict[str, str], with_cuda: bool, rep: Report) -> None:
    """ldd on every ELF file, then what a process that imported everything has mapped."""
    ldd_env = {"LD_LIBRARY_PATH": env["SEGORCH_CUDA_LIBS"]} if "SEGORCH_CUDA_LIBS" in env else {}
    bad = outside_libraries(bundle, with_cuda, ldd_env)
    n = sum(1 for _ in bundle.rglob("*.so*")) + 2
    rep.check(
        "ldd: every ELF file loads only the bundle's libraries and glibc's"
        + (" (+ the driver's, cuBLAS/cuRAND)" if with_cuda else ""),
        not bad,
        f"about {n} ELF files" if not bad else "\n  " + "\n  ".join(bad),
    )
    p = run([str(bundle / "bin" / "python"), "-c", MAPS], env, bundle)
    if not rep.check("a process importing everything a run imports", p.returncode == 0, p.stderr[-2000:] or "ok"):
        return
    seen = json.loads(p.stdout.strip().splitlines()[-1])
    root = str(bundle.resolve())
    outside = [
        lib for lib in seen["libs"] if not lib.startswith(root) and not allowed_outside(Path(lib).name, with_cuda)
    ]
    system = sorted({Path(lib).name for lib in seen["libs"] if not lib.startswith(root)})
    rep.check(
        "mapped libraries (/proc/self/maps) outside the bundle",
        not outside,
        f"{len(seen['libs'])} mapped; from the system only: {', '.join(system)}" if not outside else ", ".join(outside),
    )
    paths = [x for x in seen["path"] if x and not x.startswith(root)]
    rep.check(
        "sys.path and sys.executable inside the bundle",
        not paths and seen["executable"].startswith(root),
        f"executable {seen['executable']}" + (f"; outside: {paths}" if paths else ""),
    )


def main() -> int:
    """Unpack into a fresh folder, run the checks, clean up; exit 1 when any failed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tarball", type=Path)
    ap.add_argument("--iters", type=int, default=50, help="demo iterations (default 50)")
    ap.add_argument(
        "--cuda-libs",
        default=os.environ.get("SEGORCH_CUDA_LIBS"),
        help="GPU variant: where libcublas.so.13/libcurand.so.10 are (default: $SEGORCH_CUDA_LIBS, "
        "else the build's record beside the tarball, else the bundle's own search)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the unpacked folder")
    a = ap.parse_args()
    if not a.tarball.is_file():
        print(f"no bundle at {a.tarball}: make it with make gpu-bundle (BUNDLE_VARIANT=gpu or cpu)", file=sys.stderr)
        return 2
    record = a.tarball.with_name(a.tarball.name.removesuffix(".tar.gz") + ".build.json")
    if not a.cuda_libs and record.exists():
        a.cuda_libs = json.loads(record.read_text()).get("cuda_libs")
    rep = Report()
    work = Path(tempfile.mkdtemp(prefix="segorch-bundle-check."))
    try:
        t0 = time.time()
        subprocess.run(["tar", "xzf", str(a.tarball.resolve()), "-C", str(work)], check=True)
        (bundle,) = [p for p in work.iterdir() if p.is_dir()]
        info = json.loads((bundle / "BUNDLE.json").read_text())
        with_cuda = info["variant"] == "gpu"
        print(
            f"unpacked {a.tarball} ({a.tarball.stat().st_size / 2**20:.1f} MiB) into {bundle} in "
            f"{time.time() - t0:.0f} s; variant {info['variant']}, built {info['built']}",
            flush=True,
        )
        env = clean_env(work / "home", a.cuda_libs if with_cuda else None)
        (work / "home").mkdir()
        check_version(bundle, env, rep)
        check_demo(bundle, env, work, a.iters, rep)
        check_libraries(bundle, env, with_cuda, rep)
    finally:
        if a.keep:
            print(f"kept {work}")
        else:
            subprocess.run(["rm", "-rf", str(work)])
    print(f"bundle check: {'FAILED: ' + ', '.join(rep.failed) if rep.failed else 'all passed'}")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
