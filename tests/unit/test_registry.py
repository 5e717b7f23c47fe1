"""The handler registry, built-in backends and entry-point plug-ins."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rdzv import (
    DynamicRendezvousHandler,
    RendezvousHandler,
    RendezvousHandlerRegistry,
    RendezvousParameters,
    get_rendezvous_handler,
)


def params(backend: str) -> RendezvousParameters:
    return RendezvousParameters(backend, "", "job", 1, 1)


def test_builtin_memory_backend_is_found_by_name() -> None:
    handler = get_rendezvous_handler(params("memory"))
    assert isinstance(handler, DynamicRendezvousHandler)
    assert handler.get_backend() == "memory"


def test_unknown_backend_error_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"'nope' is not registered.*memory"):
        RendezvousHandlerRegistry().create_handler(params("nope"))


def test_register_refuses_a_second_creator_for_a_name() -> None:
    registry = RendezvousHandlerRegistry()

    def first(p: RendezvousParameters) -> RendezvousHandler:
        raise AssertionError

    def second(p: RendezvousParameters) -> RendezvousHandler:
        raise AssertionError

    registry.register("mine", first)
    registry.register("mine", first)  # the same creator again is fine
    with pytest.raises(ValueError, match="already registered"):
        registry.register("mine", second)
    with pytest.raises(ValueError, match="non-empty"):
        registry.register("", first)


def test_handler_of_another_backend_name_is_rejected() -> None:
    registry = RendezvousHandlerRegistry()
    registry.register("alias", lambda p: get_rendezvous_handler(params("memory")))
    with pytest.raises(RuntimeError, match="does not match"):
        registry.create_handler(params("alias"))


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on sys.path where a test writes a plug-in distribution."""
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("rdzv_test_plugin")]:
        del sys.modules[name]


def write_plugin(root: Path, entry: str, module_source: str) -> None:
    (root / "rdzv_test_plugin.py").write_text(module_source)
    dist = root / "rdzv_test_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rdzv-test-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[rdzv.handlers]\n{entry}\n")


def test_plugin_backend_is_loaded_from_its_entry_point(plugin_dir: Path) -> None:
    write_plugin(
        plugin_dir,
        "plugged = rdzv_test_plugin:create",
        "from rdzv.backends.memory import create_memory_handler\n"
        "from rdzv import DynamicRendezvousHandler\n"
        "class Plugged(DynamicRendezvousHandler):\n"
        "    def get_backend(self):\n"
        "        return 'plugged'\n"
        "def create(params):\n"
        "    h = create_memory_handler(params)\n"
        "    h.__class__ = Plugged\n"
        "    return h\n",
    )
    registry = RendezvousHandlerRegistry()
    assert "plugged" in registry.names()
    assert registry.create_handler(params("plugged")).get_backend() == "plugged"


def test_broken_plugin_error_names_the_plugin_and_the_cause(plugin_dir: Path) -> None:
    write_plugin(plugin_dir, "broken = rdzv_test_plugin:create", "raise ImportError('no gpu')\n")
    registry = RendezvousHandlerRegistry()
    with pytest.raises(ValueError, match=r"'broken'.*failed to load.*no gpu"):
        registry.create_handler(params("broken"))
    # Other backends are unaffected by the broken plug-in.
    assert registry.create_handler(params("memory")).get_backend() == "memory"
