"""The integrations reach the core only through its named internal API, never private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import resilience.integrations

INTEGRATIONS = Path(resilience.integrations.__file__).parent
MODULES = sorted(INTEGRATIONS.glob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str) -> list[str]:
    """Private names the code takes from `resilience` (the integrations are part of it).

    Two shapes: importing a ``_name`` (``from resilience._deadline import _CURRENT``), and
    reading a ``._name`` off anything imported from `resilience` (``Deadline._trusted``).
    Private *modules* are fine: ``resilience._validate`` is where the validators live.
    """
    tree = ast.parse(source)
    imported: set[str] = set()
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and module.split(".")[0] != "resilience":
                continue  # another library: its conventions are its own
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"line {node.lineno}: imports {alias.name} from {module}")
                imported.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "resilience":
                    imported.add(alias.asname or alias.name.split(".")[0])
    found.extend(
        f"line {node.lineno}: {node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in imported
        and _private(node.attr)
    )
    return found


def test_the_check_finds_both_shapes_of_private_use() -> None:
    """The checker flags a private import and a private attribute, and nothing public."""
    source = (
        "from resilience._deadline import Deadline, _CURRENT\n"
        "from ._answers import Answer\n"
        "import resilience._deadline as core\n"
        "import flask\n"
        "scope = Deadline._trusted(1.0)\n"
        "core._exceeded('x')\n"
        "flask.request._get_current_object()\n"
        "Answer.__name__, Deadline.seconds\n"
    )
    assert private_uses(source) == [
        "line 1: imports _CURRENT from resilience._deadline",
        "line 5: Deadline._trusted",
        "line 6: core._exceeded",
    ]


@pytest.mark.parametrize("module", MODULES, ids=[path.name for path in MODULES])
def test_integrations_use_no_private_core_names(module: Path) -> None:
    """No integrations module imports a _name from resilience or reads ._name off one."""
    assert private_uses(module.read_text(encoding="utf-8")) == []


def test_the_package_imports_nothing() -> None:
    """integrations/__init__.py imports nothing: a missing framework hurts only its module."""
    tree = ast.parse((INTEGRATIONS / "__init__.py").read_text(encoding="utf-8"))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
