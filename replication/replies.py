"""What `apply` returns: one reply for the proposer and effects for the nodes that own them."""

from __future__ import annotations

from dataclasses import dataclass, field

from warrenmq.replication.body import Body
from warrenmq.replication.commands import ChannelRef

__all__ = [
    "Annotations",
    "Applied",
    "CancelConsumer",
    "ChannelTimedOut",
    "Death",
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
    """Reply of queue.purge and queue.delete, and of basic.ack (the messages it settled)."""

    message_count: int


@dataclass(frozen=True, slots=True)
class Routed:
    """Reply of basic.publish: how many queues it was routed to, and whether one refused it.

    A queue at its length limit with x-overflow reject-publish refuses the message (the
    publisher gets basic.nack in confirm mode); the other queues still take it.
    """

    queue_count: int
    rejected: bool = False


@dataclass(frozen=True, slots=True)
class Death:
    """One x-death record: a message dead-lettered from `queue` for `reason`, `count` times."""

    queue: str
    reason: str  # rejected, expired, maxlen or delivery_limit
    count: int
    time_ms: int  # the first time, by the leader's clock (Tick)
    exchange: str  # the exchange the message was published to before that first time
    routing_keys: tuple[str, ...]
    original_expiration: str | None = None  # its expiration property, removed on dead-lettering


@dataclass(frozen=True, slots=True)
class Annotations:
    """What the broker adds to a message's headers when it hands it out (the session writes
    them): x-delivery-count for quorum queues, x-death and the x-first/last-death headers."""

    delivery_count: int = 0  # times the message went back to its queue
    deaths: tuple[Death, ...] = ()  # most recent first
    first_death: Death | None = None  # the first dead-lettering: x-first-death-*
    last_death: Death | None = None  # the latest one: x-last-death-*


@dataclass(frozen=True, slots=True)
class GetOk:
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    message_count: int
    properties: bytes
    body: Body  # read() gives the bytes
    annotations: Annotations | None = None


@dataclass(frozen=True, slots=True)
class GetEmpty:
    pass


Reply = Ok | Refused | Ignored | QueueDeclared | MessageCount | Routed | GetOk | GetEmpty


@dataclass(slots=True)
class Deliver:
    """basic.deliver to one consumer. Only the node holding `owner`'s connection sends it.

    Not frozen, as every other effect is (shared/STYLE.md rule 7), and not to be changed all
    the same: it is made for every message delivered, and a frozen dataclass sets each field
    through object.__setattr__ (1.14 us a Deliver against 0.28 us)."""

    owner: ChannelRef
    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    properties: bytes
    body: Body  # read() gives the bytes
    annotations: Annotations | None = None


@dataclass(frozen=True, slots=True)
class CancelConsumer:
    """The server cancels a consumer (its queue was deleted): RabbitMQ's consumer_cancel_notify."""

    owner: ChannelRef
    consumer_tag: str


@dataclass(frozen=True, slots=True)
class ChannelTimedOut:
    """A delivery on this channel went unacknowledged past its consumer timeout: the owning
    node closes the channel with 406, as RabbitMQ does; closing returns its messages."""

    owner: ChannelRef
    timeout_ms: int


Effect = Deliver | CancelConsumer | ChannelTimedOut


@dataclass(slots=True)
class Applied:
    reply: Reply
    effects: list[Effect] = field(default_factory=list)
