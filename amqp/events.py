"""What the connection machine reports to the layer above (the node's session)."""

from __future__ import annotations

import typing
from dataclasses import dataclass

from pamqp import base, commands

from warrenmq.amqp.properties import PropertyList

__all__ = [
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
    """basic.publish with its content header and the whole body, joined from its frames."""

    channel: int
    method: commands.Basic.Publish
    properties: PropertyList  # the property list as received, checked, with what it holds
    body: bytes


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """A channel left the open state, by the client's close or by an error we sent."""

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
    | ChannelClosed
    | ConnectionClosed
)
