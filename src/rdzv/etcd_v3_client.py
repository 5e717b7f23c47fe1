"""The old import path of rdzv's etcd v3 client, now :mod:`rdzv.etcd.v3_client`."""

from rdzv.etcd.v3_client import *  # noqa: F403 - its whole public surface, under the old name
from rdzv.etcd.v3_client import __all__  # noqa: F401 - this module re-exports the same names
