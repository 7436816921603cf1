"""A lean AMQP 0-9-1 client for benchmarks: pre-encoded publish frames, a sliding confirm
window, hand-parsed acks and deliveries. pamqp encodes the handshake and the few methods; the
hot path builds no pamqp objects, so the client costs a few µs per message and the broker, not
the client, sets the pace. Each function reports the client's own CPU seconds beside the wall
time, so a reader can see it was not the limit.

Every message body starts with its number (8 bytes, big-endian): `drain` checks that each
number arrives exactly once.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from dataclasses import dataclass

from pamqp import commands, frame, header
from pamqp import exceptions as pamqp_exceptions

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_HEADER = struct.Struct(">BHI")
METHOD_FRAME, HEADER_FRAME, BODY_FRAME = 1, 2, 3
FRAME_END = b"\xce"
BASIC_ACK = (60, 80)
BASIC_NACK = (60, 120)
BASIC_DELIVER = (60, 60)
CHANNEL = 1


@dataclass
class Result:
    messages: int
    wall_s: float
    cpu_s: float  # the client's own

    @property
    def per_s(self) -> float:
        return self.messages / self.wall_s if self.wall_s else 0.0


class Connection:
    def __init__(self, host: str, port: int, user: str = "guest", password: str = "guest") -> None:
        self.sock = socket.create_connection((host, port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.sock.sendall(PROTOCOL_HEADER)
        self._expect(commands.Connection.Start)
        credentials = f"\x00{user}\x00{password}"
        self._send(0, commands.Connection.StartOk(mechanism="PLAIN", response=credentials))
        tune = self._expect(commands.Connection.Tune)
        self.frame_max = tune.frame_max or 131072
        self._send(0, commands.Connection.TuneOk(tune.channel_max, self.frame_max, 0))
        self._send(0, commands.Connection.Open(virtual_host="/"))
        self._expect(commands.Connection.OpenOk)
        self._send(CHANNEL, commands.Channel.Open())
        self._expect(commands.Channel.OpenOk)

    def _send(self, channel: int, value: object) -> None:
        self.sock.sendall(frame.marshal(value, channel))

    def _expect(self, kind: type) -> object:
        while True:
            try:
                consumed, _, value = frame.unmarshal(bytes(self.buffer))
            except pamqp_exceptions.UnmarshalingException:
                self._fill()
                continue
            del self.buffer[:consumed]
            if isinstance(value, kind):
                return value
            if isinstance(value, (commands.Connection.Close, commands.Channel.Close)):
                raise RuntimeError(f"the broker closed: {value}")

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        self.buffer += chunk

    def frames(self) -> list[tuple[int, bytes]]:
        """The complete frames in the buffer, as (type, payload)."""
        found = []
        buffer, offset = self.buffer, 0
        while len(buffer) - offset >= 8:
            kind, _, size = FRAME_HEADER.unpack_from(buffer, offset)
            end = offset + 7 + size
            if end >= len(buffer):
                break
            found.append((kind, bytes(buffer[offset + 7 : end])))
            offset = end + 1
        del buffer[:offset]
        return found

    def declare_quorum_queue(self, queue: str) -> None:
        arguments = {"x-queue-type": "quorum"}
        self._send(CHANNEL, commands.Queue.Declare(queue=queue, durable=True, arguments=arguments))
        self._expect(commands.Queue.DeclareOk)

    def message_count(self, queue: str) -> int:
        self._send(CHANNEL, commands.Queue.Declare(queue=queue, passive=True))
        declared = self._expect(commands.Queue.DeclareOk)
        return int(declared.message_count)

    def close(self) -> None:
        try:
            self._send(0, commands.Connection.Close(200, "bye", 0, 0))
            self.sock.settimeout(5)
            self._expect(commands.Connection.CloseOk)
        except (OSError, RuntimeError, ConnectionError):
            pass
        self.sock.close()


def publish(
    host: str, port: int, queue: str, first: int, count: int, size: int, window: int = 1000
) -> Result:
    """`count` persistent messages numbered from `first`, with at most `window` unconfirmed."""
    connection = Connection(host, port)
    connection._send(CHANNEL, commands.Confirm.Select())
    connection._expect(commands.Confirm.SelectOk)
    method = frame.marshal(commands.Basic.Publish(exchange="", routing_key=queue), CHANNEL)
    properties = commands.Basic.Properties(delivery_mode=2)
    content_header = frame.marshal(header.ContentHeader(0, size, properties), CHANNEL)
    body_prefix = FRAME_HEADER.pack(BODY_FRAME, CHANNEL, size)
    padding = bytes(size - 8)
    sent = confirmed = 0
    started_wall, started_cpu = time.monotonic(), time.process_time()
    sock = connection.sock
    sock.setblocking(False)
    pending = bytearray()
    while confirmed < count:
        room = min(window - (sent - confirmed), count - sent, 200)
        for number in range(first + sent, first + sent + max(0, room)):
            pending += method
            pending += content_header
            pending += body_prefix
            pending += number.to_bytes(8, "big")
            pending += padding
            pending += FRAME_END
        sent += max(0, room)
        wants_write = bool(pending)
        readable, writable, _ = select.select([sock], [sock] if wants_write else [], [], 10.0)
        if writable and pending:
            try:
                written = sock.send(pending)
            except BlockingIOError:
                written = 0
            del pending[:written]
        if readable:
            try:
                chunk = sock.recv(1 << 20)
            except BlockingIOError:
                chunk = None
            if chunk == b"":
                raise ConnectionError("the broker closed the connection")
            connection.buffer += chunk or b""
            for kind, payload in connection.frames():
                if kind != METHOD_FRAME:
                    continue
                class_method = struct.unpack_from(">HH", payload)
                if class_method in (BASIC_ACK, BASIC_NACK):
                    tag, flags = struct.unpack_from(">QB", payload, 4)
                    if class_method == BASIC_NACK:
                        raise RuntimeError(f"the broker nacked message {tag}")
                    confirmed = tag if flags & 1 else max(confirmed, tag)
                elif class_method == (20, 40):
                    raise RuntimeError("the broker closed the channel")
    result = Result(count, time.monotonic() - started_wall, time.process_time() - started_cpu)
    sock.setblocking(True)
    connection.close()
    return result


def drain(
    host: str,
    port: int,
    queue: str,
    count: int,
    prefetch: int = 1000,
    multi_ack_every: int = 100,
    first: int = 0,
) -> Result:
    """Consume `count` messages with manual multiple acks; every number must come once."""
    connection = Connection(host, port)
    connection._send(CHANNEL, commands.Basic.Qos(prefetch_count=prefetch))
    connection._expect(commands.Basic.QosOk)
    connection._send(CHANNEL, commands.Basic.Consume(queue=queue, consumer_tag="drain"))
    connection._expect(commands.Basic.ConsumeOk)
    seen = bytearray(count)
    received = unacked = 0
    last_tag = 0
    expecting_body = False
    started_wall, started_cpu = time.monotonic(), time.process_time()
    sock = connection.sock
    sock.settimeout(30)
    while received < count:
        connection._fill()
        acks = bytearray()
        for kind, payload in connection.frames():
            if kind == METHOD_FRAME:
                if struct.unpack_from(">HH", payload) == BASIC_DELIVER:
                    tag_at = 5 + payload[4]
                    last_tag = struct.unpack_from(">Q", payload, tag_at)[0]
                    expecting_body = True
            elif kind == BODY_FRAME and expecting_body:
                expecting_body = False
                number = int.from_bytes(payload[:8], "big") - first
                if not 0 <= number < count or seen[number]:
                    raise RuntimeError(f"message {number + first} unexpected or twice")
                seen[number] = 1
                received += 1
                unacked += 1
                if unacked >= multi_ack_every or received == count:
                    acks += frame.marshal(commands.Basic.Ack(last_tag, multiple=True), CHANNEL)
                    unacked = 0
        if acks:
            sock.sendall(acks)
    result = Result(count, time.monotonic() - started_wall, time.process_time() - started_cpu)
    connection.close()
    return result
