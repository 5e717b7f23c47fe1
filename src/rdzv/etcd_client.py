"""The old import path of rdzv's etcd v2 client construction, now :mod:`rdzv.etcd.v2_connect`."""

from rdzv.etcd.v2_connect import (
    DEFAULT_ETCD_PORT,
    ETCD_ERRORS,
    check_etcd_v2,
    connection_error,
    create_etcd_client,
    etcd_client_options,
    etcd_members,
)

__all__ = [
    "DEFAULT_ETCD_PORT",
    "ETCD_ERRORS",
    "check_etcd_v2",
    "connection_error",
    "create_etcd_client",
    "etcd_client_options",
    "etcd_members",
]
