"""The import rules the package layout promises (operators/__init__.py, models/__init__.py, flows/__init__.py)."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from crm_stream.operators.rules import RULES

ROOT = Path(__file__).resolve().parents[2]


def _imports(folder: str) -> list[tuple[Path, str]]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(path, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((path, node.module))
    return found


def test_models_never_import_operators() -> None:
    offending = [(str(p.relative_to(ROOT)), m) for p, m in _imports("models") if m.startswith("crm_stream.operators")]
    assert offending == []


@pytest.mark.parametrize("folder", ["operators", "models"])
def test_only_flows_import_bytewax(folder: str) -> None:
    offending = [(str(p.relative_to(ROOT)), m) for p, m in _imports(folder) if m.split(".")[0] == "bytewax"]
    assert offending == []


def test_imports_use_the_installed_namespace() -> None:
    """Code imports ``crm_stream.<part>``, never the bare folder names (which are not installed)."""
    bare = ("operators", "models", "flows", "config")
    offending = [
        (str(p.relative_to(ROOT)), m)
        for folder in (*bare, "load", "tests")
        for p, m in _imports(folder)
        if m.split(".")[0] in bare
    ]
    assert offending == []


def test_the_shard_knows_no_rule_by_name() -> None:
    shard = (ROOT / "operators" / "stages" / "shard.py").read_text()
    assert [rule.KIND for rule in RULES if f'"{rule.KIND}"' in shard] == []


def test_no_file_points_outside_the_repository() -> None:
    """The repository stands alone: no file refers to the workspace folder beside it."""
    needle = "../" + "shared"  # spelled in two parts so this file does not match itself
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    pointing = [
        name
        for name in tracked
        if not name.endswith((".png", ".jpg")) and (ROOT / name).is_file() and needle in (ROOT / name).read_text(errors="replace")
    ]
    assert pointing == []
