"""Store: what a subclass written by a user gets from the base class."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest

from rdzv import Store
from rdzv.store import DEFAULT_STORE_TIMEOUT

_CORE_OPERATIONS = (
    "set",
    "get",
    "add",
    "compare_set",
    "wait",
    "check",
    "delete_key",
    "num_keys",
)


class _DictStore(Store):
    """A store that implements only what its user needs, as torch's tests write them."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, bytes] = {}

    def set(self, key: str, value: str | bytes) -> None:
        self.data[key] = value.encode() if isinstance(value, str) else value

    def get(self, key: str) -> bytes:
        return self.data[key]


class _NoInitStore(Store):
    """A subclass that never calls ``Store.__init__``."""

    def set(self, key: str, value: str | bytes) -> None:
        pass


def test_a_subclass_implementing_only_what_it_uses_can_be_instantiated() -> None:
    store = _DictStore()
    store.set("k", "v")
    assert store.get("k") == b"v"
    store.multi_set(["a", "b"], ["1", b"2"])
    assert store.multi_get(["a", "b"]) == [b"1", b"2"]


@pytest.mark.parametrize(
    ("operation", "args"),
    [
        ("add", ("k", 1)),
        ("compare_set", ("k", "", "v")),
        ("wait", (["k"],)),
        ("check", (["k"],)),
        ("delete_key", ("k",)),
        ("num_keys", ()),
    ],
)
def test_an_operation_the_subclass_lacks_raises_not_implemented_naming_it(
    operation: str, args: tuple[object, ...]
) -> None:
    with pytest.raises(NotImplementedError, match=rf"_DictStore\.{operation}\(\)") as failure:
        getattr(_DictStore(), operation)(*args)
    # NotImplementedError is a RuntimeError, as the error of torch's Store is.
    assert isinstance(failure.value, RuntimeError)
    assert "Define it in _DictStore" in str(failure.value)


def test_a_default_built_on_a_missing_operation_names_that_operation() -> None:
    with pytest.raises(NotImplementedError, match=r"_DictStore\.check\(\)"):
        _DictStore().get_if_exists("k")


def test_a_subclass_that_skips_init_has_the_default_timeout() -> None:
    store = _NoInitStore()
    assert store.timeout == DEFAULT_STORE_TIMEOUT
    store.set_timeout(timedelta(seconds=3))
    assert store.timeout == timedelta(seconds=3)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("rdzv.store.memory", "InMemoryStore"),
        ("rdzv.store.prefix", "PrefixStore"),
        ("rdzv.store.etcd", "EtcdStore"),
        ("rdzv.store.etcd_v3", "EtcdV3Store"),
        ("rdzv.store.file", "FileStore"),
        ("rdzv.store.tcp", "TCPStore"),
    ],
)
def test_every_store_of_rdzv_implements_every_operation(module: str, name: str) -> None:
    """Store is no longer abstract, so mypy does not refuse a store that lacks an
    operation: this test does, for rdzv's own."""
    store_class = getattr(importlib.import_module(module), name)
    missing = [op for op in _CORE_OPERATIONS if getattr(store_class, op) is getattr(Store, op)]
    assert missing == []
