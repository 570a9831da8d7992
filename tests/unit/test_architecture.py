"""The package's layers hold (CONTRIBUTING.md, "Layers and owners"), no tool imports another, and labels are defined once."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import cmrssl.labels

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = REPO_ROOT / "common" / "cmrssl"
TOOLS = REPO_ROOT / "tools"


def _imported_modules(path: Path):
    """Top-level names of every module ``path`` imports (absolute imports only)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno


def test_import_linter_layers_contract_holds():
    """``.importlinter``: engines > data > transforms | metrics > losses | networks > io > labels | flags."""
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(linter), "--no-cache", "--config", str(REPO_ROOT / ".importlinter")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT / "common")),
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_no_tool_imports_another_tool():
    """Tools are thin command lines over ``cmrssl``: shared code lives in the package, not in a tool."""
    tool_names = {p.stem for p in TOOLS.glob("*.py")} | {p.stem for p in (TOOLS / "benchmarks").glob("*.py")}
    offenders = []
    for path in sorted(TOOLS.rglob("*.py")):
        for module, line in _imported_modules(path):
            if module in tool_names and module != path.stem:
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {module}")
    assert not offenders, offenders


def test_labels_are_defined_only_in_cmrssl_labels():
    """Every label constant (names, values, density, dataset maps) is assigned in one module only."""
    names = set(cmrssl.labels.__all__)
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "labels.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) else []
            for target in targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name) and leaf.id in names:
                        offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} assigns {leaf.id}")
    assert not offenders, offenders
