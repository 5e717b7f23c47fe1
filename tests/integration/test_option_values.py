"""Options on the real backends: ``None`` refused or taken as the default (as torch does,
option by option), and no warning for an option a backend reads.

The rules themselves are in ``rdzv.options``; tests/unit/test_options.py checks them on
the in-process backend.
"""

from __future__ import annotations

import uuid
import warnings
from typing import Any

import pytest
from _ports import free_port

from rdzv import (
    RendezvousHandler,
    RendezvousOptionError,
    RendezvousOptionWarning,
    RendezvousParameters,
    get_rendezvous_handler,
)
from rdzv.etcd_server import EtcdServer


def run_params(backend: str, endpoint: str, **options: Any) -> RendezvousParameters:
    run_id = f"options-{uuid.uuid4().hex[:12]}"
    return RendezvousParameters(backend, endpoint, run_id, 1, 1, "127.0.0.1", **options)


@pytest.fixture
def endpoint(backend: str, request: pytest.FixtureRequest) -> str:
    """Where ``backend`` runs: a free port for c10d and static, else the session's etcd
    (for etcd-v3, the one with the v2 API off)."""
    if backend in ("etcd-v2", "etcd"):
        server: EtcdServer = request.getfixturevalue("etcd_server")
    elif backend == "etcd-v3":
        server = request.getfixturevalue("etcd_v3_server")
    else:
        return f"127.0.0.1:{free_port()}"
    return server.get_endpoint()


@pytest.mark.parametrize(
    ("backend", "option"),
    [
        ("c10d", "keep_alive_interval"),
        ("c10d", "keep_alive_max_attempt"),
        ("c10d", "read_timeout"),
        ("c10d", "store_type"),
        ("tcp", "read_timeout"),
        ("etcd-v2", "read_timeout"),
        ("etcd-v2", "keep_alive_interval"),
        ("etcd-v3", "read_timeout"),
        ("etcd", "read_timeout"),
        ("etcd", "timeout"),
        ("static", "rank"),
        ("static", "timeout"),
    ],
)
def test_none_for_an_option_that_needs_a_value_is_refused_alike(
    endpoint: str, backend: str, option: str
) -> None:
    options: dict[str, Any] = {"rank": 0} if backend == "static" else {}
    options[option] = None
    with pytest.raises(RendezvousOptionError, match=f"option '{option}' .* is None") as raised:
        get_rendezvous_handler(run_params(backend, endpoint, **options))
    assert isinstance(raised.value, TypeError)  # what torch raises for these
    assert "leave it out for the default" in str(raised.value)


def _close(handler: RendezvousHandler) -> None:
    assert handler.shutdown()


@pytest.mark.parametrize(
    ("backend", "options"),
    [
        (
            "c10d",
            {
                "is_host": None,
                "connect_timeout": None,
                "join_timeout": None,
                "last_call_timeout": None,
                "close_timeout": None,
                "heartbeat": None,
                "auth_token": None,
            },
        ),
        (
            "etcd-v2",
            {"protocol": None, "ssl_cert": None, "ca_cert": None, "ttl": None, "username": None},
        ),
        ("etcd-v3", {"protocol": None, "etcd_prefix": None, "ssl_cert_key": None}),
        ("etcd", {"last_call_timeout": None, "etcd_prefix": None, "cert": None, "cacert": None}),
    ],
)
def test_none_for_an_option_with_an_unset_default_is_that_default(
    endpoint: str, backend: str, options: dict[str, Any]
) -> None:
    handler = get_rendezvous_handler(run_params(backend, endpoint, **options))
    try:
        info = handler.next_rendezvous()
        assert (info.rank, info.world_size) == (0, 1)
    finally:
        _close(handler)


@pytest.mark.parametrize(
    ("backend", "options"),
    [
        # torchrun adds `timeout` to every backend's options, and `rank` for static.
        ("c10d", {"timeout": 900, "read_timeout": 30, "is_host": True, "heartbeat_timeout": 5}),
        ("tcp", {"timeout": 900, "connect_timeout": 5, "join_timeout": 60}),
        ("etcd-v2", {"timeout": 900, "etcd_prefix": "/rdzv-options", "ttl": 60}),
        ("etcd-v3", {"timeout": 900, "protocol": "http", "read_timeout": 20}),
        ("etcd", {"timeout": 900, "last_call_timeout": 1, "protocol": "http"}),
        ("static", {"timeout": 900, "rank": 0}),
    ],
)
def test_options_a_backend_reads_raise_no_warning(
    endpoint: str, backend: str, options: dict[str, Any]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        handler = get_rendezvous_handler(run_params(backend, endpoint, **options))
    _close(handler)


@pytest.mark.parametrize("backend", ["c10d"])
def test_a_misspelt_option_of_a_network_backend_warns(endpoint: str, backend: str) -> None:
    with pytest.warns(RendezvousOptionWarning, match="'read_timout'.*did you mean 'read_timeout'"):
        handler = get_rendezvous_handler(run_params(backend, endpoint, read_timout=5))
    _close(handler)
