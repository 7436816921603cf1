"""Read models: what the rest of a node may read of the replicated state, locally and never
through the log. Nothing outside replication/ reads `BrokerState` itself (tests/test_layout.py
checks it), so the state's shape can change without breaking the node, its management API or
its metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

from warrenmq.replication import commands as c
from warrenmq.replication.queue import Queue
from warrenmq.replication.state import (
    BrokerState,
    Exchange,
    Permission,
    User,
    Vhost,
    find_consumer,
)


@dataclass(frozen=True, slots=True)
class BindingView:
    source: str  # the exchange it binds from
    destination_kind: str  # "queue" or "exchange"
    destination: str
    routing_key: str
    arguments: c.Arguments


@dataclass(frozen=True, slots=True)
class ExchangeView:
    vhost: str
    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: c.Arguments
    bindings: tuple[BindingView, ...]  # with this exchange as the source


@dataclass(frozen=True, slots=True)
class ConsumerView:
    channel: c.ChannelRef
    consumer_tag: str
    no_ack: bool
    exclusive: bool
    prefetch_count: int
    priority: int
    active: bool  # False while a single active consumer queue serves another one


@dataclass(frozen=True, slots=True)
class QueueView:
    vhost: str
    name: str
    type: str  # "classic" or "quorum"
    durable: bool
    auto_delete: bool
    exclusive: bool
    arguments: c.Arguments
    ready: int
    unacked: int
    ready_bytes: int
    single_active_consumer: bool
    active_consumer_tag: str | None  # the single active consumer's, if it has one
    consumers: tuple[ConsumerView, ...]
    policy: str | None = None
    operator_policy: str | None = None
    policy_definition: c.Arguments | None = None  # what its policies set, merged


@dataclass(frozen=True, slots=True)
class PolicyView:
    vhost: str
    name: str
    pattern: str
    apply_to: str
    priority: int
    definition: c.Arguments


@dataclass(frozen=True, slots=True)
class VhostView:
    name: str
    exchanges: dict[str, ExchangeView]
    queues: dict[str, QueueView]


@dataclass(frozen=True, slots=True)
class ChannelView:
    consumers: int
    unacked: int
    prefetch_count: int
    global_prefetch_count: int


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

    def query_alarms(self) -> frozenset[tuple[str, str]]:
        return frozenset(self.state.alarms)

    def query_users(self) -> dict[str, User]:
        return dict(self.state.users)

    def query_permissions(self) -> dict[tuple[str, str], Permission]:
        """Every (user, vhost) that has permissions, and what they are."""
        return dict(self.state.permissions)

    def query_policies(self, operator: bool = False) -> list[PolicyView]:
        """Every policy (or operator policy), by vhost and name."""
        found = []
        for vhost_name, vhost in self.state.vhosts.items():
            table = vhost.operator_policies if operator else vhost.policies
            found += [
                PolicyView(
                    vhost_name,
                    policy.name,
                    policy.pattern,
                    policy.apply_to,
                    policy.priority,
                    dict(policy.definition),
                )
                for _, policy in sorted(table.items())
            ]
        return found

    def query_vhost_names(self) -> list[str]:
        return list(self.state.vhosts)

    def query_vhost(self, name: str) -> VhostView | None:
        """A vhost's exchanges and queues, as they are now."""
        vhost = self.state.vhosts.get(name)
        return _vhost_view(name, vhost) if vhost is not None else None

    def query_queues(self) -> list[QueueView]:
        """Every queue of every vhost."""
        return [
            _queue_view(queue)
            for vhost in self.state.vhosts.values()
            for queue in vhost.queues.values()
        ]

    def query_holds_channel(self, ref: c.ChannelRef) -> bool:
        """Whether the broker still holds `ref`'s consumers and deliveries (not released)."""
        return ref in self.state.channels

    def query_channel(self, ref: c.ChannelRef) -> ChannelView | None:
        channel = self.state.channels.get(ref)
        if channel is None:
            return None
        return ChannelView(
            len(channel.consumers),
            len(channel.unacked),
            channel.prefetch_count,
            channel.global_prefetch_count,
        )

    def query_consumer_count(self, node: str) -> int:
        """Consumers on channels of `node`'s client connections."""
        return sum(
            len(channel.consumers)
            for ref, channel in self.state.channels.items()
            if ref.node == node
        )

    def query_queue(self, vhost: str, name: str) -> QueueView | None:
        queue = self.state.vhosts[vhost].queues.get(name) if vhost in self.state.vhosts else None
        return _queue_view(queue) if queue is not None else None

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


def _vhost_view(name: str, vhost: Vhost) -> VhostView:
    return VhostView(
        name,
        {key: _exchange_view(name, exchange) for key, exchange in vhost.exchanges.items()},
        {key: _queue_view(queue) for key, queue in vhost.queues.items()},
    )


def _exchange_view(vhost: str, exchange: Exchange) -> ExchangeView:
    return ExchangeView(
        vhost,
        exchange.name,
        exchange.type,
        exchange.durable,
        exchange.auto_delete,
        exchange.internal,
        dict(exchange.arguments),
        tuple(
            BindingView(
                exchange.name,
                binding.destination_kind,
                binding.destination,
                binding.routing_key,
                dict(binding.arguments),
            )
            for binding in exchange.bindings.values()
        ),
    )


def _queue_view(queue: Queue) -> QueueView:
    single = queue.limits.single_active_consumer
    active = find_consumer(queue, queue.active) if single else None
    return QueueView(
        queue.vhost,
        queue.name,
        queue.queue_type,
        queue.durable,
        queue.auto_delete,
        queue.exclusive_owner is not None,
        dict(queue.arguments),
        queue.ready_count,
        queue.unacked_count,
        queue.ready_bytes,
        single,
        active.consumer_tag if active is not None else None,
        tuple(
            ConsumerView(
                consumer.channel,
                consumer.consumer_tag,
                consumer.no_ack,
                consumer.exclusive,
                consumer.prefetch_count,
                consumer.priority,
                not single or (active is not None and consumer.id == active.id),
            )
            for consumer in queue.consumers
        ),
        queue.policy,
        queue.operator_policy,
        dict(queue.policy_definition),
    )
