"""rdzv's options against torch 2.13's own code: the names torch reads, and ``None``.

No process is started: torch's create_handler and create_backend fail or succeed
on the options before they touch a network.
"""

from __future__ import annotations

import re
import socket
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch.distributed as dist
import torch.distributed.elastic.rendezvous as torch_rendezvous
import torch.distributed.launcher as torch_launcher
from torch.distributed.elastic.rendezvous import api as torch_api
from torch.distributed.elastic.rendezvous import c10d_rendezvous_backend as torch_c10d
from torch.distributed.elastic.rendezvous import dynamic_rendezvous as torch_dynamic

from rdzv import RendezvousOptionError, RendezvousParameters, get_rendezvous_handler
from rdzv.options import KNOWN_OPTIONS

_READS = [
    re.compile(r'params\.(?:get|get_as_int|get_as_bool)\(\s*"(\w+)"'),
    re.compile(r'params\.config\.get\(\s*"(\w+)"'),
    re.compile(r'params\.config\[\s*"(\w+)"\s*\]'),
    re.compile(r'"(\w+)"\s+(?:not\s+)?in\s+params\.config'),
    re.compile(r'rdzv_configs\[\s*"(\w+)"\s*\]'),
]
# torch's dynamic handler reads "<name>_timeout" through _get_timeout(params, "<name>").
_TIMEOUTS = re.compile(r'_get_timeout\(\s*params,\s*"(\w+)"\s*\)')


def torch_option_names() -> set[str]:
    """Every option name torch's rendezvous modules and its launcher read."""
    sources = [
        *Path(torch_rendezvous.__file__).parent.glob("*.py"),
        *Path(torch_launcher.__file__).parent.glob("*.py"),
        Path(torch_launcher.__file__).parent.parent / "run.py",
    ]
    names: set[str] = set()
    for path in sources:
        text = path.read_text()
        for pattern in _READS:
            names.update(pattern.findall(text))
        names.update(f"{name}_timeout" for name in _TIMEOUTS.findall(text))
    return names


def test_every_option_torch_reads_is_known_to_rdzv() -> None:
    names = torch_option_names()
    assert {"join_timeout", "heartbeat_timeout", "keep_alive_interval", "is_host"} <= names
    assert {"cacert", "rank", "timeout", "ssl_cert_key", "store_type"} <= names
    assert names - set(KNOWN_OPTIONS) == set()


def test_torchs_option_names_raise_no_warning() -> None:
    options = dict.fromkeys(torch_option_names(), "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_rendezvous_handler(
            RendezvousParameters("memory", "", "torch-names", 1, 1, **options)
        ).shutdown()


def torch_refuses_none(option: str) -> bool:
    """Whether torch 2.13 fails to build a handler (dynamic options) or a c10d backend
    (``read_timeout``, ``store_type``) when ``option`` is given as None."""
    params = torch_api.RendezvousParameters(
        "c10d", f"127.0.0.1:{_free_port()}", "none-run", 1, 1, **{option: None}
    )
    try:
        if option in ("read_timeout", "store_type"):
            torch_c10d.create_backend(params)
        else:
            store = dist.HashStore()
            backend = torch_c10d.C10dRendezvousBackend(store, "none-run")
            torch_dynamic.create_handler(store, backend, params)
    except (TypeError, AttributeError, ValueError):
        return True
    return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize(
    "option",
    [
        "join_timeout",
        "last_call_timeout",
        "close_timeout",
        "heartbeat_timeout",
        "keep_alive_interval",
        "keep_alive_max_attempt",
        "read_timeout",
        "store_type",
    ],
)
def test_none_is_refused_where_torch_refuses_it_and_the_default_elsewhere(option: str) -> None:
    options: dict[str, Any] = {option: None}
    params = RendezvousParameters("memory", "", f"none-{option}", 1, 1, **options)
    if option in ("read_timeout", "store_type"):
        params = RendezvousParameters("c10d", f"127.0.0.1:{_free_port()}", "none", 1, 1, **options)
    try:
        get_rendezvous_handler(params).shutdown()
        rdzv_refuses = False
    except RendezvousOptionError:
        rdzv_refuses = True
    assert rdzv_refuses == torch_refuses_none(option)
    assert rdzv_refuses == (not KNOWN_OPTIONS[option].none_is_default)
