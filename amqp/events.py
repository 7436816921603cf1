"""What the connection machine reports to the layer above (the node's session)."""

from __future__ import annotations

import typing
from dataclasses import dataclass

from pamqp import base

from warrenmq.amqp.properties import PropertyList

__all__ = [
    "ChannelCloseReceived",
    "ChannelClosed",
    "ChannelOpened",
    "ConnectionClosed",
    "ConnectionOpened",
    "ContentReceived",
    "Event",
    "MethodReceived",
]


@dataclass(frozen=True, slots=True)
class ConnectionOpened:
    user: str
    vhost: str
    client_properties: dict[str, typing.Any]  # the client's Connection.StartOk properties table


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    channel: int


@dataclass(frozen=True, slots=True)
class MethodReceived:
    """A method without content, for the broker (not connection.* or channel.*)."""

    channel: int
    method: base.Frame


@dataclass(frozen=True, slots=True)
class ContentReceived:
    """basic.publish with its content header and the whole body, joined from its frames (or a
    server-only method with content, which the session refuses)."""

    channel: int
    method: base.Frame
    properties: PropertyList  # the property list as received, checked, with what it holds
    body: bytes


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """A channel left the open state, by an error we sent."""

    channel: int


@dataclass(frozen=True, slots=True)
class ChannelCloseReceived:
    """The client sent channel.close: the channel takes nothing more, and its close-ok goes
    out when the session calls `Connection.answer_channel_close`, after the replies to what
    the client sent before (RabbitMQ handles a channel's methods in order)."""

    channel: int


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The connection is over: the transport should be closed once pending bytes are written."""

    reason: str


Event = (
    ConnectionOpened
    | ChannelOpened
    | MethodReceived
    | ContentReceived
    | ChannelCloseReceived
    | ChannelClosed
    | ConnectionClosed
)
