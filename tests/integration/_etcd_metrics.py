"""What a real etcd says it served, from its own ``/metrics``: for tests that count requests."""

from __future__ import annotations

import re
import urllib.request

from rdzv.etcd_server import EtcdServer


def metric(server: EtcdServer | str, name: str, **labels: str) -> float:
    """The sum of metric ``name`` over the series whose labels include ``labels``;
    ``server`` an etcd, or the ``host:port`` of one (http)."""
    url = f"http://{server}" if isinstance(server, str) else server.get_client_url()
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read()
    total = 0.0
    for line in text.decode().splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total
