"""How long a request takes: the network both ways, and the server that applies it.

A request leaves the node, crosses the network (``one_way``), waits for the
server, which applies requests one at a time (``service`` plus the payload at the
server's ``bandwidth``), and its answer crosses back. A watch notification is a
send of the new state from the server to each watcher, and queues the same way:
a state change watched by ten thousand nodes costs the server ten thousand sends.
"""

from __future__ import annotations

import heapq
import random

import attrs

__all__ = ["ETCD", "JITTERY", "TCP_STORE", "Cores", "Host", "Latency", "Server"]


@attrs.frozen
class Latency:
    """A backend's costs, in seconds and bytes per second.

    Attributes:
        one_way: the range a one-way network delay is drawn from.
        read: server time of a read (or of sending a watch notification).
        write: server time of a write: what it takes of the server's capacity.
        bandwidth: payload bytes the server moves per second.
        commit: time a write waits before it is applied, without taking capacity
            (etcd: a raft round and an fsync, which batch many writes).
    """

    one_way: tuple[float, float]
    read: float
    write: float
    bandwidth: float
    commit: float = 0.0

    def network(self, rng: random.Random) -> float:
        low, high = self.one_way
        return rng.uniform(low, high)

    def service(self, *, write: bool, payload: int) -> float:
        return (self.write if write else self.read) + payload / self.bandwidth


ETCD = Latency(
    one_way=(0.0001, 0.0004), read=0.000025, write=0.000033, bandwidth=400e6, commit=0.001
)
"""An etcd cluster on a datacenter network, after etcd's performance guide: "a request in
less than one millisecond under light load, and more than 30,000 requests per second under
heavy load" (about 30 us of capacity a write, 1 ms to commit); not measured here."""

TCP_STORE = Latency(one_way=(0.00005, 0.0002), read=0.00002, write=0.00002, bandwidth=1e9)
"""rdzv's TCP store: one event-loop thread, in memory, no fsync."""

JITTERY = Latency(one_way=(0.0002, 0.03), read=0.0001, write=0.0005, bandwidth=100e6)
"""For hunting bugs: delays that vary a hundredfold, so that requests overtake each other."""


class Server:
    """One server queue: requests are applied one after the other."""

    def __init__(self, latency: Latency) -> None:
        self.latency = latency
        self.free_at = 0.0
        self.busy = 0.0

    def schedule(self, arrival: float, *, write: bool, payload: int) -> float:
        """When a request that arrives at ``arrival`` is applied."""
        cost = self.latency.service(write=write, payload=payload)
        done = max(arrival, self.free_at) + cost
        self.free_at = done
        self.busy += cost
        return done + (self.latency.commit if write else 0.0)


@attrs.frozen
class Host:
    """The machine the nodes share, as a benchmark runs them: ``cores`` CPUs, and the
    CPU time every step of a node takes (handling a reply, a timer, a heartbeat).

    Without one, the nodes' own work takes no time. With one, every step waits for a
    free core: when the nodes ask more of the host than it has, their steps queue,
    and a heartbeat, a poll or a reply is handled late, as on a benchmark's two cores
    running a thousand nodes.
    """

    cores: int
    step: float
    record: float = 0.0
    """CPU time each record an answer carries adds to the step that handles it: a log
    read of a thousand intents, or a board read of a thousand heartbeats, is parsed
    record by record (on etcd-v2, about 3 us a log record and 2 us a heartbeat)."""


class Cores:
    """A host's cores: each step runs on the first core free."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._free_at = [0.0] * host.cores
        self.busy = 0.0
        self.waited = 0.0
        """Seconds steps spent waiting for a core, summed."""

    def schedule(self, ready: float, records: int = 0) -> float:
        """When a step ready at ``ready``, handling an answer of ``records`` records, has run."""
        start = max(ready, self._free_at[0])
        cost = self.host.step + records * self.host.record
        done = start + cost
        heapq.heapreplace(self._free_at, done)
        self.busy += cost
        self.waited += start - ready
        return done
