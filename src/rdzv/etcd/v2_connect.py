"""Building a python-etcd client from rendezvous parameters, with bounded waits.

python-etcd hands requests to urllib3, whose default retry policy repeats a
request that timed out three more times: a failing etcd would take four times
``read_timeout`` to report. The client built here, a
:class:`~rdzv.etcd.v2_client.ClusterClient`, makes one attempt per member and
request, on connections it keeps open, so a failure surfaces within
``read_timeout``; an endpoint that lists several members
(``host1:2379,host2:2379,host3:2379``) has a failed request moved to the next
member within that same ``read_timeout``.
"""

from __future__ import annotations

import os
from typing import Any

import etcd
import urllib3

from rdzv.api import RendezvousConnectionError, RendezvousParameters
from rdzv.endpoint import parse_endpoint_list
from rdzv.etcd.v2_client import ClusterClient
from rdzv.options import refuse_none

__all__ = [
    "DEFAULT_ETCD_PORT",
    "ETCD_ERRORS",
    "check_etcd_v2",
    "connection_error",
    "create_etcd_client",
    "etcd_client_options",
    "etcd_members",
]

DEFAULT_ETCD_PORT = 2379

ETCD_ERRORS: tuple[type[BaseException], ...] = (
    etcd.EtcdException,
    urllib3.exceptions.HTTPError,
    OSError,
)
"""What a python-etcd call raises when etcd is unreachable or failing."""


def _without_v2_api(error: BaseException) -> bool:
    # An etcd without the v2 API answers /v2/keys/... with a plain-text "404 page
    # not found", which python-etcd, finding no JSON error body, reports as a
    # "Bad response" with that text as the cause.
    if not isinstance(error, etcd.EtcdException) or not isinstance(error.payload, dict):
        return False
    cause = error.payload.get("cause")
    return isinstance(cause, str) and cause.strip() == "404 page not found"


def connection_error(endpoint: str, error: BaseException) -> RendezvousConnectionError:
    """A ``RendezvousConnectionError`` that names the endpoint (every member) and the cause."""
    if _without_v2_api(error):
        return RendezvousConnectionError(
            f"etcd at {endpoint} does not serve the v2 API that the etcd-v2 and etcd backends "
            "use (etcd 3.6 and later have none; 3.5 needs --enable-v2=true). Use the etcd-v3 "
            "backend, or start etcd 3.5 with --enable-v2=true."
        )
    return RendezvousConnectionError(
        f"etcd at {endpoint} failed: {type(error).__name__}: {error}. Check that etcd runs there, "
        "that this host can reach it (protocol, certificates, credentials), or raise read_timeout."
    )


def check_etcd_v2(client: etcd.Client, key: str) -> None:
    """Read ``key`` once, so that a backend that cannot work fails when it is created.

    One request, bounded by the client's ``read_timeout``: an absent key is fine;
    the read also proves the v2 API is served and the credentials may read there.

    Raises:
        RendezvousConnectionError: etcd did not answer, refused the read, or serves
            no v2 API; the message says which and what to do.
    """
    try:
        client.read(key)
    except etcd.EtcdKeyNotFound:
        pass
    except ETCD_ERRORS as e:
        raise connection_error(str(client.base_uri), e) from e


def _positive(params: RendezvousParameters, key: str, default: float) -> float:
    value = params.get_as_float(key, default)
    assert value is not None
    if value <= 0:
        raise ValueError(f"The rendezvous option '{key}' ({value}) must be positive.")
    return value


def _existing_file(params: RendezvousParameters, key: str) -> str | None:
    path = params.get(key)
    if path is None or path == "":
        return None
    if not isinstance(path, str) or not os.path.isfile(path):
        raise ValueError(f"The rendezvous option '{key}' ({path!r}) must be the path of a file.")
    return path


def etcd_members(params: RendezvousParameters) -> list[tuple[str, int]]:
    """``(host, port)`` of each etcd member that ``params.endpoint`` lists (default port 2379).

    Raises:
        ValueError: the endpoint or an item of its list is invalid.
    """
    return parse_endpoint_list(params.endpoint, DEFAULT_ETCD_PORT)


def etcd_client_options(params: RendezvousParameters) -> dict[str, Any]:
    """Validate the etcd options of ``params`` and return ``etcd.Client`` keyword arguments.

    ``host`` and ``port`` are those of the first member (see :func:`etcd_members`
    for all of them); every other option applies to every member.

    Options (torch's names): ``read_timeout`` (seconds, default 60), ``protocol``
    (``http`` or ``https``), ``ssl_cert``/``ssl_cert_key`` (client certificate),
    ``ca_cert``; rdzv adds ``username``/``password`` for etcd authentication.
    ``None`` is the default for each of them but ``read_timeout``, as in torch.

    Raises:
        RendezvousOptionError: ``read_timeout`` given as ``None``.
        ValueError: an option is invalid; the message names it.
    """
    refuse_none(params, "read_timeout")
    host, port = etcd_members(params)[0]
    given = params.get("protocol")
    protocol = "http" if given is None else str(given).strip().lower()
    if protocol not in ("http", "https"):
        raise ValueError(
            f"The rendezvous option 'protocol' ({params.get('protocol')!r}) must be http or https."
        )
    cert: str | tuple[str, str] | None = _existing_file(params, "ssl_cert")
    key = _existing_file(params, "ssl_cert_key")
    if key is not None:
        if cert is None:
            raise ValueError("The rendezvous option 'ssl_cert_key' needs 'ssl_cert' as well.")
        cert = (str(cert), key)
    username, password = params.get("username"), params.get("password")
    if bool(username) != bool(password):
        raise ValueError("The rendezvous options 'username' and 'password' go together.")
    return {
        "host": host,
        "port": port,
        "protocol": protocol,
        "read_timeout": _positive(params, "read_timeout", 60),
        "cert": cert,
        "ca_cert": _existing_file(params, "ca_cert"),
        "username": username or None,
        "password": password or None,
    }


def create_etcd_client(params: RendezvousParameters) -> etcd.Client:
    """A client for the etcd at ``params.endpoint`` (default port 2379; a list for a cluster).

    A :class:`~rdzv.etcd.v2_client.ClusterClient`, whose ``base_uri`` names every
    member. No request is sent (:func:`check_etcd_v2` sends one).

    Raises:
        ValueError: an option is invalid (see :func:`etcd_client_options`).
        RendezvousConnectionError: python-etcd refused to build the client.
    """
    options = etcd_client_options(params)
    members = etcd_members(params)
    endpoint = ",".join(f"{options['protocol']}://{host}:{port}" for host, port in members)
    del options["host"], options["port"]
    try:
        # allow_reconnect=False: with it, the constructor asks etcd for its members
        # and a request that fails would be retried on each of them without bound.
        return ClusterClient(members, allow_reconnect=False, **options)
    except ETCD_ERRORS as e:
        raise connection_error(endpoint, e) from e
