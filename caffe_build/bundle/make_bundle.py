"""Stage, relink and pack the portable runtime (make gpu-bundle; README, "GPU runtime bundle").

Run by build_bundle.sh with the runtime venv's Python (its base CPython is the interpreter the
bundle carries, the one pycaffe was built against). The layout mirrors a checkout, so the
project's own code finds everything where it looks in one (`orchestrator.cli.envinfo`):
    bin/            python, orchestrate, caffe (launchers) and env.sh (the environment)
    python/         the interpreter and a trimmed standard library; site-packages holds
                    numpy, lmdb, PyYAML, protobuf, six, matplotlib (Agg), tensorboardX and their needs
    lib/            every shared library that is not glibc's (libcaffe, boost, glog, ...)
    caffe/          build-info.json, src/python/caffe (pycaffe), src/build/tools/caffe
    common/ data_prep/ nets/ orchestrator/ bench/ experiments/   the project
    data/           the demo's LMDBs and a 500x500 set for the FCN-8s benchmark (the data
                    stage needs OpenCV, which the bundle leaves out: 50 MB compressed)
Every ELF file gets a RUNPATH of $ORIGIN-relative folders inside the bundle; only glibc and,
for the GPU variant, the NVIDIA driver and cuBLAS/cuRAND come from the target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from elfdeps import (
    BundleError,
    allowed_outside,
    elf_files,
    ldd,
    needed,
    outside_libraries,
    runpath,
    set_runpath,
)

PYVER = f"python{sys.version_info[0]}.{sys.version_info[1]}"
# Top-level entries of site-packages the runtime needs (import closure of `orchestrate run`
# with matplotlib's Agg backend and TensorBoard event files; fontTools, scipy, scikit-image,
# OpenCV, Ray and TensorBoard itself are left out).
SITE_PACKAGES = (
    "numpy",
    "numpy.libs",
    "lmdb",
    "yaml",
    "_yaml",
    "google",
    "six.py",
    "PIL",
    "pillow.libs",
    "matplotlib",
    "mpl_toolkits",
    "contourpy",
    "cycler",
    "kiwisolver",
    "pyparsing",
    "dateutil",
    "packaging",
    "tensorboardX",
)
PROJECT = ("common", "data_prep", "nets", "orchestrator", "bench", "experiments", "pyproject.toml")
# Standard-library parts no run needs (tests, GUI, build tooling) and extension modules whose
# libraries are large or absent on a minimal system (OpenSSL, Tk, ncurses, SQLite, libcrypt).
STDLIB_SKIP = {
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "turtle.py",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "distutils",
    "site-packages",
    "dist-packages",
    "venv",
    "sqlite3",
    "curses",
    "dbm",
    "__pycache__",
}
DYNLOAD_SKIP = (
    "_tkinter",
    "_curses",
    "readline",
    "_sqlite3",
    "_dbm",
    "_gdbm",
    "_crypt",
    "nis",
    "_ssl",
    "_hashlib",
    "_test",
    "_ctypes_test",
    "_xxtestfuzz",
    "xxlimited",
    "spwd",
    "ossaudiodev",
)
SITE_SKIP_DIRS = {
    "tests",
    "__pycache__",
    "f2py",
    "distutils",
    "_pyinstaller",
    "_examples",
    "sample_data",
    "images",
    "afm",
    "pdfcorefonts",
    "include",
}
SITE_SKIP_SUFFIX = (".pyi", ".pyx", ".pxd", ".c", ".h", ".a")
KEEP_FONTS = {"DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf"}  # no mathtext fonts
# site-packages extension modules the runtime never imports, with their vendored libraries
SITE_SKIP_EXT = (
    "PIL/_avif",
    "PIL/_webp",
    "PIL/_imagingft",
    "PIL/_imagingcms",
    "PIL/_imagingtk",
    "matplotlib/backends/_tkagg",
    "numpy/_core/_multiarray_tests",
    "numpy/_core/_umath_tests",
    "numpy/_core/_operand_flag_tests",
    "numpy/_core/_rational_tests",
    "numpy/_core/_struct_ufunc_tests",
    "numpy/_core/_simd",
)


# staged file -> the file it was copied from: `ldd` on the original resolves its libraries
# where they were built or installed (the staged copy's RUNPATH may not fit its new place)
SOURCES: dict[Path, Path] = {}


def log(msg: str) -> None:
    """A progress line on stderr (stdout carries only the final size line)."""
    print(f"[bundle] {msg}", file=sys.stderr, flush=True)


def copy_file(src: Path, dst: Path) -> None:
    """Copy one file (a symlink's target's content: the bundle never points outside itself)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    SOURCES[dst] = src.resolve()


def copy_tree(src: Path, dst: Path, skip_dir: set[str], keep: Callable[[Path], bool]) -> None:
    """Copy src to dst without the named folders and the files `keep` refuses."""
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dir)
        rel = Path(dirpath).relative_to(src)
        for name in sorted(filenames):
            if keep(rel / name):
                copy_file(Path(dirpath) / name, dst / rel / name)


def stage_python(stage: Path) -> Path:
    """The interpreter, its standard library (trimmed) and lib-dynload; returns site-packages."""
    exe = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    stdlib = Path(sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["stdlib"])
    dst = stage / "python" / "lib" / PYVER
    copy_file(exe, stage / "python" / "bin" / PYVER)

    def keep(rel: Path) -> bool:
        if rel.parts[0] == "lib-dynload":
            return not rel.name.startswith(DYNLOAD_SKIP)
        return rel.parts[0] not in STDLIB_SKIP and not rel.parts[0].startswith("config-")

    copy_tree(stdlib, dst, STDLIB_SKIP, keep)
    site = dst / "site-packages"
    site.mkdir()
    return site


def stage_site_packages(site: Path) -> Path:
    """The runtime's packages from this venv's site-packages, trimmed; returns the source folder."""
    src = Path(sysconfig.get_paths()["purelib"])

    def keep(rel: Path) -> bool:
        s = rel.as_posix()
        if rel.suffix in SITE_SKIP_SUFFIX or rel.name == "py.typed" or s.startswith(SITE_SKIP_EXT):
            return False
        if "fonts/ttf" in s:
            return rel.name in KEEP_FONTS
        return ".libs/" not in s  # a wheel's vendored libraries: only those needed (gather_and_relink)

    for name in SITE_PACKAGES:
        p = src / name
        if not p.exists():
            raise BundleError(f"{p} is missing from the runtime venv (delete the venv; build_bundle.sh remakes it)")
        if p.is_dir():

            def keep_in(rel: Path, n: str = name) -> bool:
                return keep(Path(n) / rel)

            copy_tree(p, site / name, SITE_SKIP_DIRS, keep_in)
        else:
            copy_file(p, site / name)
    return src


def stage_caffe(stage: Path, caffe_dir: Path) -> None:
    """libcaffe, pycaffe (without its tests and ImageNet mean) and the `caffe` tool, in the
    layout orchestrator.cli.envinfo expects of a Caffe build."""
    build = caffe_dir / "src" / "build"
    py = stage / "caffe" / "src" / "python" / "caffe"
    copy_tree(
        caffe_dir / "src" / "python" / "caffe", py, {"test", "imagenet", "__pycache__"}, lambda rel: rel.suffix == ".py"
    )
    elfs = {
        build / "lib" / "libcaffe.so.1.0.0": stage / "lib" / "libcaffe.so.1.0.0",
        build / "lib" / "_caffe.so": py / "_caffe.so",
        build / "tools" / "caffe": stage / "caffe" / "src" / "build" / "tools" / "caffe",
    }
    for src, dst in elfs.items():
        copy_file(src, dst)
    copy_file(caffe_dir / "build-info.json", stage / "caffe" / "build-info.json")


def project_files(project: Path, paths: Sequence[str] = PROJECT) -> list[str]:
    """The files below `paths` of the checkout `project` that git tracks or would (new, not
    ignored), relative to it: what the bundle packages (tests/test_bundle.py: what it is made from)."""
    files = subprocess.run(
        ["git", "-C", str(project), "ls-files", "-co", "--exclude-standard", "--", *paths],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return [f for f in files if f and (project / f).is_file()]


def stage_project(stage: Path, project: Path, site: Path) -> str:
    """The project's files (tracked and new, not ignored) and a dist-info so that
    importlib.metadata knows its version; returns the version."""
    for f in project_files(project):
        copy_file(project / f, stage / f)
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    info = site / f"{meta['name']}-{meta['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    return str(meta["version"])


def stage_data(stage: Path, data_python: Path) -> None:
    """The demo's LMDBs and a 500x500 set for bench/gpu_check.sh, made by the project venv's
    data stage (it needs OpenCV); the raw images are not kept."""
    env = {**os.environ, "PYTHONPATH": str(stage)}

    def run(*args: str) -> None:
        subprocess.run([str(data_python), *args], cwd=stage, env=env, check=True, stdout=subprocess.DEVNULL)

    run("-m", "orchestrator.cli", "data", "synth", "--out", "data/synth")
    run(
        "-c",
        "from orchestrator.config import experiment; from orchestrator.run import runner; "
        "runner.ensure_data(experiment.load_experiment('experiments/demo.yaml'))",
    )
    run(
        "-m",
        "orchestrator.cli",
        "data",
        "synth",
        "--out",
        "data/raw500",
        "--train",
        "1",
        "--val",
        "1",
        "--size",
        "500x500",
    )
    run(
        "-m",
        "orchestrator.cli",
        "data",
        "build",
        "--list",
        "data/raw500/train.txt",
        "--out",
        "data/fcn500/train",
        "--quiet",
    )
    shutil.rmtree(stage / "data" / "raw500")
    for p in (stage / "data" / "synth").iterdir():  # the lists stay: the experiment names them
        if p.name not in ("lmdb", "train.txt", "val.txt", "dataset.json"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def gather_and_relink(stage: Path, site_src: Path, site: Path, with_cuda: bool) -> None:
    """Copy in every library an ELF file needs (a wheel's vendored ones to the same place, the
    others to lib/), then give each ELF a RUNPATH of the folders its own needs live in."""
    lib = stage / "lib"
    staged = {src: dst for dst, src in SOURCES.items()}
    by_name = {dst.name: dst for dst in SOURCES if dst.name.startswith("lib") and ".so" in dst.name}
    where: dict[str, Path] = {}
    # the interpreter first: its libpython wins over a system one of the same soname
    queue = sorted(elf_files(stage), key=lambda p: p.name == PYVER)
    done: set[Path] = set()
    while queue:
        f = queue.pop()
        if f in done:
            continue
        done.add(f)
        for name, path in ldd(SOURCES.get(f, f)).items():
            if allowed_outside(name, with_cuda):
                continue
            if path is None:
                raise BundleError(f"{f.relative_to(stage)} needs {name}, which is not found on this machine")
            real = Path(path).resolve()
            dst = (
                staged.get(real)
                or by_name.get(name)
                or (site / real.relative_to(site_src) if real.is_relative_to(site_src) else lib / name)
            )
            if real not in staged:
                staged[real] = dst
                if dst.exists():  # another file of this soname is already in: the loader takes one
                    where[name] = dst.parent
                    continue
                copy_file(real, dst)
                by_name[name] = dst
                queue.append(dst)
            where[name] = dst.parent
    for f in elf_files(stage):
        # debug symbols go, except from files auditwheel has already rewritten (a wheel's vendored
        # .libs, and modules with a RUNPATH): strip breaks their layout ("ELF load command
        # address/offset not page-aligned")
        rewritten = f.is_relative_to(site) and (f.parent.name.endswith(".libs") or runpath(SOURCES.get(f, f)))
        if not rewritten:
            subprocess.run(["strip", "--strip-unneeded", str(f)], check=True)
        set_runpath(f, [where[n] for n in needed(f) if n in where])
    bad = outside_libraries(stage, with_cuda)
    if bad:
        raise BundleError("libraries still loaded from outside the bundle:\n  " + "\n  ".join(bad))


def write_launchers(stage: Path, variant: str) -> None:
    """bin/env.sh (from this folder) and the three launchers that source it."""
    here = Path(__file__).resolve().parent
    (stage / "bin").mkdir()
    shutil.copy2(here / "env.sh", stage / "bin" / "env.sh")
    targets = {
        "python": '"$SEGORCH_HOME/python/bin/' + PYVER + '" "$@"',
        "orchestrate": '"$SEGORCH_HOME/python/bin/' + PYVER + '" -m orchestrator.cli "$@"',
        "caffe": '"$SEGORCH_HOME/caffe/src/build/tools/caffe" "$@"',
    }
    for name, cmd in targets.items():
        p = stage / "bin" / name
        p.write_text(
            f"#!/bin/sh\n# segorch {variant} bundle: {name} with the bundle's environment (bin/env.sh)\n"
            f'. "$(dirname "$(readlink -f "$0")")/env.sh"\nexec {cmd}\n'
        )
        p.chmod(0o755)
    if variant == "gpu":
        (stage / "lib" / "cuda-from-target.txt").write_text("libcublas.so.13\nlibcurand.so.10\n")


def pack(stage: Path, out: Path) -> None:
    """tar.gz of the staged folder, written beside `out` and renamed onto it when complete."""
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", dir=out.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=9) as tar:
            tar.add(stage, arcname=stage.name)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise


def main() -> int:
    """Stage everything, relink, pack; print the tarball's size."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", choices=("gpu", "cpu"), required=True)
    ap.add_argument("--caffe-dir", type=Path, required=True, help="the bundle-flavour Caffe build (build_caffe.sh)")
    ap.add_argument("--project", type=Path, required=True, help="the checkout to package")
    ap.add_argument("--data-python", type=Path, required=True, help="the project venv's python (has OpenCV)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    a.caffe_dir, a.project, a.out = a.caffe_dir.resolve(), a.project.resolve(), a.out.absolute()
    a.data_python = Path(os.path.abspath(a.data_python))  # not resolved: a venv's python is a link
    t0 = time.time()
    info = json.loads((a.caffe_dir / "build-info.json").read_text())
    if bool(info.get("gpu")) != (a.variant == "gpu") or info.get("flavor") != "bundle":
        raise BundleError(f"{a.caffe_dir} is not a bundle-flavour {a.variant} build: {info}")
    name = a.out.name.removesuffix(".tar.gz")
    stage_root = a.out.parent / f"{name}.stage"
    shutil.rmtree(stage_root, ignore_errors=True)
    stage = stage_root / name
    stage.mkdir(parents=True)
    site = stage_python(stage)
    site_src = stage_site_packages(site)
    stage_caffe(stage, a.caffe_dir)
    version = stage_project(stage, a.project, site)
    stage_data(stage, a.data_python)
    gather_and_relink(stage, site_src, site, a.variant == "gpu")
    write_launchers(stage, a.variant)
    commit = subprocess.run(
        ["git", "-C", str(a.project), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    (stage / "BUNDLE.json").write_text(
        json.dumps(
            {
                "variant": a.variant,
                "segorch": version,
                "project_commit": commit,
                "caffe": info,
                "python": sys.version.split()[0],
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "cuda_from_target": ["libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10"]
                if a.variant == "gpu"
                else [],
            },
            indent=1,
        )
        + "\n"
    )
    pack(stage, a.out)
    unpacked = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file())
    shutil.rmtree(stage_root)
    size = a.out.stat().st_size
    print(
        f"bundle: {a.out} {size / 2**20:.1f} MiB ({size} bytes; {unpacked / 2**20:.0f} MiB unpacked), "
        f"made in {time.time() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BundleError as e:
        log(f"FAILED: {e}")
        sys.exit(1)
