"""The import rule of the tree (DESIGN.md): the parent side (orchestrator.cli, .run, .predict,
.sweep) never imports the Caffe child's orchestrator.train; orchestrator.config imports nothing of
orchestrator but orchestrator.contract; nets and data_prep import only common of the project.
Every import counts, also one inside a function, and relative ones."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

from tests.conftest import REPO

PROJECT = ("common", "data_prep", "nets", "orchestrator")


def within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


# (the packages a rule is about, which project modules they may import, why)
RULES: list[tuple[tuple[str, ...], Callable[[str], bool], str]] = [
    (
        ("orchestrator.cli", "orchestrator.run", "orchestrator.predict", "orchestrator.sweep"),
        lambda m: not within(m, "orchestrator.train"),
        "the parent side never imports the Caffe child (orchestrator.train)",
    ),
    (
        ("orchestrator.config",),
        # "orchestrator" alone: `from orchestrator import contract` names the (empty) top package
        lambda m: m == "orchestrator" or within(m, "orchestrator.contract", "orchestrator.config", *PROJECT[:3]),
        "orchestrator.config imports nothing of orchestrator but orchestrator.contract",
    ),
    (("nets",), lambda m: within(m, "common", "nets"), "nets imports only common of the project"),
    (("data_prep",), lambda m: within(m, "common", "data_prep"), "data_prep imports only common of the project"),
]


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> set[str]:
    """Every module `path` imports anywhere in its body, relative imports made absolute
    (`from a import b` counts as a and a.b: b may be a module)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return found


def violations(root: Path) -> list[str]:
    """'module imports module: why' for every import in the project's packages under `root`
    that breaks a rule."""
    out = []
    for f in sorted(f for pkg in PROJECT for f in (root / pkg).rglob("*.py")):
        mod = module_name(f, root)
        deps = sorted(m for m in imports(f, root) if m.split(".")[0] in PROJECT)
        for packages, allowed, why in RULES:
            if within(mod, *packages):
                out += [f"{mod} imports {m}: {why}" for m in deps if not allowed(m)]
    return out


def test_the_tree_keeps_the_import_rule() -> None:
    assert violations(REPO) == []


def test_the_scan_sees_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    files = {
        "orchestrator/__init__.py": "",
        "orchestrator/cli/__init__.py": "",
        "orchestrator/cli/main.py": "from orchestrator.contract import EXIT_OK\n\n\ndef f():\n"
        "    from ..train import loop\n",
        "orchestrator/config/__init__.py": "",
        "orchestrator/config/experiment.py": "from . import schema\nfrom orchestrator import contract\n"
        "from data_prep.sizes import parse_size\nimport orchestrator.train.rules\n",
        "orchestrator/sweep/driver.py": "from orchestrator.run import runner\n",
        "nets/spec.py": "from common.errors import UserError\nfrom nets import blocks\n\n\ndef g():\n"
        "    import data_prep\n",
        "data_prep/build.py": "from .sizes import parse_size\nfrom orchestrator.contract import Status\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert [v.split(":")[0] for v in violations(tmp_path)] == [
        "data_prep.build imports orchestrator.contract",
        "data_prep.build imports orchestrator.contract.Status",
        "nets.spec imports data_prep",
        "orchestrator.cli.main imports orchestrator.train",
        "orchestrator.cli.main imports orchestrator.train.loop",
        "orchestrator.config.experiment imports orchestrator.train.rules",
    ]
