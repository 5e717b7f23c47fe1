"""The legacy etcd rendezvous (backend ``etcd``), wire-compatible with torch's ``etcd_rendezvous``.

torch nodes and rdzv nodes given the same endpoint, ``etcd_prefix`` and run id
take part in one rendezvous: same etcd keys, same JSON state documents, same
TTLs, and each round's ``EtcdStore`` in torch's key layout.

- :mod:`rdzv.legacy.protocol`: key paths, TTLs, state documents (pure).
- :mod:`rdzv.legacy.lease`: keep-alive renewal that survives etcd errors.
- :mod:`rdzv.legacy.rendezvous`: the phases, against etcd.
- :mod:`rdzv.legacy.handler`: the ``RendezvousHandler`` and its creator.
"""

from rdzv.legacy.handler import EtcdRendezvousHandler, create_etcd_handler, create_rdzv_handler
from rdzv.legacy.rendezvous import EtcdRendezvous

__all__ = ["EtcdRendezvous", "EtcdRendezvousHandler", "create_etcd_handler", "create_rdzv_handler"]
