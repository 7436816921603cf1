"""A bare AMQP 0-9-1 client over a socket, built on pamqp, for sending what real clients won't."""

from __future__ import annotations

import socket
import time

from pamqp import body as content_body
from pamqp import commands, frame, header, heartbeat
from pamqp import exceptions as pamqp_exceptions

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


class RawClient:
    def __init__(self, port: int, timeout_s: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, channel: int, value) -> None:
        self.send(frame.marshal(value, channel))

    def read_raw(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_frame(self):
        """The next frame other than a heartbeat, as (channel, frame); None once the peer closed."""
        while True:
            try:
                consumed, channel, value = frame.unmarshal(self.buffer)
            except pamqp_exceptions.UnmarshalingException:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return None
                self.buffer += chunk
                continue
            self.buffer = self.buffer[consumed:]
            if not isinstance(value, heartbeat.Heartbeat):
                return channel, value

    def expect(self, frame_type, channel: int | None = None):
        received = self.read_frame()
        assert received is not None, f"connection closed while waiting for {frame_type.name}"
        got_channel, value = received
        assert isinstance(value, frame_type), f"expected {frame_type.name}, got {value!r}"
        if channel is not None:
            assert got_channel == channel
        return value

    def closed_by_peer(self, timeout_s: float) -> bool:
        """True when the server closes the socket within timeout_s (data before that is read)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
            if not chunk:
                return True
            self.buffer += chunk
        return False

    def start(self, mechanism: str = "PLAIN", response: bytes = b"\x00guest\x00guest"):
        """Send the header and start-ok; return the server's reply (tune or close)."""
        self.send(PROTOCOL_HEADER)
        self.expect(commands.Connection.Start, 0)
        self.send_frame(
            0,
            commands.Connection.StartOk(
                client_properties={"capabilities": {"consumer_cancel_notify": True}},
                mechanism=mechanism,
                response=response.decode(),
                locale="en_US",
            ),
        )
        return self.read_frame()[1]

    def open(
        self,
        vhost: str = "/",
        heartbeat_s: int = 0,
        frame_max: int = 131072,
        channel_max: int = 2047,
    ):
        tune = self.start()
        assert isinstance(tune, commands.Connection.Tune), tune
        self.send_frame(
            0,
            commands.Connection.TuneOk(
                channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat_s
            ),
        )
        self.send_frame(0, commands.Connection.Open(virtual_host=vhost))
        return self.read_frame()[1]

    def open_channel(self, channel: int = 1) -> None:
        self.send_frame(channel, commands.Channel.Open())
        self.expect(commands.Channel.OpenOk, channel)

    def publish(self, channel: int, exchange: str, routing_key: str, body: bytes, **flags) -> None:
        self.send_frame(
            channel, commands.Basic.Publish(exchange=exchange, routing_key=routing_key, **flags)
        )
        self.send_frame(channel, header.ContentHeader(0, len(body), commands.Basic.Properties()))
        if body:
            self.send_frame(channel, content_body.ContentBody(body))
