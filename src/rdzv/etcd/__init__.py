"""etcd as rdzv's distributed engine: reaching a cluster's members, and running one locally."""
