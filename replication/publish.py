"""basic.publish: to queues by the exchange's rules, to a delayed exchange's timer heap, or
straight to a direct reply-to consumer."""

from __future__ import annotations

import heapq
import sys

from warrenmq.replication import commands as c
from warrenmq.replication import delivery
from warrenmq.replication.arguments import is_integer
from warrenmq.replication.body import Body
from warrenmq.replication.replies import Deliver, Reply, Routed
from warrenmq.replication.routing import route, sender_keys
from warrenmq.replication.state import Exchange, Message
from warrenmq.replication.step import ReplyCode, Step, refusal

# What an x-delayed-message exchange holds at most, unless its x-delayed-max-length and
# x-delayed-max-length-bytes arguments say otherwise (Warren's limits: the plugin has none, and
# its timers live in one node's memory; here they are replicated state on every node).
DELAYED_MESSAGES_MAX = 100_000
DELAYED_BYTES_MAX = 256 * 1024 * 1024


def apply_publish(step: Step, command: c.Publish) -> Reply:
    state = step.state
    exchange = step.exchange(command.vhost, command.exchange)
    if exchange.internal:
        raise refusal(
            ReplyCode.ACCESS_REFUSED,
            f"cannot publish to internal exchange '{exchange.name}' in vhost '{command.vhost}'",
        )
    if command.replies_to_channel:
        sender = state.channels.get(command.channel)
        if sender is None or sender.reply_consumer is None:
            raise refusal(ReplyCode.PRECONDITION_FAILED, "fast reply consumer does not exist")
    if command.exchange == "" and command.routing_key.startswith(c.REPLY_TO):
        return Routed(_reply(step, command))
    message = Message(
        sys.intern(command.exchange),  # a backlog holds few distinct names: one copy of each
        sys.intern(command.routing_key),
        _shared(command.properties),
        Body(state.last_index, command.body),  # the id: this command's Meta.index
        command.headers,
        expiration=command.expiration,
        priority=command.priority,
    )
    now_ms = command.now_ms or state.clock_ms
    state.clock_ms = max(state.clock_ms, now_ms)
    delay_ms = (command.headers or {}).get("x-delay")
    if exchange.type == "x-delayed-message" and is_integer(delay_ms) and delay_ms > 0:
        if not _delayed_room(exchange, message):
            return Routed(1, rejected=True)  # full: basic.nack, as reject-publish does
        exchange.delayed_count += 1
        exchange.delayed_bytes += len(message.body)
        heapq.heappush(exchange.delayed, (now_ms + delay_ms, exchange.delayed_count, message))
        step.keep(message.body)
        return Routed(1)  # held by the exchange; like the plugin, no mandatory return
    queues = route(
        state.vhosts[command.vhost],
        exchange,
        sender_keys(command.routing_key, command.headers, "CC", "BCC"),
        command.headers,
    )
    rejected = [queue for queue in queues if not delivery.enqueue(step, queue, message, now_ms)]
    if queues:  # held by a queue, or by a dead-letter target of one that refused it
        step.keep(message.body)
    return Routed(len(queues), bool(rejected))


# One bytes object for each of the last distinct properties seen: messages of one publisher
# mostly carry the same few (delivery mode, content type), and a queue holds millions of them.
_PROPERTIES: dict[bytes, bytes] = {}
_PROPERTIES_MAX = 4096
_PROPERTIES_SHARED_BYTES_MAX = 128


def _shared(properties: bytes) -> bytes:
    if len(properties) > _PROPERTIES_SHARED_BYTES_MAX:
        return properties
    shared = _PROPERTIES.get(properties)
    if shared is None:
        if len(_PROPERTIES) >= _PROPERTIES_MAX:
            _PROPERTIES.clear()
        shared = _PROPERTIES[properties] = properties
    return shared


def release_delayed(step: Step, now_ms: int) -> None:
    """Delayed messages whose time has come are routed now, by the x-delayed-type rules."""
    for vhost in step.state.vhosts.values():
        for exchange in list(vhost.exchanges.values()):
            while exchange.delayed and exchange.delayed[0][0] <= now_ms:
                due_ms, _, message = heapq.heappop(exchange.delayed)
                exchange.delayed_bytes -= len(message.body)
                keys = sender_keys(message.routing_key, message.headers, "CC", "BCC")
                for queue in route(vhost, exchange, keys, message.headers):
                    delivery.enqueue(step, queue, message, due_ms)


def _reply(step: Step, command: c.Publish) -> int:
    """Direct reply-to: straight to the requesting channel's reply consumer, no queue."""
    owner = c.ChannelRef.from_reply_to(command.routing_key)
    channel = step.state.channels.get(owner) if owner is not None else None
    if channel is None or channel.reply_consumer is None:
        return 0  # the requester is gone: unroutable, as in RabbitMQ
    delivery_tag = channel.next_delivery_tag
    channel.next_delivery_tag += 1
    step.effects.append(
        Deliver(
            channel.ref,
            channel.reply_consumer,
            delivery_tag,
            False,
            "",
            command.routing_key,
            command.properties,
            Body(0, command.body),
        )
    )
    return 1


def _delayed_room(exchange: Exchange, message: Message) -> bool:
    """Whether a delayed-message exchange may hold one message more."""
    arguments = exchange.arguments
    count_max: int = arguments.get("x-delayed-max-length", DELAYED_MESSAGES_MAX)
    bytes_max: int = arguments.get("x-delayed-max-length-bytes", DELAYED_BYTES_MAX)
    return (
        len(exchange.delayed) < count_max
        and exchange.delayed_bytes + len(message.body) <= bytes_max
    )
