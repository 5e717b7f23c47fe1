"""The options of :class:`~rdzv.api.RendezvousParameters`: every name a backend reads.

One table, :data:`KNOWN_OPTIONS`, lists each option that one of rdzv's backends
reads, torch's names included (and the two that ``torchrun`` adds on its own,
``timeout`` and, for ``static``, ``rank``). It says how ``None`` is taken for
each, and which names are known at all.

torch takes an option given as ``None`` as "not given" for some options (the
four rendezvous timeouts, ``is_host``, the certificate paths, the legacy
backend's ``protocol``) and refuses it for the others (``keep_alive_interval``
and ``keep_alive_max_attempt`` with a ``TypeError``; ``read_timeout``,
``store_type``, ``timeout`` and ``rank`` by failing on it). rdzv does the same,
option by option, and refuses with one error,
:class:`~rdzv.api.RendezvousOptionError`, that says which option and what to
give instead. Where torch's backends disagree (``protocol``, ``etcd_prefix``,
``last_call_timeout``) ``None`` is the default: no code that works on torch
breaks, and no option means one thing here and another there.

An option that no backend reads has no effect, which hides a typo:
:func:`warn_unknown_options` warns with
:class:`~rdzv.api.RendezvousOptionWarning`, naming the closest known option.
The registry runs it for rdzv's own backends only: a third-party backend may
read options that rdzv cannot know.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping
from typing import Final

import attrs

from rdzv.api import RendezvousOptionError, RendezvousOptionWarning, RendezvousParameters

__all__ = ["KNOWN_OPTIONS", "OptionInfo", "refuse_none", "warn_unknown_options"]


@attrs.frozen
class OptionInfo:
    """What an option is for, its default, and whether ``None`` stands for that default."""

    meaning: str
    default: str
    none_is_default: bool = True


_DYNAMIC = "c10d, tcp, etcd-v2, etcd-v3, memory"

KNOWN_OPTIONS: Final[Mapping[str, OptionInfo]] = {
    # The dynamic rendezvous (create_handler), torch's names.
    "join_timeout": OptionInfo(f"seconds next_rendezvous() may take ({_DYNAMIC})", "600"),
    "last_call_timeout": OptionInfo(
        "seconds a round waits for more nodes once min_nodes have joined", "30"
    ),
    "close_timeout": OptionInfo("seconds closing the rendezvous may take", "30"),
    "heartbeat_timeout": OptionInfo("seconds one heartbeat write may take", "5"),
    "heartbeat": OptionInfo("another name of heartbeat_timeout", "5"),
    "keep_alive_interval": OptionInfo("seconds between heartbeats", "5", none_is_default=False),
    "keep_alive_max_attempt": OptionInfo(
        "missed heartbeats before a node counts as dead", "3", none_is_default=False
    ),
    # c10d (rdzv's TCP store or a file store).
    "store_type": OptionInfo("the c10d store, tcp or file", "tcp", none_is_default=False),
    "read_timeout": OptionInfo(
        "seconds a store or etcd request may take", "60", none_is_default=False
    ),
    "is_host": OptionInfo("whether this node hosts the c10d TCP store", "decided by the endpoint"),
    "connect_timeout": OptionInfo("seconds to keep trying a TCP store not listening yet", "10"),
    "auth_token": OptionInfo("shared secret of the TCP store", "$RDZV_AUTH_TOKEN"),
    # etcd-v2, etcd-v3 and the legacy etcd backend.
    "protocol": OptionInfo("http or https, to reach etcd", "http"),
    "ssl_cert": OptionInfo("path of the client certificate for etcd", "none"),
    "ssl_cert_key": OptionInfo("path of the client certificate's key for etcd", "none"),
    "ca_cert": OptionInfo("path of the CA certificate etcd's is checked against", "none"),
    "username": OptionInfo("etcd user name", "none"),
    "password": OptionInfo("etcd password", "none"),
    "etcd_prefix": OptionInfo("etcd key prefix of the rendezvous", "/rdzv; legacy etcd: torch's"),
    "ttl": OptionInfo("seconds the etcd state outlives its last write", "7200"),
    # The legacy etcd backend's names of the certificate options (torch's).
    "cert": OptionInfo("legacy etcd: path of the client certificate", "none"),
    "key": OptionInfo("legacy etcd: path of the client certificate's key", "none"),
    "cacert": OptionInfo("legacy etcd: path of the CA certificate", "none"),
    # Legacy etcd and static; torchrun passes `timeout` to every backend.
    "timeout": OptionInfo(
        "seconds the legacy etcd or static rendezvous may take", "600", none_is_default=False
    ),
    "rank": OptionInfo("this node's rank in a static rendezvous", "none", none_is_default=False),
}
"""Every option a backend of rdzv reads (torch's names among them) -> what it is."""


def refuse_none(params: RendezvousParameters, *keys: str) -> None:
    """Raise if one of ``keys`` is given as ``None`` and ``None`` is not its default.

    Backends call it for the options they read, before reading them.

    Raises:
        RendezvousOptionError: the first such option, with what to give instead.
    """
    for key in keys:
        info = KNOWN_OPTIONS[key]
        if info.none_is_default or key not in params.config or params.config[key] is not None:
            continue
        raise RendezvousOptionError(
            f"The rendezvous option '{key}' ({info.meaning}) is None, which is not a value "
            f"of it (torch refuses it too). Give it a value, or leave it out for the "
            f"default ({info.default})."
        )


def warn_unknown_options(params: RendezvousParameters, stacklevel: int = 2) -> None:
    """Warn once for each option of ``params`` that no backend of rdzv reads.

    Each warning names the option and the closest known name, if one is close.
    Python's default warning filter shows a given message once per place.

    Warns:
        RendezvousOptionWarning: an unknown option; it has no effect.
    """
    for key in params.config:
        if key in KNOWN_OPTIONS:
            continue
        close = difflib.get_close_matches(key, KNOWN_OPTIONS, n=1)
        hint = (
            f"did you mean '{close[0]}'?"
            if close
            else "see the options of each backend in rdzv's documentation (backends)."
        )
        warnings.warn(
            f"The rendezvous option '{key}' is read by no backend of rdzv and has no "
            f"effect; {hint}",
            RendezvousOptionWarning,
            stacklevel=stacklevel + 1,
        )
