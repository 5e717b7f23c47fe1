# Stubs for etcd3gw 2.7 (the parts rdzv uses and their neighbours), so that
# `mypy --strict src` checks rdzv's calls without etcd3gw installed.
from etcd3gw import exceptions as exceptions
from etcd3gw.client import Etcd3Client as Etcd3Client
from etcd3gw.client import client as client
from etcd3gw.lease import Lease as Lease

__all__ = ["Etcd3Client", "Lease", "client", "exceptions"]
