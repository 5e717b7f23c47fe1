"""The old import path of rdzv's etcd v2 client construction, now :mod:`rdzv.etcd.v2_connect`."""

from rdzv.etcd.v2_connect import *  # noqa: F403 - its whole public surface, under the old name
from rdzv.etcd.v2_connect import __all__  # noqa: F401 - this module re-exports the same names
