"""The broker's replicated state: plain data that every node holds alike (DESIGN.md §3).

The `apply_<command>` functions of `replication/machine.py`'s table change it, command by
command; nothing outside `replication/` reads it but through `queries.py` (a test checks it).
Snapshots pickle it, so every field added later needs a default that `upgrade_state` can fill
in. Classes pickled before they moved here are found under `replication.machine`, which still
names them.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field

from warrenmq.replication import commands as c
from warrenmq.replication.body import Body
from warrenmq.replication.message import Message
from warrenmq.replication.queue import Entry, Queue, QueueRef

__all__ = [
    "FULL_ACCESS",
    "Binding",
    "BrokerState",
    "Channel",
    "Consumer",
    "DeadLetter",
    "Exchange",
    "Message",
    "Meta",
    "Permission",
    "Policy",
    "Unacked",
    "User",
    "Vhost",
    "bodies_held",
    "messages_of",
    "upgrade_state",
]


@dataclass(frozen=True, slots=True)
class Meta:
    # the command's number among all commands applied, from 1; one log entry holds many
    # commands, so this is not a Raft index (RaftLog.commit_index and last_applied_index are)
    index: int


@dataclass(frozen=True, slots=True)
class User:
    password_hash: str  # RabbitMQ's rabbit_password_hashing_sha256 form (salted, base64)
    tags: tuple[str, ...]  # administrator, management, monitoring …


@dataclass(frozen=True, slots=True)
class Permission:
    """RabbitMQ's three regular expressions, matched anywhere in a resource name (re.search);
    an empty one matches nothing. Frozen: a change replaces the object, so readers may cache
    what they derived from one by its identity."""

    configure: str  # may declare and delete
    write: str  # may publish to an exchange, bind a queue or exchange as destination
    read: str  # may consume, get and purge a queue, bind from an exchange

    def permits(self, action: str, name: str) -> bool:
        pattern: str = getattr(self, action)
        return bool(pattern) and re.search(pattern, name) is not None


FULL_ACCESS = Permission(".*", ".*", ".*")  # everything: the default user in the default vhost


@dataclass(slots=True)
class DeadLetter:
    """A message on its way to the dead-letter queues (at least once: until all took it)."""

    message: Message  # as dead-lettered: new exchange, routing key and x-death
    routing_keys: tuple[str, ...]
    taken: set[str] = field(default_factory=set)  # queues that took it already


@dataclass(slots=True)
class Binding:
    destination_kind: str  # "queue" or "exchange"
    destination: str  # queue or exchange name in the same vhost
    routing_key: str  # the binding key
    arguments: c.Arguments  # plain binding arguments (headers exchange rules)


@dataclass(slots=True)
class Exchange:
    name: str
    type: str  # one of EXCHANGE_TYPES
    durable: bool
    auto_delete: bool  # deleted when its last binding as a source goes
    internal: bool  # clients may not publish to it
    arguments: c.Arguments
    bindings: dict[tuple[str, str, str, bytes], Binding] = field(default_factory=dict)
    # direct exchanges route by an index on the binding key
    by_routing_key: dict[str, list[Binding]] = field(default_factory=dict)
    # x-delayed-message: (due by the state's clock, publish order, message), a heap; they are
    # replicated state, so a delayed message survives the loss of any node
    delayed: list[tuple[int, int, Message]] = field(default_factory=list)
    delayed_count: int = 0  # messages delayed so far (orders equal due times)
    delayed_bytes: int = 0  # body bytes of the messages in `delayed`
    policy: str | None = None  # the name of the policy that applies to it
    # the alternate exchange its policy names (its own argument comes first)
    policy_alternate_exchange: str | None = None

    @property
    def routing_type(self) -> str:
        if self.type == "x-delayed-message":
            return typing.cast(str, self.arguments["x-delayed-type"])
        return self.type


@dataclass(slots=True)
class Consumer:
    channel: c.ChannelRef  # who receives the deliveries
    consumer_tag: str
    no_ack: bool  # deliveries count as acknowledged when sent
    exclusive: bool  # no other consumer may share the queue
    prefetch_count: int  # 0 means unlimited
    unacked_count: int = 0  # deliveries not yet acked, nacked or rejected
    priority: int = 0  # x-priority: higher ones get messages first while they have credit
    id: int = 0  # unique in the state (BrokerState.next_id): a returning tag is another one


@dataclass(slots=True)
class Unacked:
    queue: QueueRef
    entry: Entry
    consumer: int | None  # the consumer's id; None for basic.get
    delivered_ms: int = 0  # by the state's clock (x-consumer-timeout counts from here)


@dataclass(slots=True)
class Channel:
    ref: c.ChannelRef
    next_delivery_tag: int = 1
    unacked: dict[int, Unacked] = field(default_factory=dict)  # by delivery tag, ascending
    prefetch_count: int = 0  # for consumers started after basic.qos(global=false)
    global_prefetch_count: int = 0  # shared by the channel, from basic.qos(global=true)
    consumers: dict[str, QueueRef] = field(default_factory=dict)  # consumer tag -> its queue
    reply_consumer: str | None = None  # consumer tag on amq.rabbitmq.reply-to (direct reply-to)


@dataclass(frozen=True, slots=True)
class Policy:
    """A policy or operator policy (RabbitMQ docs: Policies)."""

    name: str
    pattern: str  # a regular expression over queue or exchange names
    apply_to: str  # one of policies.APPLY_TO
    priority: int  # of the policies that match, the highest applies
    definition: dict[str, typing.Any]  # its keys, RabbitMQ's (max-length, ...)


@dataclass(slots=True)
class Vhost:
    exchanges: dict[str, Exchange] = field(default_factory=dict)
    queues: dict[str, Queue] = field(default_factory=dict)
    policies: dict[str, Policy] = field(default_factory=dict)  # by name
    operator_policies: dict[str, Policy] = field(default_factory=dict)  # by name


@dataclass(slots=True)
class BrokerState:
    users: dict[str, User] = field(default_factory=dict)
    vhosts: dict[str, Vhost] = field(default_factory=dict)
    permissions: dict[tuple[str, str], Permission] = field(default_factory=dict)  # (user, vhost)
    alarms: set[tuple[str, str]] = field(default_factory=set)  # (node, resource) in effect
    channels: dict[c.ChannelRef, Channel] = field(default_factory=dict)  # consuming or holding
    failed_channels: set[c.ChannelRef] = field(default_factory=set)  # refused, not yet closed
    failed_connections: set[tuple[str, int, int]] = field(default_factory=set)
    incarnations: dict[str, int] = field(default_factory=dict)  # newest incarnation per node
    down_nodes: set[str] = field(default_factory=set)  # nodes whose newest incarnation is lost
    pids: dict[str, int] = field(default_factory=dict)  # process id of each node's incarnation
    entry_seqs: dict[str, tuple[int, int]] = field(default_factory=dict)  # node -> (incarnation,
    # sequence number of its last admitted log entry)
    last_index: int = 0  # Meta.index of the last applied command (not a Raft index)
    clock_ms: int = 0  # the leader's clock at its last Tick
    # per consumer (channel, consumer tag): [deliveries, body bytes] not yet credited back
    uncredited: dict[tuple[c.ChannelRef, str], list[int]] = field(default_factory=dict)
    next_id: int = 1  # the id of the next queue or consumer


def find_queue(state: BrokerState, ref: QueueRef) -> Queue | None:
    """The queue `ref` names, unless it was deleted since."""
    vhost = state.vhosts.get(ref.vhost)
    queue = vhost.queues.get(ref.name) if vhost is not None else None
    return queue if queue is not None and queue.id == ref.id else None


def find_consumer(queue: Queue, consumer_id: int | None) -> Consumer | None:
    if consumer_id is None:
        return None
    return next((each for each in queue.consumers if each.id == consumer_id), None)


def new_id(state: BrokerState) -> int:
    state.next_id += 1
    return state.next_id - 1


def messages_of(state: BrokerState) -> Iterator[Message]:
    """Every message the state holds: ready, unacked, dead letters waiting, delayed (those of a
    queue's backlog built anew from its columns)."""
    for vhost in state.vhosts.values():
        for queue in vhost.queues.values():
            yield from (entry.message for entry in queue.ready)
    yield from _messages_beyond_backlogs(state)


def bodies_held(state: BrokerState) -> Iterator[list[Body]]:
    """The bodies the state holds, in runs: each backlog's in order, a chunk at a time, then
    those of the messages held as objects. A body may be in more than one place (a
    dead-lettered or fanned-out copy shares it), so in more than one run, or twice in one."""
    for vhost in state.vhosts.values():
        for queue in vhost.queues.values():
            yield from queue.ready.body_runs()
    yield [message.body for message in _messages_beyond_backlogs(state)]


def _messages_beyond_backlogs(state: BrokerState) -> Iterator[Message]:
    """The messages held as objects: returned, dead letters waiting, delayed, unacked."""
    for vhost in state.vhosts.values():
        for queue in vhost.queues.values():
            yield from (entry.message for _, entry in queue.returned)
            yield from (pending.message for pending in queue.dead_letters)
        for exchange in vhost.exchanges.values():
            yield from (held[2] for held in exchange.delayed)
    for channel in state.channels.values():
        yield from (unacked.entry.message for unacked in channel.unacked.values())


def upgrade_state(state: BrokerState) -> BrokerState:
    """A snapshot written before a BrokerState field existed lacks it: give it its default.

    Permissions came with access control; before them every user could use every vhost, so a
    snapshot without them grants each user everything in each vhost, and nobody loses access
    by the upgrade. Every node restores the same snapshot the same way.
    """
    missing = _fill_missing_fields(state)
    if "permissions" in missing:
        state.permissions = {
            (user, vhost): FULL_ACCESS for user in state.users for vhost in state.vhosts
        }
    if "next_id" in missing:
        _number_queues_and_consumers(state)
    _bodies_by_reference(state)
    for vhost in state.vhosts.values():
        _fill_missing_fields(vhost)
        for exchange in vhost.exchanges.values():
            if "delayed_bytes" in _fill_missing_fields(exchange):
                exchange.delayed_bytes = sum(len(held[2].body) for held in exchange.delayed)
        for queue in vhost.queues.values():
            if "dead_letter_bytes" in _fill_missing_fields(queue):
                queue.dead_letter_bytes = sum(len(p.message.body) for p in queue.dead_letters)
    return state


def _bodies_by_reference(state: BrokerState) -> None:
    """Snapshots before the body store held the bytes in each message. They become bodies in
    memory, numbered below zero in the state's order (alike on every node), which the store
    writes when it adopts the state; copies of one message shared one bytes object."""
    bodies: dict[int, Body] = {}

    def by_reference(data: bytes) -> Body:
        body = bodies.get(id(data))
        if body is None:
            body = bodies[id(data)] = Body(-1 - len(bodies), data)
        return body

    for vhost in state.vhosts.values():
        for queue in vhost.queues.values():
            queue.ready.replace_bytes(by_reference)
    for message in _messages_beyond_backlogs(state):
        if isinstance(message.body, bytes):
            message.body = by_reference(message.body)


def _number_queues_and_consumers(state: BrokerState) -> None:
    """Snapshots before ids held references as objects: unacked deliveries and channels named
    their Queue and Consumer objects, a queue its active Consumer, and a deleted queue carried
    a flag where `Queue.id` is now. Give every queue and consumer an id and refer by it; a
    deleted queue's id is one no vhost holds, so its deliveries still settle into nothing."""
    old: typing.Any = None  # objects of the old shape, whose fields this replaces

    def numbered(queue: typing.Any) -> QueueRef:
        if type(queue.id) is bool:  # the old "deleted" flag: not in any vhost any more
            queue.id = new_id(state)
        return typing.cast(QueueRef, queue.ref)

    def consumer_id(consumer: typing.Any) -> int | None:
        if consumer is None:
            return None
        if not isinstance(getattr(consumer, "id", None), int):
            consumer.id = new_id(state)  # a consumer that went, still named by a delivery
        return typing.cast(int, consumer.id)

    for vhost in state.vhosts.values():
        for queue in vhost.queues.values():
            queue.id = new_id(state)
            for consumer in queue.consumers:
                consumer.id = new_id(state)
            old = queue.active
            live = any(consumer is old for consumer in queue.consumers)
            queue.active = old.id if live else None
    for channel in state.channels.values():
        channel.consumers = {tag: numbered(queue) for tag, queue in channel.consumers.items()}
        for unacked in channel.unacked.values():
            old = unacked
            old.queue, old.consumer = numbered(old.queue), consumer_id(old.consumer)


def _fill_missing_fields(instance: typing.Any) -> set[str]:
    """Give an unpickled dataclass the defaults of the fields it was written without."""
    missing = {
        each.name for each in dataclasses.fields(instance) if not hasattr(instance, each.name)
    }
    for each in dataclasses.fields(instance):
        if each.name in missing:
            factory = each.default_factory
            default = factory() if factory is not dataclasses.MISSING else each.default
            setattr(instance, each.name, default)
    return missing
