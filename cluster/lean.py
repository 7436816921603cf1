"""A lean AMQP 0-9-1 client for benchmarks: pre-encoded publish frames, a sliding confirm
window, hand-parsed acks and deliveries. pamqp encodes the handshake and the few other methods;
the hot path builds no pamqp objects, so the client costs a few µs per message and the broker,
not the client, sets the pace. Every run reports the client's own CPU seconds beside the wall
time, so a reader can see it was not the limit.

Every body starts with a stamp: the message's id and its send time (wall clock, ns), so a
consumer on the same host computes end-to-end latency and a run can check each id arrived.
"""

from __future__ import annotations

import array
import select
import socket
import struct
import time
import typing
from dataclasses import dataclass, field

from pamqp import commands, frame, header
from pamqp import exceptions as pamqp_exceptions
from pamqp.common import FieldTable

__all__ = ["MIN_SIZE_BYTES", "STAMP", "Arrivals", "Confirms", "Connection", "Consumer", "Publisher"]

STAMP = struct.Struct(">QQ")  # message id, send time in ns (wall clock)
MIN_SIZE_BYTES = STAMP.size
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_HEADER = struct.Struct(">BHI")
METHOD_FRAME, HEADER_FRAME, BODY_FRAME = 1, 2, 3
FRAME_END = b"\xce"
CLASS_METHOD = struct.Struct(">HH")
BASIC_ACK = (60, 80)
BASIC_NACK = (60, 120)
BASIC_DELIVER = (60, 60)
CHANNEL_CLOSE = (20, 40)
CONNECTION_CLOSE = (10, 50)
# basic.ack on channel 1, whole: frame header, class and method, delivery_tag, multiple, end
ACK_FRAME = struct.Struct(">BHIHHQBB")
CHANNEL = 1
PUBLISH_BATCH = 200  # messages encoded per loop turn at most
PENDING_BYTES_MAX = 1 << 20  # encoded but unwritten bytes before encoding pauses
SELECT_S = 0.1  # a loop turn waits at most this long, so deadlines and stop checks hold
CONFIRM_TIMEOUT_S = 30.0  # after the deadline, outstanding confirms are awaited this long


class Connection:
    """A blocking handshake and channel 1, then raw frames for the caller's own loop."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str = "guest",
        password: str = "guest",
        virtual_host: str = "/",
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.sock.sendall(PROTOCOL_HEADER)
        self.expect(commands.Connection.Start)
        credentials = f"\x00{user}\x00{password}"
        self.send(0, commands.Connection.StartOk(mechanism="PLAIN", response=credentials))
        tune = self.expect(commands.Connection.Tune)
        self.frame_max = tune.frame_max or 131072
        self.send(0, commands.Connection.TuneOk(tune.channel_max, self.frame_max, 0))
        self.send(0, commands.Connection.Open(virtual_host=virtual_host))
        self.expect(commands.Connection.OpenOk)
        self.send(CHANNEL, commands.Channel.Open())
        self.expect(commands.Channel.OpenOk)

    def send(self, channel: int, value: typing.Any) -> None:
        self.sock.sendall(frame.marshal(value, channel))

    def expect(self, kind: type) -> typing.Any:
        """The next frame of this kind (blocking); a close from the broker raises."""
        while True:
            try:
                consumed, _, value = frame.unmarshal(bytes(self.buffer))
            except pamqp_exceptions.UnmarshalingException:
                self.fill()
                continue
            del self.buffer[:consumed]
            if isinstance(value, kind):
                return value
            if isinstance(value, (commands.Connection.Close, commands.Channel.Close)):
                raise RuntimeError(f"the broker closed: {value}")

    def fill(self) -> bool:
        """Read what the socket has into the buffer; False if a non-blocking read found none."""
        try:
            chunk = self.sock.recv(1 << 20)
        except BlockingIOError:
            return False
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        self.buffer += chunk
        return True

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

    def declare_queue(self, queue: str, queue_type: str = "quorum") -> None:
        arguments: FieldTable = {"x-queue-type": queue_type}
        self.send(CHANNEL, commands.Queue.Declare(queue=queue, durable=True, arguments=arguments))
        self.expect(commands.Queue.DeclareOk)

    def declare_exchange(self, exchange: str, exchange_type: str) -> None:
        self.send(
            CHANNEL,
            commands.Exchange.Declare(exchange=exchange, exchange_type=exchange_type, durable=True),
        )
        self.expect(commands.Exchange.DeclareOk)

    def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        self.send(
            CHANNEL, commands.Queue.Bind(queue=queue, exchange=exchange, routing_key=routing_key)
        )
        self.expect(commands.Queue.BindOk)

    def purge(self, queue: str) -> None:
        self.send(CHANNEL, commands.Queue.Purge(queue=queue))
        self.expect(commands.Queue.PurgeOk)

    def message_count(self, queue: str) -> int:
        self.send(CHANNEL, commands.Queue.Declare(queue=queue, passive=True))
        return int(self.expect(commands.Queue.DeclareOk).message_count)

    def close(self) -> None:
        try:
            self.sock.setblocking(True)
            self.send(0, commands.Connection.Close(200, "bye", 0, 0))
            self.sock.settimeout(5)
            self.expect(commands.Connection.CloseOk)
        except (OSError, RuntimeError, ConnectionError):
            pass
        self.sock.close()


def _refuse_closes(class_method: tuple[int, int]) -> None:
    if class_method in (CHANNEL_CLOSE, CONNECTION_CLOSE):
        raise RuntimeError("the broker closed the channel or the connection")


@dataclass
class Confirms:
    """The ids of confirmed messages, and each one's latency from send to confirm."""

    ids: array.array[int] = field(default_factory=lambda: array.array("Q"))
    latencies_ms: array.array[float] = field(default_factory=lambda: array.array("d"))


@dataclass
class Arrivals:
    """The ids of delivered messages, and each one's latency from the send time in its stamp."""

    ids: array.array[int] = field(default_factory=lambda: array.array("Q"))
    latencies_ms: array.array[float] = field(default_factory=lambda: array.array("d"))
    first_s: float = 0.0  # wall clock: comparable across processes on one host
    last_s: float = 0.0

    def record(self, body_start: bytes) -> None:
        if len(body_start) < MIN_SIZE_BYTES:
            return  # not a message of a benchmark
        message_id, sent_ns = STAMP.unpack_from(body_start)
        now_ns = time.time_ns()
        self.ids.append(message_id)
        self.latencies_ms.append((now_ns - sent_ns) / 1e6)
        self.last_s = now_ns / 1e9
        if not self.first_s:
            self.first_s = self.last_s


@dataclass
class Publisher:
    """Publishes over one connection with at most `window` messages unconfirmed (0: no
    confirms): a confirm frees its place at once, nothing waits for a whole batch (PerfTest's
    `--confirm`). Message ids run from `first_id`; delivery tag t carries `first_id + t - 1`."""

    connection: Connection
    exchange: str
    routing_key: str
    size: int
    window: int
    first_id: int = 0
    persistent: bool = True
    sent: int = 0
    confirmed: int = 0
    nacked: int = 0
    confirmed_at_deadline: int = 0  # confirmed before the deadline passed: a rate's numerator
    confirms: Confirms = field(default_factory=Confirms)
    _sent_at: array.array[float] = field(default_factory=lambda: array.array("d"))
    _lowest: int = 1  # the lowest delivery tag not yet confirmed or nacked
    _ahead: set[int] = field(default_factory=set)  # tags settled singly above _lowest

    def run(
        self,
        deadline_s: float,
        count: int | None = None,
        rate: float = 0.0,
        tick: typing.Callable[[], None] = lambda: None,
    ) -> None:
        """Publish until the monotonic `deadline_s` or `count` messages, at most `rate` a
        second (0: as fast as the window allows), then await the outstanding confirms.
        `tick` is called every loop turn (a turn lasts at most SELECT_S)."""
        connection = self.connection
        if self.window:
            connection.send(CHANNEL, commands.Confirm.Select())
            connection.expect(commands.Confirm.SelectOk)
        publish = frame.marshal(
            commands.Basic.Publish(exchange=self.exchange, routing_key=self.routing_key), CHANNEL
        )
        properties = commands.Basic.Properties(delivery_mode=2 if self.persistent else 1)
        content_header = frame.marshal(header.ContentHeader(0, self.size, properties), CHANNEL)
        prefix = publish + content_header + FRAME_HEADER.pack(BODY_FRAME, CHANNEL, self.size)
        suffix = bytes(self.size - MIN_SIZE_BYTES) + FRAME_END
        sock = connection.sock
        sock.setblocking(False)
        pending = bytearray()
        started_s = time.monotonic()
        while True:
            now_s = time.monotonic()
            sending = now_s < deadline_s and (count is None or self.sent < count)
            if sending:
                self.confirmed_at_deadline = self.confirmed
            outstanding = self.sent - self.confirmed - self.nacked if self.window else 0
            settled = not outstanding and not pending
            if not sending and (settled or now_s > deadline_s + CONFIRM_TIMEOUT_S):
                break
            room = self._room(sending, outstanding, len(pending), count, rate, now_s - started_s)
            for _ in range(room):
                self._sent_at.append(time.perf_counter())
                pending += prefix
                pending += STAMP.pack(self.first_id + self.sent, time.time_ns())
                pending += suffix
                self.sent += 1
            wait_s = SELECT_S
            if sending and rate and not room:
                wait_s = min(SELECT_S, (self.sent + 1) / rate - (now_s - started_s))
            readable, writable, _ = select.select(
                [sock], [sock] if pending else [], [], max(0.0, wait_s)
            )
            if writable:
                try:
                    del pending[: sock.send(pending)]
                except BlockingIOError:
                    pass
            if readable and connection.fill():
                self._read_confirms()
            tick()

    def _room(
        self,
        sending: bool,
        outstanding: int,
        pending_bytes: int,
        count: int | None,
        rate: float,
        elapsed_s: float,
    ) -> int:
        """How many messages this loop turn may encode."""
        if not sending or pending_bytes > PENDING_BYTES_MAX:
            return 0
        room = PUBLISH_BATCH
        if self.window:
            room = min(room, self.window - outstanding)
        if count is not None:
            room = min(room, count - self.sent)
        if rate:
            room = min(room, int(rate * elapsed_s) + 1 - self.sent)
        return max(0, room)

    def _read_confirms(self) -> None:
        for kind, payload in self.connection.frames():
            if kind != METHOD_FRAME:
                continue
            class_method = CLASS_METHOD.unpack_from(payload)
            if class_method in (BASIC_ACK, BASIC_NACK):
                delivery_tag, flags = struct.unpack_from(">QB", payload, 4)
                self._settle(delivery_tag, bool(flags & 1), class_method == BASIC_ACK)
            _refuse_closes(class_method)

    def _settle(self, delivery_tag: int, multiple: bool, acked: bool) -> None:
        """A confirm (or nack) for one tag or, with `multiple`, for every tag up to it that
        was not settled singly before."""
        if multiple:
            tags = [t for t in range(self._lowest, delivery_tag + 1) if t not in self._ahead]
            self._ahead = {tag for tag in self._ahead if tag > delivery_tag}
            self._lowest = max(self._lowest, delivery_tag + 1)
        elif self._lowest <= delivery_tag <= self.sent and delivery_tag not in self._ahead:
            tags = [delivery_tag]
            if delivery_tag == self._lowest:
                self._lowest += 1
            else:
                self._ahead.add(delivery_tag)
        else:
            return  # settled before, or never sent: not ours to count
        while self._lowest in self._ahead:
            self._ahead.discard(self._lowest)
            self._lowest += 1
        if not acked:
            self.nacked += len(tags)
            return
        now = time.perf_counter()
        sent_at = self._sent_at
        self.confirmed += len(tags)
        self.confirms.ids.extend(self.first_id + tag - 1 for tag in tags)
        self.confirms.latencies_ms.extend((now - sent_at[tag - 1]) * 1000 for tag in tags)


@dataclass
class Consumer:
    """Consumes one queue with manual acks and prefetch `qos` (0: unlimited): an ack for each
    message, or with `multi_ack_every` N one multiple ack for every N (PerfTest's flags). Acks
    of one read go out in one write. `arrivals` keeps every message's id and latency, for a
    caller to check that each arrived exactly once."""

    connection: Connection
    queue: str
    qos: int
    multi_ack_every: int = 0
    received: int = 0
    received_at_deadline: int = 0  # received before the deadline passed
    arrivals: Arrivals = field(default_factory=Arrivals)
    _delivery_tag: int = 0  # of the message whose content is arriving
    _body_size: int = 0  # its body's bytes
    _body_left: int = 0  # of them still to come
    _unacked: int = 0
    _last_done_tag: int = 0  # of the last message whose content is complete

    def run(
        self,
        stop: typing.Callable[[], bool],
        count: int | None = None,
        deadline_s: float = float("inf"),
    ) -> None:
        """Consume until `count` messages arrived or `stop()` (asked every loop turn) says so;
        `received_at_deadline` records how many had arrived at the monotonic `deadline_s`."""
        connection = self.connection
        connection.send(CHANNEL, commands.Basic.Qos(prefetch_count=self.qos))
        connection.expect(commands.Basic.QosOk)
        connection.send(CHANNEL, commands.Basic.Consume(queue=self.queue, consumer_tag="bench"))
        connection.expect(commands.Basic.ConsumeOk)
        sock = connection.sock
        sock.setblocking(False)
        acks = bytearray()
        self._read_deliveries(acks)  # the read that brought consume-ok may have brought some
        while (count is None or self.received < count) and not stop():
            self._send(acks)
            if time.monotonic() < deadline_s:
                self.received_at_deadline = self.received
            readable, _, _ = select.select([sock], [], [], SELECT_S)
            acks = bytearray()
            if readable and connection.fill():
                self._read_deliveries(acks)
            if not readable and self._unacked:
                self._ack(acks, multiple=True)  # a quiet moment: what waits for N goes now
        if self._unacked:
            self._ack(acks, multiple=True)
        self._send(acks)

    def _send(self, acks: bytearray) -> None:
        if acks:
            sock = self.connection.sock
            sock.setblocking(True)
            sock.sendall(acks)
            sock.setblocking(False)

    def _read_deliveries(self, acks: bytearray) -> None:
        for kind, payload in self.connection.frames():
            if kind == METHOD_FRAME:
                class_method = CLASS_METHOD.unpack_from(payload)
                if class_method == BASIC_DELIVER:
                    tag_at = 5 + payload[4]  # past the consumer_tag's short string
                    self._delivery_tag = struct.unpack_from(">Q", payload, tag_at)[0]
                _refuse_closes(class_method)
            elif kind == HEADER_FRAME:
                self._body_left = self._body_size = struct.unpack_from(">Q", payload, 4)[0]
                if not self._body_size:
                    self._message_done(acks)
            elif kind == BODY_FRAME and self._body_left:
                if self._body_left == self._body_size:
                    self.arrivals.record(payload)
                self._body_left -= len(payload)
                if self._body_left <= 0:
                    self._message_done(acks)

    def _message_done(self, acks: bytearray) -> None:
        self._last_done_tag = self._delivery_tag
        self.received += 1
        self._unacked += 1
        if not self.multi_ack_every:
            self._ack(acks, multiple=False)
        elif self._unacked >= self.multi_ack_every or (self.qos and self._unacked >= self.qos):
            self._ack(acks, multiple=True)

    def _ack(self, acks: bytearray, multiple: bool) -> None:
        acks += ACK_FRAME.pack(
            METHOD_FRAME, CHANNEL, 13, *BASIC_ACK, self._last_done_tag, multiple, FRAME_END[0]
        )
        self._unacked = 0
