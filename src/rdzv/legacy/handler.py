"""``EtcdRendezvousHandler``: the legacy etcd rendezvous as a handler (backend ``etcd``).

Options are torch's (``timeout``, ``last_call_timeout``, ``etcd_prefix``,
``protocol``, ``cacert``, ``cert``, ``key``), plus the etcd client options of
:func:`rdzv.etcd.v2_connect.etcd_client_options` (``read_timeout``, ``username``,
``password``; ``ca_cert``, ``ssl_cert``, ``ssl_cert_key`` as other names of the
three certificate options).

As in torch, ``timeout`` given as ``None`` is refused
(:class:`~rdzv.api.RendezvousOptionError`); for the other options ``None`` is
the default.
"""

from __future__ import annotations

import logging
import os
from typing import Final

from rdzv.api import (
    RendezvousHandler,
    RendezvousInfo,
    RendezvousParameters,
    RendezvousStoreInfo,
)
from rdzv.etcd.v2_connect import create_etcd_client
from rdzv.legacy import protocol
from rdzv.legacy.rendezvous import EtcdRendezvous
from rdzv.options import refuse_none

__all__ = [
    "DEFAULT_LAST_CALL_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "EtcdRendezvousHandler",
    "create_etcd_handler",
    "create_rdzv_handler",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 600.0
"""torch's default ``timeout``: seconds ``next_rendezvous`` may take."""
DEFAULT_LAST_CALL_TIMEOUT: Final = 30.0
"""torch's default ``last_call_timeout``: seconds a round stays open after ``min_nodes``."""

# torch's legacy option names -> the names rdzv's etcd client options use.
_LEGACY_NAMES: Final = {"cacert": "ca_cert", "cert": "ssl_cert", "key": "ssl_cert_key"}

# Keep-alive renewals must fail well within the TTL of the keys they renew, so
# the next attempt still comes in time.
_LEASE_READ_TIMEOUT: Final = protocol.KEEP_ALIVE_TTL / 4


class EtcdRendezvousHandler(RendezvousHandler):
    """The handler of backend ``etcd`` over an :class:`EtcdRendezvous` (torch's signature).

    Each round's store is an ``EtcdStore`` under ``<prefix>run_<id>/rdzv/v_<n>/kv``,
    readable by torch's ``EtcdStore`` too; rank 0 of each round publishes the
    master address in it.
    """

    def __init__(self, rdzv_impl: EtcdRendezvous, local_addr: str | None) -> None:
        self._rdzv_impl = rdzv_impl
        self._local_addr = local_addr
        self._round = 0

    @property
    def round(self) -> int:
        """The round (torch's ``version``) this node completed last; 0 before the first."""
        return self._round

    def get_backend(self) -> str:
        return "etcd"

    def next_rendezvous(self) -> RendezvousInfo:
        """Leave the current round (if any) and block until this node is in a final one.

        Raises:
            RendezvousClosedError: the rendezvous is closed.
            RendezvousTimeoutError: no round completed within ``timeout``.
            RendezvousConnectionError: etcd failed or could not be reached.
            RendezvousStateError: the state in etcd is not a legacy rendezvous state.
        """
        version, rank, world_size = self._rdzv_impl.rendezvous_barrier()
        self._round = int(version)
        store = self._rdzv_impl.setup_kv_store(version)
        bootstrap = RendezvousStoreInfo.build(rank, store, local_addr=self._local_addr)
        return RendezvousInfo(store, rank, world_size, bootstrap)

    def is_closed(self) -> bool:
        """Whether the rendezvous is closed.

        Raises:
            RendezvousConnectionError, RendezvousStateError: as :meth:`next_rendezvous`.
        """
        state = self._rdzv_impl.current_state()
        return state is not None and state.status == "closed"

    def set_closed(self) -> None:
        """Close the rendezvous for every node of the run.

        Raises:
            RendezvousConnectionError, RendezvousStateError: as :meth:`next_rendezvous`.
        """
        self._rdzv_impl.set_closed()

    def num_nodes_waiting(self) -> int:
        """Nodes waiting for the next round while the current one is final; 0 otherwise.

        Raises:
            RendezvousConnectionError, RendezvousStateError: as :meth:`next_rendezvous`.
        """
        state = self._rdzv_impl.current_state()
        if state is None or state.status != "final":
            return 0
        return state.num_workers_waiting or 0

    def get_run_id(self) -> str:
        return self._rdzv_impl.run_id

    def shutdown(self) -> bool:
        """Close the rendezvous (as torch does) and stop renewing this node's keys.

        Returns ``False``, after logging why, when etcd could not be told.
        """
        try:
            self.set_closed()
            return True
        except Exception:
            logger.warning("Could not close rendezvous '%s'.", self.get_run_id(), exc_info=True)
            return False
        finally:
            self._rdzv_impl.stop_leases()


def _client_params(params: RendezvousParameters, **overrides: object) -> RendezvousParameters:
    """``params`` with torch's legacy certificate option names turned into rdzv's."""
    config = dict(params.config)
    for legacy, name in _LEGACY_NAMES.items():
        path = config.pop(legacy, None)
        if path is None or path == "":
            continue
        if not isinstance(path, str) or not os.path.isfile(path):
            raise ValueError(
                f"The rendezvous option '{legacy}' ({path!r}) must be the path of a file."
            )
        if config.get(name) not in (None, "", path):
            raise ValueError(
                f"The rendezvous options '{legacy}' and '{name}' name the same setting with "
                "different values; give only one of them."
            )
        config[name] = path
    config.update(overrides)
    return RendezvousParameters(
        params.backend,
        params.endpoint,
        params.run_id,
        params.min_nodes,
        params.max_nodes,
        params.local_addr,
        **config,
    )


def _seconds(params: RendezvousParameters, key: str, default: float) -> float:
    value = params.get_as_float(key)
    return default if value is None else value


def create_rdzv_handler(params: RendezvousParameters) -> EtcdRendezvousHandler:
    """Build the legacy etcd handler for ``params`` (torch's function of the same name).

    The handler lays out the run's keys in etcd here, as torch's does, so an etcd
    that cannot be used fails the creation, within ``read_timeout``.

    Raises:
        ValueError: an invalid option; the message names it.
        RendezvousConnectionError: etcd did not answer within ``read_timeout``,
            refused the request, or serves no v2 API; the message says what to do.
    """
    refuse_none(params, "timeout")
    prefix = params.get("etcd_prefix")
    if prefix is None:
        prefix = protocol.DEFAULT_ETCD_PREFIX
    if not isinstance(prefix, str):
        raise ValueError(f"The rendezvous option 'etcd_prefix' ({prefix!r}) must be a string.")
    client_params = _client_params(params)
    client = create_etcd_client(client_params)
    read_timeout = client.read_timeout
    lease_client = create_etcd_client(
        _client_params(params, read_timeout=min(read_timeout, _LEASE_READ_TIMEOUT))
    )
    rdzv = EtcdRendezvous(
        client,
        prefix,
        params.run_id,
        params.min_nodes,
        params.max_nodes,
        _seconds(params, "timeout", DEFAULT_TIMEOUT),
        _seconds(params, "last_call_timeout", DEFAULT_LAST_CALL_TIMEOUT),
        lease_client=lease_client,
    )
    return EtcdRendezvousHandler(rdzv, params.local_addr)


create_etcd_handler = create_rdzv_handler
"""The creator registered as backend ``etcd``."""
