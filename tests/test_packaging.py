"""Packaging: pyproject.toml alone installs what every module of the project imports, and
requirements.lock pins exactly that set (every package, direct and indirect), which is what
`make setup` put in the venv."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.conftest import REPO

PACKAGES = ("common", "data_prep", "nets", "orchestrator")
LOCK = REPO / "requirements.lock"
# run by the fresh venv's Python: import each named module; where it came from, which
# distributions provide each top-level name, and what failed to import
IMPORT_ALL = """
import importlib, importlib.metadata, json, sys
where, failed = {}, {}
for n in json.loads(sys.argv[1]):
    try:
        where[n] = getattr(importlib.import_module(n), "__file__", None)
    except Exception as e:
        failed[n] = f"{type(e).__name__}: {e}"
print(json.dumps({"where": where, "failed": failed, "dists": importlib.metadata.packages_distributions()}))
"""


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def direct_requirements() -> list[Requirement]:
    """pyproject.toml's dependencies and every optional group (the tests' own)."""
    extras = [r for group in pyproject().get("optional-dependencies", {}).values() for r in group]
    return [Requirement(r) for r in pyproject()["dependencies"] + extras]


def lock_pins() -> dict[str, str]:
    """requirements.lock as {canonical name: exact version}; any other kind of line is an error."""
    pins: dict[str, str] = {}
    for n, raw in enumerate(LOCK.read_text().splitlines(), 1):
        line = raw.split("#")[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and version and not set(version) & set(" ;<>=!~*"), (
            f"requirements.lock line {n}: '{raw}' is not NAME==VERSION"
        )
        pins[canonicalize_name(name)] = version
    return pins


def project_modules(root: Path) -> list[str]:
    """Every module of the project's packages in the source tree `root` (but `__main__`s:
    importing one runs the program, `python -m` is how they are used)."""
    names = []
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            if f.name == "__main__.py":
                continue
            parts = f.relative_to(root).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def caffe_python() -> Path:
    """The built pycaffe's folder (what the venv's bvlc_caffe.pth names)."""
    return Path((REPO / ".venv" / "caffe-dir").read_text().strip()) / "src" / "python"


def imported_names(files: list[Path], top_level_only: bool = False) -> set[str]:
    """Top-level names of everything `files` import (also inside functions, unless
    `top_level_only`), except imports tried in a `try` (optional ones, such as caffe.draw's
    pydotplus; the fallback in its `except` counts)."""
    found: set[str] = set()
    for f in files:
        tree = ast.parse(f.read_text(), str(f))
        skip = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) for stmt in t.body for n in ast.walk(stmt)}
        if top_level_only:
            skip |= {
                id(n)
                for t in ast.walk(tree)
                if isinstance(t, (ast.FunctionDef, ast.AsyncFunctionDef))
                for n in ast.walk(t)
            }
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def third_party_imports() -> set[str]:
    """What our packages import anywhere, and pycaffe's modules (not its tests) at import,
    plus caffe.io anywhere, that is neither the standard library, the project, nor Caffe
    itself. (pycaffe's other imports inside functions serve features we do not use, e.g. the
    R-CNN detector's selective search; caffe.io's load_image/resize_image are public helpers
    users call, and patch 0005 only made their scikit-image/scipy imports lazy.)"""
    ours = imported_names([f for pkg in PACKAGES for f in (REPO / pkg).rglob("*.py")])
    pycaffe = imported_names(
        [f for f in (caffe_python() / "caffe").rglob("*.py") if "test" not in f.relative_to(caffe_python()).parts],
        top_level_only=True,
    )
    io = imported_names([caffe_python() / "caffe" / "io.py"])
    return (ours | pycaffe | io) - set(sys.stdlib_module_names) - set(PACKAGES) - {"__future__", "caffe"}


def test_lock_pins_versions_inside_pyproject_ranges() -> None:
    pins = lock_pins()
    for req in direct_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"requirements.lock has no pin for {req.name} (pyproject.toml asks for '{req}')"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {req.name}=={pins[name]}, outside pyproject.toml's '{req.specifier}'"
        )
    assert SpecifierSet(pyproject()["requires-python"]).contains(".".join(map(str, sys.version_info[:3])))


def test_venv_holds_the_lock() -> None:
    """`make setup` installs requirements.lock: the venv running the tests has those versions."""
    drift = {}
    for name, version in lock_pins().items():
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have != version:
            drift[name] = (version, have)
    assert drift == {}, f"the venv differs from requirements.lock (pinned, installed): {drift}; run make setup"


def pip(vpy: Path, *args: str) -> str:
    r = subprocess.run([str(vpy), "-m", "pip", *args, "--disable-pip-version-check"], capture_output=True, text=True)
    assert r.returncode == 0, f"pip {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def import_all(vpy: Path, names: list[str], cwd: Path) -> dict:
    """Import `names` in the fresh venv, away from the source tree, with pycaffe on PYTHONPATH
    as the venv's .pth file puts it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(caffe_python())}
    r = subprocess.run(
        [str(vpy), "-c", IMPORT_ALL, json.dumps(names)], capture_output=True, text=True, cwd=cwd, env=env
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


@pytest.mark.caffe
@pytest.mark.slow
def test_pyproject_alone_installs_what_every_module_imports(tmp_path: Path) -> None:
    """A fresh venv from the same base Python, and in it a plain install of a copy of the
    project (pyproject.toml and the packages, nothing else), with the lock as constraints only
    (they pick versions, they add no package): every module of the project imports, and so
    does pycaffe. With the extras, every third-party module the code imports anywhere (also
    inside functions) imports too and comes from a distribution pyproject.toml names itself
    (not one that only happens to come along), and the venv holds exactly the lock."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy2(REPO / "pyproject.toml", src)
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    vpy = venv / "bin" / "python"

    pip(vpy, "install", "-q", "-c", str(LOCK), str(src))
    modules = project_modules(src)
    got = import_all(vpy, modules + ["caffe", "caffe.io", "caffe.net_spec"], tmp_path)
    assert got["failed"] == {}, f"with pyproject.toml's dependencies alone these do not import: {got['failed']}"
    site = str(venv.resolve())
    misplaced = [m for m in modules if not str(Path(got["where"][m]).resolve()).startswith(site)]
    assert misplaced == [], f"not imported from the installed package: {misplaced}"

    extras = sorted(pyproject().get("optional-dependencies", {}))
    pip(vpy, "install", "-q", "-c", str(LOCK), f"{src}[{','.join(extras)}]")
    others = sorted(third_party_imports())
    # the scan sees ours and pycaffe's
    assert {"numpy", "cv2", "lmdb", "PIL", "yaml", "google", "matplotlib", "six", "skimage", "scipy", "pydot"} <= set(
        others
    )
    got = import_all(vpy, others + ["pytest", "caffe.draw"], tmp_path)
    assert got["failed"] == {}, f"pyproject.toml (with extras {extras}) provides no module for: {got['failed']}"
    declared = {canonicalize_name(r.name) for r in direct_requirements()}
    undeclared = {
        name: got["dists"].get(name)
        for name in others
        if not declared & {canonicalize_name(d) for d in got["dists"].get(name, [])}
    }
    assert undeclared == {}, f"imported by the code but not named in pyproject.toml (name: distributions): {undeclared}"

    frozen: dict[str, str] = {}
    for line in pip(vpy, "freeze").splitlines():
        name, _, version = line.partition("==")
        if version and canonicalize_name(name) != "segorch":
            frozen[canonicalize_name(name)] = version
    # pip freeze leaves out setuptools (the lock pins it as the build backend of `make setup`)
    want = {k: v for k, v in lock_pins().items() if k != "setuptools"}
    diff = {k: (want.get(k), frozen.get(k)) for k in want.keys() | frozen.keys() if want.get(k) != frozen.get(k)}
    assert diff == {}, f"requirements.lock is not exactly what pyproject.toml installs (locked, installed): {diff}"
