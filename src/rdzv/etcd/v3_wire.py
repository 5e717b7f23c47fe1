"""What etcd's v3 JSON gateway sends and means: typed results, decoding, and errors.

The gateway writes int64 fields as JSON strings (and leaves out zeros), and keys
and values as base64; :class:`KeyValue` and :class:`WatchEvent` hold them decoded.
A failure becomes :class:`EtcdV3Error`, or :class:`EtcdV3ConnectionError` when
the member could not serve it (the caller may try another member).

Nothing here sends a request, and nothing needs the ``etcd3`` extra.
"""

from __future__ import annotations

import binascii
import http.client
import json
from base64 import b64decode, b64encode
from typing import Any

import attrs
import urllib3.exceptions

__all__ = [
    "API_PATH",
    "TRANSPORT_ERRORS",
    "EtcdV3ConnectionError",
    "EtcdV3Error",
    "KeyValue",
    "WatchEvent",
    "b64",
    "connection_error",
    "etcd_message",
    "exhausted",
    "header_revision",
    "int_field",
    "is_member_failure",
    "key_value",
    "prefix_range_end",
    "status_error",
    "unb64",
]

API_PATH = "/v3/"
"""The gateway's path on etcd 3.4 and later; set, not discovered, to spare a request."""

TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)
"""What connecting to a member, or talking to it, raises when it cannot be reached or
breaks off (urllib3's and http.client's errors, timeouts, resets, and
:class:`EtcdV3ConnectionError`, an ``OSError`` too)."""

_UNAVAILABLE = frozenset({408, 503, 504})
"""HTTP statuses of etcd's gateway for a member that cannot serve now (gRPC Unavailable,
DeadlineExceeded), as etcd3gw reads them for other requests."""

_MEMBER_TROUBLE = ("etcdserver: request timed out", "leader changed", "no leader")
"""etcd's words for a member that lost its leader, whatever the status it came with."""


class EtcdV3Error(RuntimeError):
    """etcd answered a request with an error (denied, invalid, or a failure of its own)."""


class EtcdV3ConnectionError(EtcdV3Error, ConnectionError):
    """etcd could not be reached, or did not answer within the read timeout."""


@attrs.frozen
class KeyValue:
    """One etcd key as a range or a watch reports it."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0


@attrs.frozen
class WatchEvent:
    """A change of a watched key: its new value, or its deletion (``deleted``)."""

    kv: KeyValue
    deleted: bool


def prefix_range_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range or watch cover every key starting with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\x00"  # every key
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def b64(data: bytes) -> str:
    """``data`` as the gateway takes keys and values: base64 text."""
    return b64encode(data).decode("ascii")


def unb64(data: object) -> bytes:
    """The bytes of a base64 field the gateway sent.

    Raises:
        EtcdV3Error: ``data`` is not base64 text.
    """
    if not isinstance(data, str):
        raise EtcdV3Error(f"etcd's gateway sent {type(data).__name__} where base64 was expected.")
    try:
        return b64decode(data, validate=True)
    except binascii.Error as e:
        raise EtcdV3Error(f"etcd's gateway sent invalid base64 ({e}).") from e


def int_field(data: object) -> int:
    """An int64 field the gateway sent (``None``, a left-out zero, is 0).

    Raises:
        EtcdV3Error: ``data`` is no integer, nor a string of one.
    """
    # The gateway writes int64 fields as JSON strings and leaves out zeros.
    if data is None:
        return 0
    if isinstance(data, bool) or not isinstance(data, (int, str)):
        raise EtcdV3Error(f"etcd's gateway sent {data!r} where an integer was expected.")
    try:
        return int(data)
    except ValueError as e:
        raise EtcdV3Error(f"etcd's gateway sent {data!r} where an integer was expected.") from e


def key_value(item: Any) -> KeyValue:
    """A key-value object of a range, a transaction or a watch event, decoded.

    Raises:
        EtcdV3Error: ``item`` is not a key-value object.
    """
    if not isinstance(item, dict):
        raise EtcdV3Error(f"etcd's gateway sent {item!r} where a key-value was expected.")
    return KeyValue(
        key=unb64(item.get("key", "")),
        value=unb64(item.get("value", "")),
        create_revision=int_field(item.get("create_revision")),
        mod_revision=int_field(item.get("mod_revision")),
        lease=int_field(item.get("lease")),
    )


def header_revision(result: Any) -> int:
    """etcd's revision from the header of an answer (0 when it has none)."""
    header = result.get("header") if isinstance(result, dict) else None
    return int_field(header.get("revision")) if isinstance(header, dict) else 0


def etcd_message(detail: str | None) -> str:
    """etcd's own message out of a gateway error body (JSON with ``message``), or the body."""
    if not detail:
        return "no detail"
    try:
        body = json.loads(detail)
    except ValueError:
        return detail.strip()[:300]
    if isinstance(body, dict):
        message = body.get("message") or body.get("error")
        if isinstance(message, str):
            return message
    return detail.strip()[:300]


def connection_error(url: str, what: str, error: BaseException) -> EtcdV3ConnectionError:
    """The error for request ``what`` to the member at ``url`` that failed with ``error``."""
    detail = getattr(error, "detail_text", None) or str(error) or type(error).__name__
    return EtcdV3ConnectionError(
        f"etcd at {url} did not answer ({what}): {type(error).__name__}: {detail}"
    )


def status_error(url: str, what: str, status: int, detail: str | None) -> EtcdV3Error:
    """The error for request ``what`` that the member at ``url`` answered with an error.

    ``status`` is the HTTP status (0 when unknown), ``detail`` the body. A member
    that cannot serve now gives an :class:`EtcdV3ConnectionError`.
    """
    message = etcd_message(detail)
    code = f"HTTP {status}: " if status else ""
    if status in _UNAVAILABLE:
        # etcd's gateway answers so when the member cannot serve now: no
        # leader, a request timed out, the leader changed.
        return EtcdV3ConnectionError(f"etcd at {url} could not serve {what}: {code}{message}")
    return EtcdV3Error(f"etcd at {url} refused {what}: {code}{message}")


def is_member_failure(error: BaseException) -> bool:
    """Whether ``error`` is the member's trouble, so that another member may serve the request."""
    if isinstance(error, EtcdV3ConnectionError):
        return True
    return isinstance(error, EtcdV3Error) and any(sign in str(error) for sign in _MEMBER_TROUBLE)


def exhausted(endpoint: str, failures: list[tuple[str, BaseException]]) -> EtcdV3Error:
    """The error when every member of ``endpoint`` failed, naming each failure."""
    detail = "; ".join(str(e) for _, e in failures)
    return EtcdV3ConnectionError(f"no member of the etcd cluster {endpoint} answered: {detail}")
