"""Torch's import path of :class:`EtcdServer`; the server lives in :mod:`rdzv.etcd.server`."""

from rdzv.etcd.server import (
    BINARY_ENV_VARS,
    EtcdBinaryNotFoundError,
    EtcdServer,
    EtcdServerError,
    EtcdServerTimeoutError,
    find_etcd_binary,
)

__all__ = [
    "BINARY_ENV_VARS",
    "EtcdBinaryNotFoundError",
    "EtcdServer",
    "EtcdServerError",
    "EtcdServerTimeoutError",
    "find_etcd_binary",
]
