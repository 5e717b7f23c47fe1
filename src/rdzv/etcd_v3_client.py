"""The old import path of rdzv's etcd v3 client, now :mod:`rdzv.etcd.v3_client`."""

from rdzv.etcd.v3_client import (
    MAX_TXN_OPS,
    EtcdV3Client,
    EtcdV3ConnectionError,
    EtcdV3Error,
    KeyValue,
    WatchEvent,
    create_etcd_v3_client,
    prefix_range_end,
)

__all__ = [
    "MAX_TXN_OPS",
    "EtcdV3Client",
    "EtcdV3ConnectionError",
    "EtcdV3Error",
    "KeyValue",
    "WatchEvent",
    "create_etcd_v3_client",
    "prefix_range_end",
]
