"""Backends that hold the rendezvous state: in-memory, etcd v2, c10d (TCP store)."""
