"""The broker as one deterministic state machine: `Broker.apply(meta, command) -> Applied`.

Theory of operation
-------------------
Every node applies the same commands in the same log order and so holds the same broker: vhosts,
users, exchanges with their bindings, queues with their messages, and every channel that consumes
or holds unacknowledged messages. `apply` reads no clock, no randomness, no environment and does
not know which node runs it; whatever is not a function of the log arrives inside the command.

`apply` never raises on client input: a broken rule becomes `Refused(code, text)` with RabbitMQ's
reply code. A refusal with a channel-level code (4xx, AMQP 0-9-1 §1.2 "soft errors") marks that
channel failed; a connection-level code marks the whole connection failed. Commands that were
already in flight from a failed channel or connection are `Ignored`, as RabbitMQ ignores what a
closed channel sent after its error, until `CloseChannel` / `SessionClosed` clears the mark.

Nor does `apply` raise on a bug: an exception a handler did not mean (anything but a refusal) is
logged with the command's type and becomes `Refused(541, "INTERNAL_ERROR")` for that one
command, which fails its connection as RabbitMQ's does when a channel process crashes. Every node
runs the same code on the same state, so every node fails the same command the same way, keeps
what the handler changed before it failed and the effects it emitted, and goes on with the next
command: a bug can cost one client its connection, never the log.

Queues dispatch round-robin among their consumers within prefetch credit (per consumer, and per
channel when basic.qos was global). Delivery tags are counted per channel here, so acks, nacks
and "multiple" resolve against replicated state. Messages returned to a queue keep their position
(they sort back in by their sequence number) and come back `redelivered`.

Deliveries are effects that name their owning channel; only the node that holds that channel's
connection sends them, so replaying the log sends nothing twice.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import logging
import typing

import orjson

from warrenmq.replication import commands as c
from warrenmq.replication.queue import Entry, Limits, Queue
from warrenmq.replication.replies import (
    Annotations,
    Applied,
    CancelConsumer,
    ChannelTimedOut,
    Death,
    Deliver,
    Effect,
    GetEmpty,
    GetOk,
    Ignored,
    MessageCount,
    Ok,
    QueueDeclared,
    Refused,
    Reply,
    Routed,
)
from warrenmq.replication.routing import route, sender_keys

# The state's classes live in state.py and queue.py. They are imported here by name because
# snapshots pickled before that split refer to them as warrenmq.replication.machine.<Name>.
from warrenmq.replication.state import (
    FULL_ACCESS,
    Binding,
    BrokerState,
    Channel,
    Consumer,
    DeadLetter,
    Exchange,
    Message,
    Meta,
    Permission,
    Unacked,
    User,
    Vhost,
    upgrade_state,
)

__all__ = [
    "EXCHANGE_TYPES",
    "Binding",
    "Broker",
    "BrokerState",
    "Exchange",
    "Meta",
    "Permission",
    "Queue",
    "DELIVERY_CREDIT_BYTES",
    "DELIVERY_CREDIT_MESSAGES",
    "ReplyCode",
    "User",
    "Vhost",
    "upgrade_state",
]


class ReplyCode(enum.IntEnum):
    """The AMQP 0-9-1 reply codes that broker rules produce (the protocol layer has the rest)."""

    ACCESS_REFUSED = 403
    NOT_FOUND = 404
    RESOURCE_LOCKED = 405
    PRECONDITION_FAILED = 406
    COMMAND_INVALID = 503
    NOT_ALLOWED = 530
    NOT_IMPLEMENTED = 540
    INTERNAL_ERROR = 541

    @property
    def is_connection_error(self) -> bool:
        return self >= 500


ROUTING_TYPES = ("direct", "fanout", "topic", "headers")
# x-delayed-message: RabbitMQ's delayed-message plugin, spelt the same; routes as x-delayed-type
EXCHANGE_TYPES = (*ROUTING_TYPES, "x-delayed-message")
QUEUE_TYPES = ("classic", "quorum")

# Arguments that take part in the equivalence check on redeclare (RabbitMQ compares these and
# ignores the rest).
_QUEUE_EQUIVALENCE_ARGUMENTS = (
    "x-consumer-timeout",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-delivery-limit",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-message-ttl",
    "x-overflow",
    "x-queue-type",
    "x-single-active-consumer",
)
_EXCHANGE_EQUIVALENCE_ARGUMENTS = (
    "alternate-exchange",
    "x-delayed-max-length",
    "x-delayed-max-length-bytes",
    "x-delayed-type",
)
# What an x-delayed-message exchange holds at most, unless its x-delayed-max-length and
# x-delayed-max-length-bytes arguments say otherwise (Warren's limits: the plugin has none, and
# its timers live in one node's memory; here they are replicated state on every node).
DELAYED_MESSAGES_MAX = 100_000
DELAYED_BYTES_MAX = 256 * 1024 * 1024
DEAD_LETTER_RETRIES_PER_TICK = 1_000  # per queue: a Tick's work stays bounded
# Delivery credit (RabbitMQ's credit flow between queue and channel, in the log): a consumer
# holds at most this many deliveries, or bytes of them, that its node has not yet written out
# to the client and credited back with GrantCredit. Acknowledged or not, so a consumer whose
# socket is backed up leaves its messages in the queue, not in its node's write buffer. A
# consumer's node grants credit back in quarters of these, so a grant has three quarters of
# the credit's worth of deliveries to travel the log before the consumer waits on it (with
# halves of 8 MiB, 64 KiB messages ran 15-20 % slower: measured).
DELIVERY_CREDIT_MESSAGES = 4_000
DELIVERY_CREDIT_BYTES = 16 * 1024 * 1024

# The exchanges every vhost has (RabbitMQ docs: exchanges, "pre-declared exchanges").
_STANDARD_EXCHANGES = (
    ("", "direct", False),
    ("amq.direct", "direct", False),
    ("amq.fanout", "fanout", False),
    ("amq.topic", "topic", False),
    ("amq.headers", "headers", False),
    ("amq.match", "headers", False),
    ("amq.rabbitmq.trace", "topic", True),
)


log = logging.getLogger(__name__)


def _refuse(code: ReplyCode, text: str) -> Refused:
    return Refused(int(code), text)


def _not_found(kind: str, name: str, vhost: str) -> Refused:
    return _refuse(ReplyCode.NOT_FOUND, f"no {kind} '{name}' in vhost '{vhost}'")


def _locked(queue: Queue) -> Refused:
    return _refuse(
        ReplyCode.RESOURCE_LOCKED,
        f"cannot obtain exclusive access to locked queue '{queue.name}' in vhost '{queue.vhost}'. "
        "It could be originally declared on another connection or the exclusive property value "
        "does not match that of the original declaration.",
    )


def _default_exchange_refused() -> _Refusal:
    return _Refusal(
        _refuse(ReplyCode.ACCESS_REFUSED, "operation not permitted on the default exchange")
    )


def _amqp_type_name(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "longstr"
    return "table" if isinstance(value, dict) else "array"


def _describe(value: object) -> str:
    if value is None:
        return "none"
    return f"the value '{value}' of type '{_amqp_type_name(value)}'"


def _arguments_key(arguments: c.Arguments) -> bytes:
    return orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)


INTERNAL_ERROR = Refused(int(ReplyCode.INTERNAL_ERROR), "")  # RabbitMQ's bare INTERNAL_ERROR


class _Refusal(Exception):
    """Raised inside a handler to return a refusal; never leaves `apply`."""

    def __init__(self, refused: Refused) -> None:
        self.refused = refused


class Broker:
    def __init__(self, state: BrokerState | None = None) -> None:
        self.state = state or BrokerState()
        self._effects: list[Effect] = []
        self._handlers: dict[type, typing.Callable[[typing.Any], Reply]] = {
            c.NodeUp: self._node_up,
            c.NodeDown: self._node_down,
            c.BootstrapDefaults: self._bootstrap_defaults,
            c.Tick: self._tick,
            c.AddVhost: self._add_vhost,
            c.AddUser: self._add_user,
            c.DeleteUser: self._delete_user,
            c.DeleteVhost: self._delete_vhost,
            c.SetPermissions: self._set_permissions,
            c.ClearPermissions: self._clear_permissions,
            c.SetAlarm: self._set_alarm,
            c.DeclareExchange: self._declare_exchange,
            c.DeleteExchange: self._delete_exchange,
            c.BindExchange: self._bind_exchange,
            c.UnbindExchange: self._unbind_exchange,
            c.DeclareQueue: self._declare_queue,
            c.BindQueue: self._bind_queue,
            c.UnbindQueue: self._unbind_queue,
            c.PurgeQueue: self._purge_queue,
            c.DeleteQueue: self._delete_queue,
            c.Publish: self._publish,
            c.Consume: self._consume,
            c.Cancel: self._cancel,
            c.Qos: self._qos,
            c.Get: self._get,
            c.Settle: self._settle,
            c.Reject: self._reject,
            c.Recover: self._recover,
            c.CloseChannel: self._close_channel,
            c.SessionClosed: self._session_closed,
            c.GrantCredit: self._grant_credit,
        }

    # --- the one entry point ----------------------------------------------------------

    def apply(self, meta: Meta, command: c.Command) -> Applied:
        self.state.last_index = meta.index
        self._effects = []
        channel = getattr(command, "channel", None)
        if channel is not None and not self._is_live(channel.node, channel.incarnation):
            return Applied(Ignored())  # a lost or replaced node incarnation may no longer act
        if isinstance(command, c.SessionClosed) and not self._is_live(
            command.node, command.incarnation
        ):
            return Applied(Ignored())
        if (
            channel is not None
            and not isinstance(command, c.CloseChannel)
            and (
                channel in self.state.failed_channels
                or channel.connection_ref in self.state.failed_connections
            )
        ):
            return Applied(Ignored())
        try:
            reply = self._handlers[type(command)](command)
        except _Refusal as refusal:
            reply = refusal.refused
            self._mark_failed(channel, reply)
        except Exception:  # a bug, not a client's mistake: see "apply never raises" above
            log.exception("applying %s failed: refused with 541", type(command).__name__)
            reply = INTERNAL_ERROR
            self._mark_failed(channel, reply)
        return Applied(reply, self._effects)

    def _mark_failed(self, channel: c.ChannelRef | None, refused: Refused) -> None:
        if channel is None or channel.connection == c.MANAGEMENT_CONNECTION:
            return  # a management operation is one command: nothing follows it to ignore
        if ReplyCode(refused.reply_code).is_connection_error:
            self.state.failed_connections.add(channel.connection_ref)
        else:
            self.state.failed_channels.add(channel)

    def _is_live(self, node: str, incarnation: int) -> bool:
        return (
            self.state.incarnations.get(node) == incarnation and node not in self.state.down_nodes
        )

    def admit_entry(self, node: str, incarnation: int, seq: int) -> bool:
        """Log entries of one node incarnation are admitted once each, in increasing order.

        A proposer may send an entry again when it cannot tell whether the first copy arrived;
        the copy that comes second is not applied.
        """
        last = self.state.entry_seqs.get(node)
        if last is not None and (incarnation, seq) <= last:
            return False
        self.state.entry_seqs[node] = (incarnation, seq)
        return True

    # --- queries (local reads, never through the log) ---------------------------------

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

    # --- helpers ------------------------------------------------------------------------

    def _vhost(self, name: str) -> Vhost:
        vhost = self.state.vhosts.get(name)
        if vhost is None:
            raise _Refusal(_refuse(ReplyCode.NOT_ALLOWED, f"vhost '{name}' not found"))
        return vhost

    def _exchange(self, vhost: str, name: str) -> Exchange:
        exchange = self._vhost(vhost).exchanges.get(name)
        if exchange is None:
            raise _Refusal(_not_found("exchange", name, vhost))
        return exchange

    def _queue(self, channel: c.ChannelRef, vhost: str, name: str) -> Queue:
        queue = self._vhost(vhost).queues.get(name)
        if queue is None:
            raise _Refusal(_not_found("queue", name, vhost))
        self._check_exclusive_access(channel, queue)
        return queue

    @staticmethod
    def _check_exclusive_access(channel: c.ChannelRef, queue: Queue) -> None:
        if queue.exclusive_owner is not None and queue.exclusive_owner != channel.connection_ref:
            raise _Refusal(_locked(queue))

    def _channel(self, ref: c.ChannelRef) -> Channel:
        channel = self.state.channels.get(ref)
        if channel is None:
            channel = self.state.channels[ref] = Channel(ref)
        return channel

    # --- membership and identity --------------------------------------------------------

    def _node_up(self, command: c.NodeUp) -> Reply:
        if command.incarnation < self.state.incarnations.get(command.node, 0):
            return Ignored()  # an older incarnation's late announcement
        self.state.incarnations[command.node] = command.incarnation
        self.state.down_nodes.discard(command.node)
        self.state.pids[command.node] = command.pid
        self._release_node(command.node, keep_incarnation=command.incarnation)
        return Ok()

    def _node_down(self, command: c.NodeDown) -> Reply:
        if not self._is_live(command.node, command.incarnation):
            return Ignored()  # already down, or restarted since
        self.state.down_nodes.add(command.node)
        self._release_node(command.node, keep_incarnation=None)
        return Ok()

    def _release_node(self, node: str, keep_incarnation: int | None) -> None:
        """Release the channels, exclusive queues, failure marks and alarms of `node`'s
        incarnations.

        All of them, or all but `keep_incarnation`.
        """

        def released(ref_node: str, incarnation: int) -> bool:
            return ref_node == node and incarnation != keep_incarnation

        self._release_channels(
            [ref for ref in self.state.channels if released(ref.node, ref.incarnation)]
        )
        for vhost in self.state.vhosts.values():
            for queue in list(vhost.queues.values()):
                owner = queue.exclusive_owner
                if owner is not None and released(owner[0], owner[1]):
                    self._remove_queue(vhost, queue)
        self.state.failed_channels = {
            ref for ref in self.state.failed_channels if not released(ref.node, ref.incarnation)
        }
        self.state.failed_connections = {
            ref for ref in self.state.failed_connections if not released(ref[0], ref[1])
        }
        # a node's alarms go with it; its next incarnation raises them again if they still hold
        self.state.alarms = {alarm for alarm in self.state.alarms if alarm[0] != node}

    def _bootstrap_defaults(self, command: c.BootstrapDefaults) -> Reply:
        if not self.state.users and not self.state.vhosts:
            self._add_vhost(c.AddVhost(vhost=command.vhost))
            self._add_user(
                c.AddUser(user=command.user, password_hash=command.password_hash, tags=command.tags)
            )
            # RabbitMQ: the default user has every permission in the default vhost
            self.state.permissions[(command.user, command.vhost)] = FULL_ACCESS
        return Ok()

    def _tick(self, command: c.Tick) -> Reply:
        """Time passes: messages at the head expire, unused queues with x-expires go."""
        now_ms = self.state.clock_ms = max(self.state.clock_ms, command.now_ms)
        for vhost in self.state.vhosts.values():
            for queue in list(vhost.queues.values()):
                if queue.used or queue.consumers:
                    queue.used, queue.last_used_ms = False, now_ms
                expires_ms = queue.limits.expires_ms
                if expires_ms is not None and now_ms - queue.last_used_ms >= expires_ms:
                    self._remove_queue(vhost, queue)  # its messages are not dead-lettered
                elif self._expire(queue):
                    self._dispatch(queue)
        self._release_delayed(now_ms)
        self._retry_dead_letters()
        self._time_out_deliveries(now_ms)
        return Ok()

    def _release_delayed(self, now_ms: int) -> None:
        """Delayed messages whose time has come are routed now, by the x-delayed-type rules."""
        for vhost in self.state.vhosts.values():
            for exchange in list(vhost.exchanges.values()):
                while exchange.delayed and exchange.delayed[0][0] <= now_ms:
                    due_ms, _, message = heapq.heappop(exchange.delayed)
                    exchange.delayed_bytes -= len(message.body)
                    keys = sender_keys(message.routing_key, message.headers, "CC", "BCC")
                    for queue in route(vhost, exchange, keys, message.headers):
                        self._enqueue(queue, message, due_ms)

    def _time_out_deliveries(self, now_ms: int) -> None:
        """A channel holding a delivery unacknowledged past its queue's consumer timeout fails
        (what it sends next is ignored); the owning node closes it with 406."""
        for channel in self.state.channels.values():
            if channel.ref in self.state.failed_channels:
                continue
            for unacked in channel.unacked.values():
                timeout_ms = unacked.queue.limits.consumer_timeout_ms
                if now_ms - unacked.delivered_ms > timeout_ms:
                    self.state.failed_channels.add(channel.ref)
                    self._effects.append(ChannelTimedOut(channel.ref, timeout_ms))
                    break

    def _expire(self, queue: Queue) -> bool:
        """Dead-letter the expired messages at the head of the queue (as RabbitMQ does, a
        message expires when it reaches the head); True if any did."""
        expired = False
        while (head := queue.head()) is not None and (
            head.expires_at_ms is not None and head.expires_at_ms < self.state.clock_ms
        ):
            self._dead_letter(queue, queue.take().message, "expired")
            expired = True
        return expired

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

    def _add_vhost(self, command: c.AddVhost) -> Reply:
        if command.vhost not in self.state.vhosts:
            vhost = self.state.vhosts[command.vhost] = Vhost()
            for name, exchange_type, internal in _STANDARD_EXCHANGES:
                vhost.exchanges[name] = Exchange(name, exchange_type, True, False, internal, {})
        return Ok()

    def _add_user(self, command: c.AddUser) -> Reply:
        self.state.users[command.user] = User(command.password_hash, command.tags)
        return Ok()

    def _known_user(self, name: str) -> User:
        user = self.state.users.get(name)
        if user is None:
            raise _Refusal(_refuse(ReplyCode.NOT_FOUND, f"no user '{name}'"))
        return user

    def _known_vhost(self, name: str) -> Vhost:
        vhost = self.state.vhosts.get(name)
        if vhost is None:
            raise _Refusal(_refuse(ReplyCode.NOT_FOUND, f"no vhost '{name}'"))
        return vhost

    def _delete_user(self, command: c.DeleteUser) -> Reply:
        self._known_user(command.user)
        del self.state.users[command.user]
        for key in [key for key in self.state.permissions if key[0] == command.user]:
            del self.state.permissions[key]
        return Ok()

    def _delete_vhost(self, command: c.DeleteVhost) -> Reply:
        vhost = self._known_vhost(command.vhost)
        for queue in list(vhost.queues.values()):
            self._remove_queue(vhost, queue)
        del self.state.vhosts[command.vhost]
        for key in [key for key in self.state.permissions if key[1] == command.vhost]:
            del self.state.permissions[key]
        return Ok()

    def _set_permissions(self, command: c.SetPermissions) -> Reply:
        self._known_user(command.user)
        self._known_vhost(command.vhost)
        self.state.permissions[(command.user, command.vhost)] = Permission(
            command.configure, command.write, command.read
        )
        return Ok()

    def _clear_permissions(self, command: c.ClearPermissions) -> Reply:
        self.state.permissions.pop((command.user, command.vhost), None)
        return Ok()

    def _set_alarm(self, command: c.SetAlarm) -> Reply:
        if command.active:
            self.state.alarms.add((command.node, command.resource))
        else:
            self.state.alarms.discard((command.node, command.resource))
        return Ok()

    # --- exchanges ----------------------------------------------------------------------

    def _declare_exchange(self, command: c.DeclareExchange) -> Reply:
        vhost = self._vhost(command.vhost)
        name = command.exchange
        if name == "" and not command.passive:
            raise _default_exchange_refused()
        existing = vhost.exchanges.get(name)
        if command.passive:
            if existing is None:
                raise _Refusal(_not_found("exchange", name, command.vhost))
            return Ok()
        if command.type not in EXCHANGE_TYPES:
            raise _Refusal(
                _refuse(ReplyCode.COMMAND_INVALID, f"unknown exchange type '{command.type}'")
            )
        if existing is not None:
            self._check_exchange_equivalence(existing, command)
            return Ok()
        _check_reserved_name("exchange", name)
        if (
            command.type == "x-delayed-message"
            and command.arguments.get("x-delayed-type") not in ROUTING_TYPES
        ):
            raise _Refusal(
                _refuse(
                    ReplyCode.PRECONDITION_FAILED,
                    "Invalid argument, 'x-delayed-type' must be an existing exchange type",
                )
            )
        for argument in ("x-delayed-max-length", "x-delayed-max-length-bytes"):
            _integer_argument(command.arguments, argument, "exchange", name, command.vhost)
        vhost.exchanges[name] = Exchange(
            name,
            command.type,
            command.durable,
            command.auto_delete,
            command.internal,
            command.arguments,
        )
        return Ok()

    @staticmethod
    def _check_exchange_equivalence(existing: Exchange, command: c.DeclareExchange) -> None:
        _check_properties_equivalence(
            "exchange",
            existing.name,
            command.vhost,
            [
                ("type", command.type, existing.type),
                ("durable", command.durable, existing.durable),
                ("auto_delete", command.auto_delete, existing.auto_delete),
                ("internal", command.internal, existing.internal),
            ],
        )
        _check_arguments_equivalence(
            "exchange",
            existing.name,
            command.vhost,
            _EXCHANGE_EQUIVALENCE_ARGUMENTS,
            command.arguments,
            existing.arguments,
        )

    def _delete_exchange(self, command: c.DeleteExchange) -> Reply:
        vhost = self._vhost(command.vhost)
        name = command.exchange
        if name == "":
            raise _default_exchange_refused()
        if name.startswith("amq."):
            raise _Refusal(
                _refuse(
                    ReplyCode.ACCESS_REFUSED,
                    f"deletion of system exchange '{name}' in vhost '{command.vhost}' not allowed",
                )
            )
        exchange = vhost.exchanges.get(name)
        if exchange is None:
            return Ok()  # RabbitMQ: deleting a missing exchange succeeds
        if command.if_unused and exchange.bindings:
            raise _Refusal(
                _refuse(
                    ReplyCode.PRECONDITION_FAILED,
                    f"exchange '{name}' in vhost '{command.vhost}' in use",
                )
            )
        self._remove_exchange(vhost, exchange)
        return Ok()

    def _remove_exchange(self, vhost: Vhost, exchange: Exchange) -> None:
        del vhost.exchanges[exchange.name]
        self._remove_bindings_to(vhost, "exchange", exchange.name)

    def _remove_bindings_to(self, vhost: Vhost, kind: str, name: str) -> None:
        for source in list(vhost.exchanges.values()):
            for key, binding in list(source.bindings.items()):
                if binding.destination_kind == kind and binding.destination == name:
                    self._drop_binding(vhost, source, key)

    def _drop_binding(
        self, vhost: Vhost, source: Exchange, key: tuple[str, str, str, bytes]
    ) -> None:
        binding = source.bindings.pop(key)
        if source.routing_type == "direct":
            same_key = source.by_routing_key[binding.routing_key]
            same_key.remove(binding)
            if not same_key:
                del source.by_routing_key[binding.routing_key]
        if (
            source.auto_delete
            and not source.bindings
            and vhost.exchanges.get(source.name) is source
        ):
            self._remove_exchange(vhost, source)

    def _add_binding(self, source: Exchange, binding: Binding) -> None:
        key = (
            binding.destination_kind,
            binding.destination,
            binding.routing_key,
            _arguments_key(binding.arguments),
        )
        if key in source.bindings:
            return
        source.bindings[key] = binding
        if source.routing_type == "direct":
            source.by_routing_key.setdefault(binding.routing_key, []).append(binding)

    def _bind_exchange(self, command: c.BindExchange) -> Reply:
        if "" in (command.source, command.destination):
            raise _default_exchange_refused()
        self._exchange(command.vhost, command.destination)
        source = self._exchange(command.vhost, command.source)
        self._add_binding(
            source, Binding("exchange", command.destination, command.routing_key, command.arguments)
        )
        return Ok()

    def _unbind_exchange(self, command: c.UnbindExchange) -> Reply:
        if "" in (command.source, command.destination):
            raise _default_exchange_refused()
        vhost = self._vhost(command.vhost)
        source = vhost.exchanges.get(command.source)
        key = (
            "exchange",
            command.destination,
            command.routing_key,
            _arguments_key(command.arguments),
        )
        if source is not None and key in source.bindings:
            self._drop_binding(vhost, source, key)
        return Ok()

    # --- queues -------------------------------------------------------------------------

    def _declare_queue(self, command: c.DeclareQueue) -> Reply:
        vhost = self._vhost(command.vhost)
        existing = vhost.queues.get(command.queue)
        if command.passive:
            if existing is None:
                raise _Refusal(_not_found("queue", command.queue, command.vhost))
            self._check_exclusive_access(command.channel, existing)
            return QueueDeclared(existing.name, existing.ready_count, len(existing.consumers))
        if existing is not None:
            self._check_exclusive_access(command.channel, existing)
            self._check_queue_equivalence(existing, command)
            existing.used = True
            return QueueDeclared(existing.name, existing.ready_count, len(existing.consumers))
        if not command.server_named:
            _check_reserved_name("queue", command.queue)
        queue_type = self._check_queue_type(command)
        vhost.queues[command.queue] = Queue(
            command.vhost,
            command.queue,
            command.durable,
            command.channel.connection_ref if command.exclusive else None,
            command.auto_delete,
            command.arguments,
            queue_type,
            limits=_queue_limits(command, queue_type),
            last_used_ms=self.state.clock_ms,
        )
        return QueueDeclared(command.queue, 0, 0)

    @staticmethod
    def _check_queue_type(command: c.DeclareQueue) -> str:
        queue_type = command.arguments.get("x-queue-type", "classic")
        if queue_type not in QUEUE_TYPES:
            raise _Refusal(
                _refuse(
                    ReplyCode.PRECONDITION_FAILED,
                    f"invalid arg 'x-queue-type' for queue '{command.queue}' in vhost "
                    f"'{command.vhost}': unsupported queue type '{queue_type}'",
                )
            )
        if queue_type == "quorum":
            # RabbitMQ docs: quorum queues are always durable, never exclusive or auto-delete.
            for wrong, name in (
                (not command.durable, "non-durable"),
                (command.exclusive, "exclusive-owner"),
                (command.auto_delete, "auto-delete"),
            ):
                if wrong:
                    raise _Refusal(
                        _refuse(
                            ReplyCode.PRECONDITION_FAILED,
                            f"invalid property '{name}' for queue '{command.queue}' in vhost "
                            f"'{command.vhost}'",
                        )
                    )
        return typing.cast(str, queue_type)

    @staticmethod
    def _check_queue_equivalence(existing: Queue, command: c.DeclareQueue) -> None:
        _check_properties_equivalence(
            "queue",
            existing.name,
            command.vhost,
            [
                ("durable", command.durable, existing.durable),
                ("auto_delete", command.auto_delete, existing.auto_delete),
            ],
        )
        if command.exclusive and existing.exclusive_owner is None:
            raise _Refusal(_locked(existing))
        received_arguments = dict(command.arguments)
        # RabbitMQ 3.13+: a redeclare that leaves out x-queue-type matches any type.
        received_arguments.setdefault("x-queue-type", existing.queue_type)
        current_arguments = dict(existing.arguments)
        current_arguments.setdefault("x-queue-type", existing.queue_type)
        _check_arguments_equivalence(
            "queue",
            existing.name,
            command.vhost,
            _QUEUE_EQUIVALENCE_ARGUMENTS,
            received_arguments,
            current_arguments,
        )

    def _bind_queue(self, command: c.BindQueue) -> Reply:
        if command.exchange == "":
            raise _default_exchange_refused()
        self._queue(command.channel, command.vhost, command.queue)
        source = self._exchange(command.vhost, command.exchange)
        self._add_binding(
            source, Binding("queue", command.queue, command.routing_key, command.arguments)
        )
        return Ok()

    def _unbind_queue(self, command: c.UnbindQueue) -> Reply:
        if command.exchange == "":
            raise _default_exchange_refused()
        vhost = self._vhost(command.vhost)
        queue = vhost.queues.get(command.queue)
        if queue is not None:
            self._check_exclusive_access(command.channel, queue)
        source = vhost.exchanges.get(command.exchange)
        key = ("queue", command.queue, command.routing_key, _arguments_key(command.arguments))
        if source is not None and key in source.bindings:
            self._drop_binding(vhost, source, key)
        return Ok()

    def _purge_queue(self, command: c.PurgeQueue) -> Reply:
        queue = self._queue(command.channel, command.vhost, command.queue)
        count = queue.ready_count
        queue.clear()
        return MessageCount(count)

    def _delete_queue(self, command: c.DeleteQueue) -> Reply:
        vhost = self._vhost(command.vhost)
        queue = vhost.queues.get(command.queue)
        if queue is None:
            return MessageCount(0)  # RabbitMQ: deleting a missing queue succeeds
        self._check_exclusive_access(command.channel, queue)
        where = f"queue '{queue.name}' in vhost '{queue.vhost}'"
        if command.if_unused and queue.consumers:
            raise _Refusal(_refuse(ReplyCode.PRECONDITION_FAILED, f"{where} in use"))
        if command.if_empty and queue.ready_count:
            raise _Refusal(_refuse(ReplyCode.PRECONDITION_FAILED, f"{where} is not empty"))
        count = queue.ready_count
        self._remove_queue(vhost, queue)
        return MessageCount(count)

    def _remove_queue(self, vhost: Vhost, queue: Queue) -> None:
        del vhost.queues[queue.name]
        queue.deleted = True
        queue.clear()
        for consumer in queue.consumers:
            channel = self.state.channels.get(consumer.channel)
            if channel is not None:
                channel.consumers.pop(consumer.consumer_tag, None)
            self._effects.append(CancelConsumer(consumer.channel, consumer.consumer_tag))
        queue.consumers.clear()
        self._remove_bindings_to(vhost, "queue", queue.name)

    # --- publishing and routing --------------------------------------------------------

    def _publish(self, command: c.Publish) -> Reply:
        exchange = self._exchange(command.vhost, command.exchange)
        if exchange.internal:
            raise _Refusal(
                _refuse(
                    ReplyCode.ACCESS_REFUSED,
                    f"cannot publish to internal exchange '{exchange.name}' in vhost "
                    f"'{command.vhost}'",
                )
            )
        if command.replies_to_channel:
            sender = self.state.channels.get(command.channel)
            if sender is None or sender.reply_consumer is None:
                raise _Refusal(
                    _refuse(ReplyCode.PRECONDITION_FAILED, "fast reply consumer does not exist")
                )
        if command.exchange == "" and command.routing_key.startswith(c.REPLY_TO):
            return Routed(self._reply(command))
        message = Message(
            command.exchange,
            command.routing_key,
            command.properties,
            command.body,
            command.headers,
            expiration=command.expiration,
            priority=command.priority,
        )
        now_ms = command.now_ms or self.state.clock_ms
        self.state.clock_ms = max(self.state.clock_ms, now_ms)
        delay_ms = (command.headers or {}).get("x-delay")
        if exchange.type == "x-delayed-message" and _is_integer(delay_ms) and delay_ms > 0:
            if not _delayed_room(exchange, message):
                return Routed(1, rejected=True)  # full: basic.nack, as reject-publish does
            exchange.delayed_count += 1
            exchange.delayed_bytes += len(message.body)
            heapq.heappush(exchange.delayed, (now_ms + delay_ms, exchange.delayed_count, message))
            return Routed(1)  # held by the exchange; like the plugin, no mandatory return
        queues = route(
            self.state.vhosts[command.vhost],
            exchange,
            sender_keys(command.routing_key, command.headers, "CC", "BCC"),
            command.headers,
        )
        rejected = [queue for queue in queues if not self._enqueue(queue, message, now_ms)]
        return Routed(len(queues), bool(rejected))

    def _reply(self, command: c.Publish) -> int:
        """Direct reply-to: straight to the requesting channel's reply consumer, no queue."""
        owner = c.ChannelRef.from_reply_to(command.routing_key)
        channel = self.state.channels.get(owner) if owner is not None else None
        if channel is None or channel.reply_consumer is None:
            return 0  # the requester is gone: unroutable, as in RabbitMQ
        delivery_tag = channel.next_delivery_tag
        channel.next_delivery_tag += 1
        self._effects.append(
            Deliver(
                channel.ref,
                channel.reply_consumer,
                delivery_tag,
                False,
                "",
                command.routing_key,
                command.properties,
                command.body,
            )
        )
        return 1

    def _enqueue(self, queue: Queue, message: Message, now_ms: int) -> bool:
        """Add a message, within the queue's length limits; False if the queue refuses it."""
        overflow = queue.limits.overflow
        if overflow != "drop-head" and queue.over_limit(adding=message):
            if overflow == "reject-publish-dlx":
                self._dead_letter(queue, message, "maxlen")
            return False
        queue.append(message, now_ms)
        while overflow == "drop-head" and queue.ready_count and queue.over_limit():
            self._dead_letter(queue, queue.take().message, "maxlen")
        self._dispatch(queue)
        return True

    def _dead_letter(self, queue: Queue, message: Message, reason: str) -> None:
        """Republish to the queue's dead-letter exchange, or drop it.

        At most once (the default), what cannot be routed or is refused is gone. At least once
        (x-dead-letter-strategy), the message stays with its source queue until every queue it
        routes to has taken it, and each Tick tries again. Either way the move happens within
        one log entry, so it is never done twice."""
        limits = queue.limits
        if limits.dead_letter_exchange is None:
            return
        event = Death(
            queue.name,
            reason,
            1,
            self.state.clock_ms,
            message.exchange,
            tuple(sender_keys(message.routing_key, message.headers, "CC")),
            message.expiration,
        )
        earlier = next(
            (d for d in message.deaths if d.queue == queue.name and d.reason == reason), None
        )
        death = event if earlier is None else dataclasses.replace(earlier, count=earlier.count + 1)
        deaths = (death, *(d for d in message.deaths if d is not earlier))
        if limits.dead_letter_routing_key is None:  # all the keys it was published with
            routing_key = message.routing_key
            routing_keys = sender_keys(routing_key, message.headers, "CC", "BCC")
            dropped: tuple[str, ...] = ("BCC",)
        else:  # only the queue's; then CC goes too (RabbitMQ docs, "Dead-Lettered Effects")
            routing_key = limits.dead_letter_routing_key
            routing_keys = [routing_key]
            dropped = ("CC", "BCC")
        headers = message.headers
        if headers is not None and any(name in headers for name in dropped):
            headers = {name: value for name, value in headers.items() if name not in dropped}
        dead = Message(
            limits.dead_letter_exchange,
            routing_key,
            message.properties,
            message.body,
            headers,
            deaths,
            message.first_death or event,
            event,
            priority=message.priority,
        )
        pending = DeadLetter(dead, tuple(routing_keys))
        if not self._forward(queue, pending) and limits.at_least_once:
            queue.hold_dead_letter(pending)

    def _forward(self, queue: Queue, pending: DeadLetter) -> bool:
        """Route a dead letter to the queues that have not taken it yet; True once all have."""
        vhost = self.state.vhosts.get(queue.vhost)
        message = pending.message
        exchange = vhost.exchanges.get(message.exchange) if vhost is not None else None
        if vhost is None or exchange is None:
            return False  # RabbitMQ cannot dead-letter to a missing exchange
        # a cycle (the message was dead-lettered from a queue before) ends here, unless a
        # consumer rejected it somewhere on the way (RabbitMQ docs, "Dead-letter cycle")
        rejected = any(d.reason == "rejected" for d in message.deaths)
        targets = [
            target
            for target in route(vhost, exchange, pending.routing_keys, message.headers)
            if (rejected or all(d.queue != target.name for d in message.deaths))
            and target.name not in pending.taken
        ]
        if not targets:
            return bool(pending.taken)  # unroutable unless it reached some queue before
        for target in targets:
            if self._enqueue(target, message, self.state.clock_ms):
                pending.taken.add(target.name)
        return all(target.name in pending.taken for target in targets)

    def _retry_dead_letters(self) -> None:
        """The oldest waiting dead letters of each queue try their targets again, a bounded
        number per Tick; those that still cannot go keep their place."""
        for vhost in self.state.vhosts.values():
            for queue in list(vhost.queues.values()):
                if not queue.dead_letters:
                    continue
                tried = queue.dead_letters[:DEAD_LETTER_RETRIES_PER_TICK]
                kept = []
                for pending in tried:
                    if self._forward(queue, pending):
                        queue.dead_letter_bytes -= len(pending.message.body)
                    else:
                        kept.append(pending)
                queue.dead_letters[: len(tried)] = kept

    # --- consuming -----------------------------------------------------------------------

    def _consume(self, command: c.Consume) -> Reply:
        if command.queue == c.REPLY_TO:
            return self._consume_replies(command)
        queue = self._queue(command.channel, command.vhost, command.queue)
        channel = self._channel(command.channel)
        if command.consumer_tag in channel.consumers:
            raise _Refusal(
                _refuse(
                    ReplyCode.NOT_ALLOWED,
                    f"attempt to reuse consumer tag '{command.consumer_tag}'",
                )
            )
        if queue.consumers and (command.exclusive or queue.consumers[0].exclusive):
            raise _Refusal(
                _refuse(
                    ReplyCode.ACCESS_REFUSED,
                    f"queue '{queue.name}' in vhost '{queue.vhost}' in exclusive use",
                )
            )
        consumer = Consumer(
            command.channel,
            command.consumer_tag,
            command.no_ack,
            command.exclusive,
            channel.prefetch_count,
            priority=_consumer_priority(command),
        )
        queue.consumers.append(consumer)
        queue.top_priority = max(consumer.priority for consumer in queue.consumers)
        queue.had_consumer = queue.used = True
        channel.consumers[command.consumer_tag] = queue
        self._dispatch(queue)
        return Ok()

    def _consume_replies(self, command: c.Consume) -> Reply:
        if not command.no_ack:
            raise _Refusal(
                _refuse(ReplyCode.PRECONDITION_FAILED, "reply consumer cannot acknowledge")
            )
        channel = self._channel(command.channel)
        if channel.reply_consumer is not None:
            raise _Refusal(_refuse(ReplyCode.PRECONDITION_FAILED, "reply consumer already set"))
        channel.reply_consumer = command.consumer_tag
        return Ok()

    def _cancel(self, command: c.Cancel) -> Reply:
        channel = self.state.channels.get(command.channel)
        if channel is not None and channel.reply_consumer == command.consumer_tag:
            channel.reply_consumer = None
        if channel is not None and command.consumer_tag in channel.consumers:
            self._remove_consumer(channel, command.consumer_tag)
        return Ok()  # AMQP 0-9-1: cancelling an unknown consumer is not an error

    def _remove_consumer(self, channel: Channel, consumer_tag: str) -> None:
        queue = channel.consumers.pop(consumer_tag)
        self.state.uncredited.pop((channel.ref, consumer_tag), None)
        queue.consumers = [
            consumer
            for consumer in queue.consumers
            if not (consumer.channel == channel.ref and consumer.consumer_tag == consumer_tag)
        ]
        queue.next_consumer = 0
        queue.top_priority = max((consumer.priority for consumer in queue.consumers), default=0)
        queue.used = True  # x-expires counts from the last consumer's going
        if queue.auto_delete and not queue.consumers and queue.had_consumer and not queue.deleted:
            self._remove_queue(self.state.vhosts[queue.vhost], queue)

    def _qos(self, command: c.Qos) -> Reply:
        channel = self._channel(command.channel)
        if command.global_:
            channel.global_prefetch_count = command.prefetch_count
        else:
            # Beyond RabbitMQ (which applies it to later consumers only): the channel's live
            # consumers take the new prefetch too.
            channel.prefetch_count = command.prefetch_count
            for queue in channel.consumers.values():
                for consumer in queue.consumers:
                    if consumer.channel == channel.ref:
                        consumer.prefetch_count = command.prefetch_count
        for queue in {id(queue): queue for queue in channel.consumers.values()}.values():
            self._dispatch(queue)
        return Ok()

    def _get(self, command: c.Get) -> Reply:
        queue = self._queue(command.channel, command.vhost, command.queue)
        queue.used = True
        self._expire(queue)
        if not queue.ready_count:
            return GetEmpty()
        channel = self._channel(command.channel)
        entry = queue.take()
        delivery_tag = self._hand_out(channel, queue, entry, None, command.no_ack)
        message = entry.message
        return GetOk(
            delivery_tag,
            entry.redelivered,
            message.exchange,
            message.routing_key,
            queue.ready_count,
            message.properties,
            message.body,
            _annotations(queue, entry),
        )

    def _hand_out(
        self, channel: Channel, queue: Queue, entry: Entry, consumer: Consumer | None, no_ack: bool
    ) -> int:
        delivery_tag = channel.next_delivery_tag
        channel.next_delivery_tag += 1
        if not no_ack:
            channel.unacked[delivery_tag] = Unacked(queue, entry, consumer, self.state.clock_ms)
            queue.unacked_count += 1
            if consumer is not None:
                consumer.unacked_count += 1
        return delivery_tag

    def _next_consumer(self, queue: Queue) -> Consumer | None:
        if queue.limits.single_active_consumer:
            active = self._active_consumer(queue)
            return active if active is not None and self._has_credit(active) else None
        count = len(queue.consumers)
        level = queue.top_priority
        while True:  # round-robin within a level, from where it stopped; lower levels after
            for step in range(count):
                position = (queue.next_consumer + step) % count
                consumer = queue.consumers[position]
                if consumer.priority == level and self._has_credit(consumer):
                    queue.next_consumer = (position + 1) % count
                    return consumer
            lower = [consumer.priority for consumer in queue.consumers if consumer.priority < level]
            if not lower:
                return None
            level = max(lower)

    @staticmethod
    def _active_consumer(queue: Queue) -> Consumer | None:
        """The single active consumer: the first of the highest priority. A consumer of higher
        priority takes over only once the active one has no unacknowledged messages (RabbitMQ
        docs, "Single Active Consumer"); a consumer that goes hands over at once."""
        active = queue.active
        if not any(consumer is active for consumer in queue.consumers):
            active = None  # it went: cancelled, its channel closed or its node lost
        if active is not None and active.unacked_count:
            return active
        best = max(queue.consumers, key=lambda consumer: consumer.priority, default=None)
        if active is not None and best is not None and active.priority >= best.priority:
            best = active
        queue.active = best
        return best

    def _has_credit(self, consumer: Consumer) -> bool:
        uncredited = self.state.uncredited.get((consumer.channel, consumer.consumer_tag))
        if uncredited is not None and (
            uncredited[0] >= DELIVERY_CREDIT_MESSAGES or uncredited[1] >= DELIVERY_CREDIT_BYTES
        ):
            return False  # its node has not written out what it has: the message waits here
        if consumer.no_ack:
            return True
        if consumer.prefetch_count and consumer.unacked_count >= consumer.prefetch_count:
            return False
        channel = self.state.channels[consumer.channel]
        return not (
            channel.global_prefetch_count and len(channel.unacked) >= channel.global_prefetch_count
        )

    def _dispatch(self, queue: Queue) -> None:
        """Hand the ready messages to the consumers with credit: the highest x-priority first,
        round-robin among equals; with x-single-active-consumer only to the active one."""
        self._expire(queue)
        while queue.ready_count:
            consumer = self._next_consumer(queue)
            if consumer is None:
                return
            entry = queue.take()
            channel = self.state.channels[consumer.channel]
            delivery_tag = self._hand_out(channel, queue, entry, consumer, consumer.no_ack)
            message = entry.message
            uncredited = self.state.uncredited.setdefault(
                (consumer.channel, consumer.consumer_tag), [0, 0]
            )
            uncredited[0] += 1
            uncredited[1] += len(message.body)
            self._effects.append(
                Deliver(
                    consumer.channel,
                    consumer.consumer_tag,
                    delivery_tag,
                    entry.redelivered,
                    message.exchange,
                    message.routing_key,
                    message.properties,
                    message.body,
                    _annotations(queue, entry),
                )
            )

    # --- acknowledgements ----------------------------------------------------------------

    def _take_unacked(self, command: c.Settle | c.Reject) -> list[Unacked]:
        channel = self.state.channels.get(command.channel)
        unacked = channel.unacked if channel is not None else {}
        if command.multiple:
            tags = [
                tag for tag in unacked if command.delivery_tag == 0 or tag <= command.delivery_tag
            ]
            if not tags and command.delivery_tag not in unacked and command.delivery_tag != 0:
                raise _Refusal(self._unknown_tag(command.delivery_tag))
        elif command.delivery_tag in unacked:
            tags = [command.delivery_tag]
        else:
            raise _Refusal(self._unknown_tag(command.delivery_tag))
        return [self._settle_one(unacked.pop(tag)) for tag in tags]

    @staticmethod
    def _unknown_tag(delivery_tag: int) -> Refused:
        return _refuse(ReplyCode.PRECONDITION_FAILED, f"unknown delivery tag {delivery_tag}")

    @staticmethod
    def _settle_one(unacked: Unacked) -> Unacked:
        unacked.queue.unacked_count -= 1
        if unacked.consumer is not None:
            unacked.consumer.unacked_count -= 1
        return unacked

    def _settle(self, command: c.Settle) -> Reply:
        settled = self._take_unacked(command)
        self._redispatch(settled)
        return MessageCount(len(settled))

    def _reject(self, command: c.Reject) -> Reply:
        settled = self._take_unacked(command)
        for unacked in settled:
            if unacked.queue.deleted:
                continue
            if command.requeue:
                self._return(unacked.queue, unacked.entry)
            else:
                self._dead_letter(unacked.queue, unacked.entry.message, "rejected")
        self._redispatch(settled)
        return Ok()

    def _return(self, queue: Queue, entry: Entry) -> None:
        """Back to its place in the queue, or dead-lettered once past the delivery limit."""
        entry.redelivered = True
        entry.delivery_count += 1
        limit = queue.limits.delivery_limit
        if limit is not None and entry.delivery_count > limit:
            self._dead_letter(queue, entry.message, "delivery_limit")
        else:
            queue.give_back(entry)

    def _redispatch(self, settled: list[Unacked]) -> None:
        """Settling frees credit: dispatch every queue it may unblock, each once, in order."""
        queues: dict[int, Queue] = {}
        for unacked in settled:
            queues.setdefault(id(unacked.queue), unacked.queue)
            if unacked.consumer is not None:
                channel = self.state.channels.get(unacked.consumer.channel)
                for queue in channel.consumers.values() if channel is not None else ():
                    queues.setdefault(id(queue), queue)
        for queue in queues.values():
            if not queue.deleted:
                self._dispatch(queue)

    def _recover(self, command: c.Recover) -> Reply:
        channel = self.state.channels.get(command.channel)
        if channel is not None:
            self._redispatch(self._give_back_unacked(channel))
        return Ok()

    def _give_back_unacked(self, channel: Channel) -> list[Unacked]:
        settled = [self._settle_one(unacked) for unacked in channel.unacked.values()]
        channel.unacked.clear()
        for unacked in settled:
            if not unacked.queue.deleted:
                self._return(unacked.queue, unacked.entry)
        return settled

    # --- endings -------------------------------------------------------------------------

    def _close_channel(self, command: c.CloseChannel) -> Reply:
        self.state.failed_channels.discard(command.channel)
        self._release_channels([command.channel])
        return Ok()

    def _release_channels(self, refs: list[c.ChannelRef]) -> None:
        """Cancel every consumer of these channels first, then return their unacked messages.

        In that order, a returned message can only go to a consumer that lives on: returning
        one channel's messages before the next dying channel's consumers are gone would hand
        them to a dead consumer and count a delivery that never happened.
        """
        channels = [
            channel for ref in refs if (channel := self.state.channels.pop(ref, None)) is not None
        ]
        for channel in channels:
            for consumer_tag in list(channel.consumers):
                self._remove_consumer(channel, consumer_tag)
        self._redispatch(
            [unacked for channel in channels for unacked in self._give_back_unacked(channel)]
        )

    def _grant_credit(self, command: c.GrantCredit) -> Reply:
        key = (command.channel, command.consumer_tag)
        uncredited = self.state.uncredited.get(key)
        if uncredited is None:
            return Ok()  # the consumer went meanwhile (or a direct reply-to consumer)
        uncredited[0] = max(0, uncredited[0] - command.messages)
        uncredited[1] = max(0, uncredited[1] - command.bytes)
        channel = self.state.channels.get(command.channel)
        queue = channel.consumers.get(command.consumer_tag) if channel is not None else None
        if queue is not None:
            self._dispatch(queue)
        return Ok()

    def _session_closed(self, command: c.SessionClosed) -> Reply:
        connection = (command.node, command.incarnation, command.connection)
        self.state.failed_connections.discard(connection)
        self.state.failed_channels = {
            ref for ref in self.state.failed_channels if ref.connection_ref != connection
        }
        self._release_channels(
            [ref for ref in self.state.channels if ref.connection_ref == connection]
        )
        for vhost in self.state.vhosts.values():
            for queue in [
                queue for queue in vhost.queues.values() if queue.exclusive_owner == connection
            ]:
                self._remove_queue(vhost, queue)
        return Ok()


def _check_properties_equivalence(
    kind: str, name: str, vhost: str, received_current: list[tuple[str, object, object]]
) -> None:
    for property_name, received, current in received_current:
        if received != current:
            raise _Refusal(
                _refuse(
                    ReplyCode.PRECONDITION_FAILED,
                    f"inequivalent arg '{property_name}' for {kind} '{name}' in vhost '{vhost}': "
                    f"received '{str(received).lower()}' but current is '{str(current).lower()}'",
                )
            )


def _check_reserved_name(kind: str, name: str) -> None:
    """AMQP 0-9-1: names starting with "amq." are the server's; clients may not create them."""
    if name.startswith("amq."):
        raise _Refusal(
            _refuse(
                ReplyCode.ACCESS_REFUSED, f"{kind} name '{name}' contains reserved prefix 'amq.*'"
            )
        )


def _check_arguments_equivalence(
    kind: str,
    name: str,
    vhost: str,
    compared: tuple[str, ...],
    received: c.Arguments,
    current: c.Arguments,
) -> None:
    for argument in compared:
        if received.get(argument) != current.get(argument):
            raise _Refusal(
                _refuse(
                    ReplyCode.PRECONDITION_FAILED,
                    f"inequivalent arg '{argument}' for {kind} '{name}' in vhost '{vhost}': "
                    f"received {_describe(received.get(argument))} but current is "
                    f"{_describe(current.get(argument))}",
                )
            )


# RabbitMQ 4.x: a quorum queue dead-letters (or drops) a message returned more than 20 times
QUORUM_DELIVERY_LIMIT = 20
CONSUMER_TIMEOUT_MS = 30 * 60 * 1000  # RabbitMQ's default consumer_timeout
MAX_PRIORITY = 255
OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")


def _queue_limits(command: c.DeclareQueue, queue_type: str) -> Limits:
    """Read and check the limit and dead-letter arguments (406 with RabbitMQ's reasons)."""
    arguments = command.arguments

    def invalid(argument: str, reason: str) -> _Refusal:
        return _invalid_argument("queue", command.queue, command.vhost, argument, reason)

    def integer(argument: str, least: int = 0) -> int | None:
        return _integer_argument(arguments, argument, "queue", command.queue, command.vhost, least)

    def string(argument: str) -> str | None:
        value = arguments.get(argument)
        if value is not None and not isinstance(value, str):
            raise invalid(argument, f"{{unacceptable_type,{_amqp_type_name(value)}}}")
        return value

    overflow = string("x-overflow") or "drop-head"
    if overflow not in OVERFLOW_MODES:
        raise invalid("x-overflow", "invalid_overflow")
    dead_letter_exchange = string("x-dead-letter-exchange")
    dead_letter_routing_key = string("x-dead-letter-routing-key")
    single_active_consumer = arguments.get("x-single-active-consumer", False)
    if not isinstance(single_active_consumer, bool):
        raise invalid(
            "x-single-active-consumer",
            f"{{unacceptable_type,{_amqp_type_name(single_active_consumer)}}}",
        )
    if dead_letter_routing_key is not None and dead_letter_exchange is None:
        raise invalid("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")
    delivery_limit = integer("x-delivery-limit", least=-1)
    if queue_type != "quorum" or delivery_limit == -1:
        delivery_limit = None  # classic queues count no deliveries; -1 means no limit
    elif delivery_limit is None:
        delivery_limit = QUORUM_DELIVERY_LIMIT
    strategy = string("x-dead-letter-strategy") or "at-most-once"
    if strategy not in ("at-most-once", "at-least-once"):
        raise invalid("x-dead-letter-strategy", "invalid_dlx_strategy")
    max_priority = integer("x-max-priority")
    if max_priority is not None and max_priority > MAX_PRIORITY:
        raise invalid("x-max-priority", f"{{max_value_exceeded,{max_priority}}}")
    expires_ms = integer("x-expires")
    if expires_ms == 0:
        raise invalid("x-expires", "{value_zero,0}")
    return Limits(
        message_ttl_ms=integer("x-message-ttl"),
        single_active_consumer=single_active_consumer,
        consumer_timeout_ms=integer("x-consumer-timeout", least=1) or CONSUMER_TIMEOUT_MS,
        max_priority=max_priority,
        quorum=queue_type == "quorum",
        at_least_once=strategy == "at-least-once"
        and queue_type == "quorum"
        and overflow == "reject-publish",
        expires_ms=expires_ms,
        max_length=integer("x-max-length"),
        max_length_bytes=integer("x-max-length-bytes"),
        overflow=overflow,
        delivery_limit=delivery_limit,
        dead_letter_exchange=dead_letter_exchange,
        dead_letter_routing_key=dead_letter_routing_key,
    )


def _invalid_argument(kind: str, name: str, vhost: str, argument: str, reason: str) -> _Refusal:
    """RabbitMQ's 406 for a declare argument it cannot take, with its reason."""
    return _Refusal(
        _refuse(
            ReplyCode.PRECONDITION_FAILED,
            f"invalid arg '{argument}' for {kind} '{name}' in vhost '{vhost}': {reason}",
        )
    )


def _integer_argument(
    arguments: c.Arguments, argument: str, kind: str, name: str, vhost: str, least: int = 0
) -> int | None:
    """An integer argument of a queue or exchange declare, or None when it is absent."""
    value = arguments.get(argument)
    if value is None:
        return None
    if not _is_integer(value):
        raise _invalid_argument(kind, name, vhost, argument, _not_an_integer(value))
    if value < least:
        raise _invalid_argument(kind, name, vhost, argument, f"{{value_negative,{value}}}")
    return value


def _not_an_integer(value: object) -> str:
    """RabbitMQ's reason for a non-integer where an integer argument belongs."""
    return f'"expected integer, got {_amqp_type_name(value)}"'


def _delayed_room(exchange: Exchange, message: Message) -> bool:
    """Whether a delayed-message exchange may hold one message more."""
    arguments = exchange.arguments
    count_max = arguments.get("x-delayed-max-length", DELAYED_MESSAGES_MAX)
    bytes_max = arguments.get("x-delayed-max-length-bytes", DELAYED_BYTES_MAX)
    return (
        len(exchange.delayed) < count_max
        and exchange.delayed_bytes + len(message.body) <= bytes_max
    )


def _is_integer(value: object) -> typing.TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _consumer_priority(command: c.Consume) -> int:
    priority = command.arguments.get("x-priority", 0)
    if not _is_integer(priority):  # any integer: negative priorities are allowed
        raise _invalid_argument(
            "queue", command.queue, command.vhost, "x-priority", _not_an_integer(priority)
        )
    return priority


def _annotations(queue: Queue, entry: Entry) -> Annotations | None:
    """The headers the broker adds on delivery, or None when it adds none."""
    delivery_count = entry.delivery_count if queue.queue_type == "quorum" else 0
    message = entry.message
    if not delivery_count and not message.deaths:
        return None
    return Annotations(delivery_count, message.deaths, message.first_death, message.last_death)


def _check_handler_table() -> None:
    """Every command has a handler: a command type added to the log's union without one would
    otherwise be found only when the first such entry is applied."""
    missing = set(typing.get_args(c.Command)) - set(Broker()._handlers)
    if missing:
        raise ImportError(f"no apply handler for {sorted(each.__name__ for each in missing)}")


_check_handler_table()
