"""Commands, replies and effects of the broker state machine, and their log encoding.

Commands are imperative verbs; every value that is not a pure function of the log (names the
server invents, password hashes, the proposer's identity) is filled in by the proposer, so that
`apply` stays deterministic. Replies go back to the proposer only; effects are carried out by the
node that owns them (DESIGN.md §2, step 5 and 6).

Log encoding (version 1), one entry = a batch of commands:
    u8 version | u32 command count | per command:
        u8 tag | u32 json length | json array of the non-bytes fields
        | per bytes field: u32 length, raw bytes
Bodies and content properties stay raw bytes: orjson handles only the metadata.
A command's fields are append-only, and a field added later has a default: an entry written
before the field existed has a shorter json array and decodes with that default.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import struct
import typing
from dataclasses import dataclass

import orjson

__all__ = [
    "AMQP_1_0_PROPERTIES",
    "LINK_CHANNEL_BASE",
    "ENCODING_VERSION",
    "MANAGEMENT_CONNECTION",
    "AddUser",
    "AddVhost",
    "Barrier",
    "BootstrapDefaults",
    "BindExchange",
    "BindQueue",
    "Cancel",
    "ChannelRef",
    "ClearPermissions",
    "ClearPolicy",
    "CloseChannel",
    "Command",
    "Consume",
    "DeclareExchange",
    "DeclareQueue",
    "DeleteExchange",
    "DeleteQueue",
    "DeleteUser",
    "DeleteVhost",
    "DrainCredit",
    "Get",
    "NodeDown",
    "NodeUp",
    "Publish",
    "PurgeQueue",
    "Qos",
    "Recover",
    "Reject",
    "SessionClosed",
    "SetAlarm",
    "SetPolicy",
    "GrantCredit",
    "SetPermissions",
    "Settle",
    "Tick",
    "UnbindExchange",
    "UnbindQueue",
    "decode_entry",
    "encode_entry",
]

# 2: Publish lost `seq` and `mandatory`, which apply never read (dedup is per entry; the
# session decides basic.return). Version 1 entries still decode: those two values are dropped.
ENCODING_VERSION = 2

REPLY_TO = "amq.rabbitmq.reply-to"  # RabbitMQ's direct reply-to pseudo-queue
# A message's `properties` for one published over AMQP 1.0: its body is then the message as
# the client sent it (sections), which fronts map for 0-9-1 consumers. A 0-9-1 property list
# is never empty (its flags are two bytes), so the two cannot be mistaken for each other.
AMQP_1_0_PROPERTIES = b""
LINK_CHANNEL_BASE = 1 << 40  # channel serials from here on are AMQP 1.0 links
# The connection serial of operations from the management API: client connections count from 1.
MANAGEMENT_CONNECTION = 0

Arguments = dict[str, typing.Any]
"""Declare/bind arguments and routing headers, as plain JSON-compatible values."""


@dataclass(frozen=True, slots=True)
class ChannelRef:
    """Where a command comes from and who owns an effect: one channel of one connection."""

    node: str  # node id of the node holding the client connection
    incarnation: int  # that node process's start number; a restart makes a new one
    connection: int  # connection serial, unique within the incarnation
    channel: int  # channel serial, unique within the connection (not the wire number)

    @property
    def connection_ref(self) -> tuple[str, int, int]:
        return (self.node, self.incarnation, self.connection)

    @property
    def survives_refusals(self) -> bool:
        """An AMQP 1.0 link: a refused command rejects one delivery or answers one management
        request, and the link goes on (a 0-9-1 channel is closed, so what follows is ignored)."""
        return self.channel >= LINK_CHANNEL_BASE

    @property
    def reply_to(self) -> str:
        """This channel's direct reply-to address: any node can route a reply by it alone."""
        token = orjson.dumps([self.node, self.incarnation, self.connection, self.channel])
        return f"{REPLY_TO}.{base64.urlsafe_b64encode(token).decode()}"

    @classmethod
    def from_reply_to(cls, routing_key: str) -> ChannelRef | None:
        """The channel a direct reply-to address names, or None when it is not one of ours.

        The address comes from a client's routing key, so it is checked to the letter: exactly
        [str, int, int, int], no bools, nothing nested. Anything else would reach `apply` as a
        key that cannot be hashed, on every node at once.
        """
        if not routing_key.startswith(REPLY_TO + "."):
            return None
        try:
            fields = orjson.loads(base64.urlsafe_b64decode(routing_key[len(REPLY_TO) + 1 :]))
        except ValueError:  # binascii.Error and orjson.JSONDecodeError are ValueErrors
            return None
        if (
            type(fields) is not list
            or len(fields) != 4
            or type(fields[0]) is not str
            or any(type(number) is not int for number in fields[1:])
        ):
            return None  # not one of ours: unroutable
        return cls(*fields)


# --- membership and identity -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeUp:
    """A node started as `incarnation`: everything its earlier incarnations held is released.

    From here on only this incarnation of the node may act: commands from any other are ignored.
    """

    node: str
    incarnation: int
    pid: int  # the node's process id, for operators (cluster-status)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeDown:
    """The leader lost `node` (it stopped answering): release what `incarnation` held."""

    node: str
    incarnation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BootstrapDefaults:
    """First boot: the default vhost and user, unless some node already created any."""

    vhost: str
    user: str
    password_hash: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    """The leader's clock, once a second: the only time the state machine knows."""

    now_ms: int  # milliseconds since the Unix epoch, on the proposing leader


@dataclass(frozen=True, slots=True, kw_only=True)
class Barrier:
    """Changes nothing. The node that proposed it sees it applied only after every entry the
    cluster committed before it was proposed: a read that must not miss a change made through
    another node (a refused login) waits for its own barrier first."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AddVhost:
    vhost: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AddUser:
    user: str
    password_hash: str  # RabbitMQ's rabbit_password_hashing_sha256 form, from the proposer
    tags: tuple[str, ...]
    """Creates the user, or replaces the password and tags of one that exists."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteUser:
    """The user and every permission it had go; its open connections are closed by their node."""

    user: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteVhost:
    """The vhost with its exchanges, queues (and their messages) and permissions."""

    vhost: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SetPermissions:
    """RabbitMQ's configure/write/read regular expressions of one user in one vhost."""

    user: str
    vhost: str
    configure: str
    write: str
    read: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearPermissions:
    user: str
    vhost: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SetPolicy:
    """Add or replace a policy (operator=False) or operator policy of a vhost; the proposer
    has checked the pattern and definition (replication/policies.py)."""

    vhost: str
    name: str
    pattern: str
    apply_to: str
    priority: int
    definition: Arguments
    operator: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearPolicy:
    vhost: str
    name: str
    operator: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SetAlarm:
    """A node's resource alarm began or cleared: publishers are blocked while any is set."""

    node: str
    resource: str  # "memory" or "disk", as RabbitMQ names them
    active: bool


# --- exchange and queue topology --------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DeclareExchange:
    channel: ChannelRef
    vhost: str
    exchange: str
    type: str
    passive: bool
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: Arguments


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteExchange:
    channel: ChannelRef
    vhost: str
    exchange: str
    if_unused: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class BindExchange:
    channel: ChannelRef
    vhost: str
    destination: str
    source: str
    routing_key: str
    arguments: Arguments


@dataclass(frozen=True, slots=True, kw_only=True)
class UnbindExchange:
    channel: ChannelRef
    vhost: str
    destination: str
    source: str
    routing_key: str
    arguments: Arguments


@dataclass(frozen=True, slots=True, kw_only=True)
class DeclareQueue:
    channel: ChannelRef
    vhost: str
    queue: str
    server_named: bool  # the proposer chose an amq.gen-… name: the amq. prefix is allowed
    passive: bool
    durable: bool
    exclusive: bool
    auto_delete: bool
    arguments: Arguments
    # the proposer's deprecated_features.permit.transient_nonexcl_queues (RabbitMQ 4.2's
    # default: permitted); denied, a new queue neither durable nor exclusive is refused
    permit_transient: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class BindQueue:
    channel: ChannelRef
    vhost: str
    queue: str
    exchange: str
    routing_key: str
    arguments: Arguments


@dataclass(frozen=True, slots=True, kw_only=True)
class UnbindQueue:
    channel: ChannelRef
    vhost: str
    queue: str
    exchange: str
    routing_key: str
    arguments: Arguments


@dataclass(frozen=True, slots=True, kw_only=True)
class PurgeQueue:
    channel: ChannelRef
    vhost: str
    queue: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteQueue:
    channel: ChannelRef
    vhost: str
    queue: str
    if_unused: bool
    if_empty: bool


# --- messages ----------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Publish:
    """Not frozen, as every other command is (shared/STYLE.md rule 7), and not to be changed
    all the same: every node decodes one for every message published, and a frozen dataclass
    sets each of its eleven fields through object.__setattr__ (2.07 us a Publish against
    0.37 us)."""

    channel: ChannelRef
    vhost: str
    exchange: str
    routing_key: str
    headers: Arguments | None  # the message's headers table, plain, for headers-exchange routing
    properties: bytes  # the content header's encoded property flags and list, as received
    body: bytes  # (for AMQP_1_0_PROPERTIES: the whole AMQP 1.0 message)
    now_ms: int = 0  # the proposer's clock (ms since the epoch): when the message arrived
    expiration: str | None = None  # the expiration property (per-message TTL, ms), checked
    replies_to_channel: bool = False  # reply_to was amq.rabbitmq.reply-to (rewritten to ours)
    priority: int = 0  # the priority property


@dataclass(frozen=True, slots=True, kw_only=True)
class Consume:
    channel: ChannelRef
    vhost: str
    queue: str
    consumer_tag: str  # already generated by the proposer when the client sent none
    no_ack: bool
    exclusive: bool
    arguments: Arguments
    # AMQP 1.0 link credit: the consumer starts with this many messages of delivery credit
    # (not the DELIVERY_CREDIT_* allowance) and gets more only by GrantCredit; None: 0-9-1
    credit: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel:
    channel: ChannelRef
    consumer_tag: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Qos:
    channel: ChannelRef
    prefetch_count: int
    global_: bool  # AMQP 'global': RabbitMQ reads it as "shared by the whole channel"


@dataclass(frozen=True, slots=True, kw_only=True)
class Get:
    channel: ChannelRef
    vhost: str
    queue: str
    no_ack: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Settle:
    """basic.ack, and the single acks that came right after it on the channel: the same as one
    Settle for `delivery_tag` followed by one for each of `more`, in order, up to the first
    unknown tag, which is refused (a 0-9-1 channel closes there; AMQP 1.0 links, which outlive
    a refusal, never join theirs). A consumer that acks each message sends thousands a
    second: one command for a read's worth of them (cluster/methods/basic.py joins them)."""

    channel: ChannelRef
    delivery_tag: int
    multiple: bool
    more: tuple[int, ...] = ()  # further delivery tags, each acked alone (multiple=false)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    """basic.nack and basic.reject"""

    channel: ChannelRef
    delivery_tag: int
    multiple: bool
    requeue: bool
    # the proposer's clock (ms since the epoch): a message dead-lettered now counts its next
    # queue's TTL from here, not from the state's clock, which lags until the next Tick (0 in
    # entries written before this field: the state's clock)
    now_ms: int = 0
    # a requeue counts as a failed delivery (x-delivery-count, the delivery limit); AMQP 1.0's
    # released and modified without delivery-failed requeue without counting
    count_delivery: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Recover:
    """basic.recover with requeue=true: every unacked message of the channel goes back."""

    channel: ChannelRef


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseChannel:
    channel: ChannelRef


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantCredit:
    """The consumer's node has written this many of its deliveries out to the client: the
    queue may hand it as many more (delivery credit; see DELIVERY_CREDIT_* in delivery.py)."""

    channel: ChannelRef
    consumer_tag: str
    messages: int
    bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DrainCredit:
    """An AMQP 1.0 consumer drains its link: what the queue could hand it has been handed, and
    the credit left is used up (it hands it nothing more until the next GrantCredit)."""

    channel: ChannelRef
    consumer_tag: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionClosed:
    """A client connection ended, however it ended."""

    node: str
    incarnation: int
    connection: int


Command = (
    NodeUp
    | AddVhost
    | AddUser
    | DeclareExchange
    | DeleteExchange
    | BindExchange
    | UnbindExchange
    | DeclareQueue
    | BindQueue
    | UnbindQueue
    | PurgeQueue
    | DeleteQueue
    | Publish
    | Consume
    | Cancel
    | Qos
    | Get
    | Settle
    | Reject
    | Recover
    | CloseChannel
    | SessionClosed
    | NodeDown
    | BootstrapDefaults
    | Tick
    | DeleteUser
    | DeleteVhost
    | SetPermissions
    | ClearPermissions
    | SetAlarm
    | GrantCredit
    | DrainCredit
    | SetPolicy
    | ClearPolicy
    | Barrier
)

# The tag of each command is its position here: append only, never reorder (log compatibility).
_COMMAND_TYPES: tuple[type, ...] = typing.get_args(Command)
_TAG_OF = {command_type: tag for tag, command_type in enumerate(_COMMAND_TYPES)}


class _Layout(typing.NamedTuple):
    plain: tuple[str, ...]  # field names carried in the json array, in order
    channel_fields: frozenset[str]  # plain fields that hold a ChannelRef
    tuple_fields: frozenset[str]  # plain fields that hold a tuple
    raw: tuple[str, ...]  # bytes fields, appended raw


def _layout(command_type: type) -> _Layout:
    hints = typing.get_type_hints(command_type)
    names = [field.name for field in dataclasses.fields(command_type)]
    raw = tuple(name for name in names if hints[name] is bytes)
    plain = tuple(name for name in names if hints[name] is not bytes)
    channel_fields = frozenset(name for name in plain if hints[name] is ChannelRef)
    tuple_fields = frozenset(name for name in plain if typing.get_origin(hints[name]) is tuple)
    return _Layout(plain, channel_fields, tuple_fields, raw)


_LAYOUTS = {command_type: _layout(command_type) for command_type in _COMMAND_TYPES}
# the json fields of a command as an older version wrote them, where they differ; a name the
# command no longer has is read and dropped
_OLDER_PLAIN: dict[int, dict[type, tuple[str, ...]]] = {
    1: {
        Publish: (
            "channel",
            "seq",
            "vhost",
            "exchange",
            "routing_key",
            "mandatory",
            *_LAYOUTS[Publish].plain[4:],
        )
    }
}
_DECODABLE_VERSIONS = frozenset({ENCODING_VERSION, *_OLDER_PLAIN})
_U32 = struct.Struct(">I")
_HEAD = struct.Struct(">BI")


def _plain_value(value: object) -> object:
    if isinstance(value, ChannelRef):
        return [value.node, value.incarnation, value.connection, value.channel]
    return value


def encode_entry(commands: typing.Sequence[Command]) -> bytes:
    parts = [_HEAD.pack(ENCODING_VERSION, len(commands))]
    for command in commands:
        layout = _LAYOUTS[type(command)]
        metadata = orjson.dumps([_plain_value(getattr(command, name)) for name in layout.plain])
        parts.append(_HEAD.pack(_TAG_OF[type(command)], len(metadata)))
        parts.append(metadata)
        for name in layout.raw:
            raw = getattr(command, name)
            parts.append(_U32.pack(len(raw)))
            parts.append(raw)
    return b"".join(parts)


class _Reading(typing.NamedTuple):
    """How decode_entry reads one command type's json fields as one version wrote them."""

    written: tuple[str, ...]  # the field names, in the order that version wrote them
    channel_fields: tuple[str, ...]  # of those, the ones that hold a ChannelRef
    tuple_fields: tuple[str, ...]  # ... and a tuple
    dropped: tuple[str, ...]  # ... and fields of an older version, gone since


@functools.cache
def _reading(version: int, command_type: type) -> _Reading:
    layout = _LAYOUTS[command_type]
    written = _OLDER_PLAIN.get(version, {}).get(command_type, layout.plain)
    return _Reading(
        written,
        tuple(name for name in written if name in layout.channel_fields),
        tuple(name for name in written if name in layout.tuple_fields),
        tuple(name for name in written if name not in layout.plain),
    )


def decode_entry(data: bytes) -> list[Command]:
    version, count = struct.unpack_from(">BI", data, 0)
    if version not in _DECODABLE_VERSIONS:
        raise ValueError(f"log entry version {version} is not one of {sorted(_DECODABLE_VERSIONS)}")
    offset = 5
    commands: list[Command] = []
    # the commands of one entry come mostly from a few channels: one ChannelRef object for
    # each (0.5 us to make one)
    channels: dict[tuple[typing.Any, ...], ChannelRef] = {}
    for _ in range(count):
        tag, length = _HEAD.unpack_from(data, offset)
        offset += _HEAD.size
        command_type = _COMMAND_TYPES[tag]
        reading = _reading(version, command_type)
        values = orjson.loads(data[offset : offset + length])
        offset += length
        if len(values) > len(reading.written):
            raise ValueError(
                f"{command_type.__name__} has {len(values)} fields, not <= {len(reading.written)}"
            )
        fields = dict(zip(reading.written, values, strict=False))  # missing: defaults
        for name in reading.channel_fields:
            if name in fields:
                key = tuple(fields[name])
                channel = channels.get(key)
                if channel is None:
                    channel = channels[key] = ChannelRef(*key)
                fields[name] = channel
        for name in reading.tuple_fields:
            if name in fields:
                fields[name] = tuple(fields[name])
        for name in reading.dropped:
            fields.pop(name, None)
        for name in _LAYOUTS[command_type].raw:
            (length,) = _U32.unpack_from(data, offset)
            offset += _U32.size
            fields[name] = data[offset : offset + length]
            offset += length
        commands.append(command_type(**fields))
    return commands
