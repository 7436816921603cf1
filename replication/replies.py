"""What `apply` returns: one reply for the proposer and effects for the nodes that own them."""

from __future__ import annotations

from dataclasses import dataclass, field

from warrenmq.replication.commands import ChannelRef

__all__ = [
    "Applied",
    "CancelConsumer",
    "Deliver",
    "Effect",
    "GetEmpty",
    "GetOk",
    "Ignored",
    "MessageCount",
    "Ok",
    "QueueDeclared",
    "Refused",
    "Reply",
    "Routed",
]


@dataclass(frozen=True, slots=True)
class Ok:
    """The command took effect and its AMQP reply carries no data."""


@dataclass(frozen=True, slots=True)
class Refused:
    """The command broke a rule; the proposer closes the channel or connection with this."""

    reply_code: int
    reply_text: str  # the explanation; the protocol layer prefixes the code's name


@dataclass(frozen=True, slots=True)
class Ignored:
    """The command came from a channel or connection that an earlier error already closed."""


@dataclass(frozen=True, slots=True)
class QueueDeclared:
    queue: str
    message_count: int
    consumer_count: int


@dataclass(frozen=True, slots=True)
class MessageCount:
    """Reply of queue.purge and queue.delete."""

    message_count: int


@dataclass(frozen=True, slots=True)
class Routed:
    """Reply of basic.publish: how many queues took the message."""

    queue_count: int


@dataclass(frozen=True, slots=True)
class GetOk:
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    message_count: int
    properties: bytes
    body: bytes


@dataclass(frozen=True, slots=True)
class GetEmpty:
    pass


Reply = Ok | Refused | Ignored | QueueDeclared | MessageCount | Routed | GetOk | GetEmpty


@dataclass(frozen=True, slots=True)
class Deliver:
    """basic.deliver to one consumer. Only the node holding `owner`'s connection sends it."""

    owner: ChannelRef
    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    properties: bytes
    body: bytes


@dataclass(frozen=True, slots=True)
class CancelConsumer:
    """The server cancels a consumer (its queue was deleted): RabbitMQ's consumer_cancel_notify."""

    owner: ChannelRef
    consumer_tag: str


Effect = Deliver | CancelConsumer


@dataclass(slots=True)
class Applied:
    reply: Reply
    effects: list[Effect] = field(default_factory=list)
