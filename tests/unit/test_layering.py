"""The layers below the handler do not import it; the names that moved still import."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import rdzv

RDZV = Path(rdzv.__file__).parent
BELOW_THE_HANDLER = ("backends", "store", "etcd")


def rdzv_imports(path: Path) -> set[str]:
    """The rdzv modules that ``path`` imports, at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] == "rdzv"}


@pytest.mark.parametrize(
    "path",
    sorted(p for package in BELOW_THE_HANDLER for p in (RDZV / package).glob("*.py")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_store_backend_and_etcd_modules_do_not_import_the_handler(path: Path) -> None:
    upward = {m for m in rdzv_imports(path) if m.startswith("rdzv.dynamic")}
    assert not upward, f"{path.parent.name}/{path.name} imports {upward}"


@pytest.mark.parametrize(
    ("old", "name"),
    [
        ("rdzv.backends.c10d", "create_c10d_handler"),
        ("rdzv.backends.etcd", "create_etcd_v2_handler"),
        ("rdzv.backends.etcd_v3", "create_etcd_v3_handler"),
        ("rdzv.backends.memory", "create_memory_handler"),
    ],
)
def test_a_handler_creator_still_imports_from_its_backend_module(old: str, name: str) -> None:
    wiring = importlib.import_module("rdzv.dynamic.wiring")
    assert getattr(importlib.import_module(old), name) is getattr(wiring, name)


def test_the_backend_contract_still_imports_from_rdzv_dynamic_backend() -> None:
    old = importlib.import_module("rdzv.dynamic.backend")
    new = importlib.import_module("rdzv.backends.base")
    assert old.__all__ == new.__all__
    for name in new.__all__:
        assert getattr(old, name) is getattr(new, name), name


def test_an_unknown_name_of_a_backend_module_is_an_attribute_error() -> None:
    module = importlib.import_module("rdzv.backends.c10d")
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018
