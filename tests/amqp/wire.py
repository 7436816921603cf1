"""Driving the connection machine with no sockets: a login gate, frames in, frames out."""

from __future__ import annotations

import typing

from pamqp import commands, frame

from warrenmq.amqp.connection import Connection
from warrenmq.amqp.spec import PROTOCOL_HEADER


class Gate:
    def authenticate(self, username: str, password: str) -> bool:
        return (username, password) == ("guest", "guest")

    def vhost_refusal(self, username: str, vhost: str) -> str | None:
        return None if vhost == "/" else f"vhost {vhost} not found"

    def hold_refusal(self) -> bool:
        return False


def client_frame(channel: int, value: typing.Any) -> bytes:
    return frame.marshal(value, channel)


def frames_out(connection: Connection) -> list[tuple[int, typing.Any]]:
    data = connection.data_to_send()
    received = []
    while data:
        consumed, channel, value = frame.unmarshal(data)
        received.append((channel, value))
        data = data[consumed:]
    return received


def handshake(
    connection: Connection, frame_max: int = 131072, channel_max: int = 100
) -> list[typing.Any]:
    events = connection.receive_data(PROTOCOL_HEADER)
    events += connection.receive_data(
        client_frame(0, commands.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest"))
        + client_frame(
            0,
            commands.Connection.TuneOk(channel_max=channel_max, frame_max=frame_max, heartbeat=0),
        )
        + client_frame(0, commands.Connection.Open(virtual_host="/"))
    )
    return events
