"""Torch's import path of :class:`EtcdServer`; the server lives in :mod:`rdzv.etcd.server`."""

from rdzv.etcd.server import *  # noqa: F403 - its whole public surface, under the old name
from rdzv.etcd.server import __all__  # noqa: F401 - this module re-exports the same names
