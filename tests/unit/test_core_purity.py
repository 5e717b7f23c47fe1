"""The core is pure: it imports nothing from the shell, nothing that reads a clock or does I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rdzv.core

CORE = Path(rdzv.core.__file__).parent
ALLOWED_RDZV = ("rdzv.core", "rdzv.api")
FORBIDDEN = {
    "time", "datetime", "socket", "threading", "asyncio", "subprocess", "os", "random",
    "logging", "etcd", "urllib3", "pickle", "select", "selectors",
}  # fmt: skip
VALUES_ONLY = {("datetime", "timedelta")}
"""Imports of a forbidden module that bring a plain value type, not a clock."""


def imported(path: Path) -> set[tuple[str, str]]:
    """(module, name) pairs; name is "" for ``import module``."""
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update((alias.name, "") for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update((node.module, alias.name) for alias in node.names)
    return found


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_only_the_core_and_pure_libraries(path: Path) -> None:
    imports = imported(path)
    assert imports, f"{path.name}: no import found; is the parser looking at the right file?"
    shell = {m for m, _ in imports if m.startswith("rdzv") and not m.startswith(ALLOWED_RDZV)}
    assert not shell, f"{path.name} imports the shell: {shell}"
    impure = {
        (m, name)
        for m, name in imports
        if m.split(".")[0] in FORBIDDEN and (m, name) not in VALUES_ONLY
    }
    assert not impure, f"{path.name} imports {impure}"
