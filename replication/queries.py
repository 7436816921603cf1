"""Read models: what the rest of a node may read of the replicated state, locally and never
through the log. Nothing outside replication/ reads `BrokerState` itself (tests/test_layout.py
checks it), so the state's shape can change without breaking the node, its management API or
its metrics.
"""

from __future__ import annotations

from warrenmq.replication.queue import Queue
from warrenmq.replication.state import BrokerState, Permission, User


class Queries:
    """The `query_*` half of `Broker`: reads of `self.state`."""

    state: BrokerState

    def query_live_incarnation(self, node: str) -> int | None:
        incarnation = self.state.incarnations.get(node)
        if incarnation is None or node in self.state.down_nodes:
            return None
        return incarnation

    def query_last_incarnation(self, node: str) -> int:
        """The newest incarnation of `node` the cluster has heard of (0: none)."""
        announced = self.state.incarnations.get(node, 0)
        return max(announced, self.state.entry_seqs.get(node, (0, 0))[0])

    def query_pid(self, node: str) -> int | None:
        return self.state.pids.get(node)

    def query_user(self, user: str) -> User | None:
        return self.state.users.get(user)

    def query_vhost_exists(self, vhost: str) -> bool:
        return vhost in self.state.vhosts

    def query_permission(self, user: str, vhost: str) -> Permission | None:
        return self.state.permissions.get((user, vhost))

    def query_alarms(self) -> set[tuple[str, str]]:
        return self.state.alarms

    def query_consumer_count(self, node: str) -> int:
        """Consumers on channels of `node`'s client connections."""
        return sum(
            len(channel.consumers)
            for ref, channel in self.state.channels.items()
            if ref.node == node
        )

    def query_queue(self, vhost: str, queue: str) -> Queue | None:
        return self.state.vhosts[vhost].queues.get(queue) if vhost in self.state.vhosts else None

    def query_next_deadline_ms(self) -> int | None:
        """When the next message expiry or queue expiry is due (for the leader's Tick)."""
        deadlines = []
        for vhost in self.state.vhosts.values():
            for queue in vhost.queues.values():
                head = queue.head()
                if head is not None and head.expires_at_ms is not None:
                    deadlines.append(head.expires_at_ms + 1)
                if queue.limits.expires_ms is not None and not queue.consumers:
                    deadlines.append(queue.last_used_ms + queue.limits.expires_ms)
            deadlines += [e.delayed[0][0] for e in vhost.exchanges.values() if e.delayed]
        return min(deadlines, default=None)
