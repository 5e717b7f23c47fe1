"""Options of RendezvousParameters: None where a value is needed, and names no backend reads.

The handlers here are the in-process ``memory`` backend's; the same checks on the
network backends are in tests/integration/test_option_values.py.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import rdzv
from rdzv import (
    DynamicRendezvousHandler,
    InMemoryStore,
    RendezvousHandler,
    RendezvousHandlerRegistry,
    RendezvousParameters,
    RendezvousTimeout,
    create_handler,
    get_rendezvous_handler,
)
from rdzv.backends.memory import InMemoryBackend
from rdzv.options import KNOWN_OPTIONS, warn_unknown_options

SRC = Path(rdzv.__file__).parent


def memory_params(**options: object) -> RendezvousParameters:
    return RendezvousParameters("memory", "", "options-run", 1, 1, **options)


@pytest.mark.parametrize("option", ["keep_alive_interval", "keep_alive_max_attempt"])
def test_a_keep_alive_option_given_as_none_is_refused_like_torch(option: str) -> None:
    with pytest.raises(TypeError, match=f"'{option}'.* is None") as raised:
        get_rendezvous_handler(memory_params(**{option: None}))
    # torch raises TypeError; rdzv's other invalid-option errors are ValueError.
    assert isinstance(raised.value, rdzv.RendezvousOptionError)
    assert isinstance(raised.value, ValueError)
    assert "leave it out for the default" in str(raised.value)


def test_the_rendezvous_timeouts_given_as_none_take_their_defaults_like_torch() -> None:
    handler = get_rendezvous_handler(
        memory_params(
            join_timeout=None,
            last_call_timeout=None,
            close_timeout=None,
            heartbeat_timeout=None,
            heartbeat=None,
        )
    )
    assert isinstance(handler, DynamicRendezvousHandler)
    assert handler.settings.timeout == RendezvousTimeout()


def test_every_option_refused_as_none_says_what_it_is_and_its_default() -> None:
    refused = {name for name, info in KNOWN_OPTIONS.items() if not info.none_is_default}
    assert refused == {
        "keep_alive_interval",
        "keep_alive_max_attempt",
        "read_timeout",
        "store_type",
        "timeout",
        "rank",
    }


def test_a_misspelt_option_warns_naming_the_closest_known_one() -> None:
    with pytest.warns(rdzv.RendezvousOptionWarning, match="'join_timout'") as caught:
        get_rendezvous_handler(memory_params(join_timout=30))
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "did you mean 'join_timeout'?" in message
    assert "has no effect" in message
    assert caught[0].filename == __file__  # points at the caller, not at rdzv


def test_each_unknown_option_warns_once() -> None:
    with pytest.warns(rdzv.RendezvousOptionWarning) as caught:
        get_rendezvous_handler(memory_params(keep_alive_intervall=1, xyzzy=1, join_timeout=60))
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert "'keep_alive_intervall'" in messages[0]
    assert "did you mean 'keep_alive_interval'?" in messages[0]
    assert "'xyzzy'" in messages[1]
    assert "did you mean" not in messages[1]


def test_the_registry_warns_too_when_called_directly() -> None:
    registry = RendezvousHandlerRegistry()
    with pytest.warns(rdzv.RendezvousOptionWarning, match="'clsoe_timeout'") as caught:
        registry.create_handler(memory_params(clsoe_timeout=1))
    assert caught[0].filename == __file__


def test_known_options_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_unknown_options(memory_params(**dict.fromkeys(KNOWN_OPTIONS, "1")))
        get_rendezvous_handler(
            memory_params(join_timeout=60, keep_alive_interval=1, timeout=900, heartbeat=2)
        )


def test_a_third_party_backend_is_not_checked() -> None:
    """Its options are its own: rdzv cannot know them."""
    registry = RendezvousHandlerRegistry()
    built: list[RendezvousParameters] = []

    def create(params: RendezvousParameters) -> RendezvousHandler:
        built.append(params)
        return create_handler(InMemoryStore(), InMemoryBackend(), params, backend_name="mine")

    registry.register("mine", create)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry.create_handler(RendezvousParameters("mine", "", "options-run", 1, 1, my_option=1))
    assert built


_GETTERS = {"get", "get_as_bool", "get_as_int", "get_as_float"}


def _option_readers(tree: ast.AST) -> dict[str, bool]:
    """Functions ``f(params, key, ...)`` or ``f(params, *keys)``: name -> whether the keys
    are every argument after ``params`` (else only the one after it)."""
    readers: dict[str, bool] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.args.args:
            args = node.args.args
            if args[0].arg != "params":
                continue
            if len(args) > 1 and args[1].arg == "key":
                readers[node.name] = False
            elif node.args.vararg is not None and node.args.vararg.arg == "keys":
                readers[node.name] = True
    return readers


def _option_reads(tree: ast.AST, readers: dict[str, bool]) -> Iterator[str]:
    """The option names a module reads: ``params.get*("name")``, ``reader(params, "name")``
    and ``"name" in params.config``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            keys: list[ast.expr] = []
            if (
                isinstance(func, ast.Attribute)
                and func.attr in _GETTERS
                and isinstance(func.value, ast.Name)
                and func.value.id == "params"
            ):
                keys = node.args[:1]
            elif isinstance(func, ast.Name) and func.id in readers:
                keys = node.args[1:] if readers[func.id] else node.args[1:2]
            for key in keys:
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    yield key.value
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.In, ast.NotIn)):
            where = node.comparators[0]
            in_config = (
                isinstance(where, ast.Attribute)
                and where.attr == "config"
                and isinstance(where.value, ast.Name)
                and where.value.id == "params"
            )
            if in_config and isinstance(node.left, ast.Constant):
                yield str(node.left.value)


def test_every_option_a_backend_reads_is_known() -> None:
    trees = {path: ast.parse(path.read_text(), str(path)) for path in sorted(SRC.rglob("*.py"))}
    readers: dict[str, bool] = {}
    for tree in trees.values():
        for name, variadic in _option_readers(tree).items():
            # Two modules may each define a reader of one name: a variadic one wins.
            readers[name] = readers.get(name, False) or variadic
    read: dict[str, str] = {}
    for path, tree in trees.items():
        for name in _option_reads(tree, readers):
            read.setdefault(name, str(path.relative_to(SRC)))
    # Sanity: the scan finds the reads of each kind of backend and of the helpers.
    assert {"join_timeout", "heartbeat", "store_type", "ssl_cert", "rank", "timeout"} <= set(read)
    unknown = {name: where for name, where in read.items() if name not in KNOWN_OPTIONS}
    assert not unknown, f"options read but missing from rdzv.options.KNOWN_OPTIONS: {unknown}"
