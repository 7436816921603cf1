"""A scripted AMQP 0-9-1 peer for the conformance scenarios: it sends exactly the frames a
scenario gives, and turns every frame the broker sends back into one normalised word list, so
that a real RabbitMQ and Warren can be compared line for line.

Normalising keeps what a client can rely on (reply codes and texts, the order of frames, bodies,
flags, headers) and blanks what no two runs share: server-generated names (`amq.gen-…`,
`amq.ctag-…`), timestamps inside `x-death`, and the server's version strings.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from pamqp import body as content_body
from pamqp import commands, frame, header, heartbeat
from pamqp import exceptions as pamqp_exceptions

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
WAIT_S = 5.0  # a reply that has not come by then is reported as TIMEOUT
GENERATED = re.compile(r"amq\.(gen|ctag)-[A-Za-z0-9_\-]+")
# The synchronisation point of `Connection.sync`: a method every broker answers at once, with
# no effect on anything, whose reply comes after every reply to what the channel sent before.
SYNC_EXCHANGE = "amq.direct"
CLOSE_CHANNEL = commands.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)
CLOSE_CONNECTION = commands.Connection.Close(
    reply_code=200, reply_text="bye", class_id=0, method_id=0
)


def generated(text: str) -> str:
    return GENERATED.sub(lambda match: f"amq.{match.group(1)}-*", text)


def shown(value: object) -> str:
    """A field value as one stable word: tables sorted, bytes and strings quoted."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}={shown(value[key])}" for key in sorted(value)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(shown(item) for item in value) + "]"
    if isinstance(value, bytes):
        return repr(value)
    if isinstance(value, str):
        return repr(generated(value))
    if hasattr(value, "timestamp"):  # a datetime: x-death's time differs run to run
        return "T"
    return repr(value)


def method_line(value: frame.FrameTypes) -> str:
    """A method frame as `Class.Method(field=value, …)`, its fields in the spec's order."""
    name = type(value).__qualname__
    fields = []
    for attribute in getattr(value, "__slots__", ()):
        if attribute.startswith("_"):
            continue
        fields.append(f"{attribute}={shown(getattr(value, attribute))}")
    return f"{name}({', '.join(fields)})"


def properties_line(properties: commands.Basic.Properties) -> str:
    present = {}
    for attribute in properties.__slots__:
        value = getattr(properties, attribute, None)
        if value is not None and not (attribute == "cluster_id" and value == ""):
            present[attribute] = value
    return shown(present)


@dataclass
class Content:
    method: frame.FrameTypes
    properties: commands.Basic.Properties | None = None
    body: bytes = b""
    body_size: int = 0

    def line(self) -> str:
        assert self.properties is not None
        return f"{method_line(self.method)} {properties_line(self.properties)} {self.body!r}"


CONTENT_METHODS = (commands.Basic.Deliver, commands.Basic.Return, commands.Basic.GetOk)


@dataclass
class Connection:
    """One connection to the broker; the scenario sends frames and reads what comes back."""

    sock: socket.socket
    buffer: bytes = b""
    closed: bool = False  # the broker closed the connection, or the socket ended
    closed_channels: set[int] = field(default_factory=set)
    pending: Content | None = None  # a content whose header or body is still to come
    confirmed: dict[int, int] = field(default_factory=dict)  # publisher confirms seen, by channel

    # --- sending ----------------------------------------------------------------------------

    def send_bytes(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def send(self, channel: int, value: frame.FrameTypes) -> None:
        self.send_bytes(frame.marshal(value, channel))

    def publish(
        self,
        channel: int,
        exchange: str,
        routing_key: str,
        body: bytes = b"m",
        properties: commands.Basic.Properties | None = None,
        mandatory: bool = False,
    ) -> None:
        method = commands.Basic.Publish(
            exchange=exchange, routing_key=routing_key, mandatory=mandatory
        )
        properties = properties or commands.Basic.Properties()
        data = frame.marshal(method, channel)
        data += frame.marshal(header.ContentHeader(0, len(body), properties), channel)
        if body:
            data += frame.marshal(content_body.ContentBody(body), channel)
        self.send_bytes(data)

    # --- receiving --------------------------------------------------------------------------

    def receive(self, wait_s: float = WAIT_S) -> tuple[int, frame.FrameTypes] | None:
        """The next frame as pamqp decoded it, for scenarios that read its fields."""
        return self._read_frame(time.monotonic() + wait_s)

    def _read_frame(self, deadline: float) -> tuple[int, frame.FrameTypes] | None:
        while True:
            try:
                consumed, channel, value = frame.unmarshal(self.buffer)
            except pamqp_exceptions.UnmarshalingException:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed:
                    return None
                self.sock.settimeout(remaining)
                try:
                    chunk = self.sock.recv(65536)
                except TimeoutError:
                    return None
                except OSError:
                    chunk = b""
                if not chunk:
                    self.closed = True
                    return None
                self.buffer += chunk
                continue
            self.buffer = self.buffer[consumed:]
            if not isinstance(value, heartbeat.Heartbeat):
                return channel, value

    def _line(self, channel: int, value: frame.FrameTypes) -> str | None:
        """The frame as a line, or None while a content is incomplete. Closes are answered."""
        if isinstance(value, CONTENT_METHODS):
            self.pending = Content(value)
            return None
        if isinstance(value, header.ContentHeader) and self.pending is not None:
            self.pending.properties = value.properties
            self.pending.body_size = value.body_size
        elif isinstance(value, content_body.ContentBody) and self.pending is not None:
            self.pending.body += value.value
        else:
            if isinstance(value, (commands.Basic.Ack, commands.Basic.Nack)):
                value = self._confirm_as_one(channel, value)
            if isinstance(value, commands.Channel.Close):
                self.send(channel, commands.Channel.CloseOk())
                self.closed_channels.add(channel)
            elif isinstance(value, commands.Connection.Close):
                self.send(0, commands.Connection.CloseOk())
                self.closed = True
            return f"ch{channel} {method_line(value)}"
        pending = self.pending
        if pending.properties is not None and len(pending.body) >= pending.body_size:
            self.pending = None
            return f"ch{channel} {pending.line()}"
        return None

    def _confirm_as_one(
        self, channel: int, confirm: commands.Basic.Ack | commands.Basic.Nack
    ) -> commands.Basic.Ack | commands.Basic.Nack:
        """A publisher confirm with multiple set that covers one publish says the same as one
        without: brokers choose either by timing, so it is shown without."""
        covered = confirm.delivery_tag - self.confirmed.get(channel, 0)
        self.confirmed[channel] = max(self.confirmed.get(channel, 0), confirm.delivery_tag)
        if confirm.multiple and covered == 1:
            confirm.multiple = False
        return confirm

    def read(self, until: tuple[str, ...], channel: int, wait_s: float = WAIT_S) -> list[str]:
        """Every frame up to one named in `until` on `channel`, a close of that channel or of the
        connection, or WAIT_S of silence (then the last word is TIMEOUT)."""
        lines: list[str] = []
        deadline = time.monotonic() + wait_s
        while True:
            received = self._read_frame(deadline)
            if received is None:
                lines.append("CLOSED" if self.closed else "TIMEOUT")
                return lines
            number, value = received
            pending = self.pending
            line = self._line(number, value)
            if line is None:
                continue
            lines.append(line)
            if pending is not None and self.pending is None:
                value = pending.method  # a content is complete: its method is what counts
            if isinstance(value, commands.Connection.Close):
                return lines
            if number == channel and isinstance(value, commands.Channel.Close):
                return lines
            if number == channel and getattr(value, "name", None) in until:
                return lines

    def call(self, channel: int, value: frame.FrameTypes) -> list[str]:
        """Send a synchronous method; what came back up to its -ok (or the close)."""
        self.send(channel, value)
        return self.read(tuple(value.valid_responses), channel)

    def sync(self, channel: int = 1) -> list[str]:
        """Everything the broker sent until it answered a harmless method sent now on
        `channel`: each reply to what came before on that channel precedes it (AMQP 0-9-1
        §2.3.4, a channel's methods are processed in order). The marker's own reply is left
        out."""
        if self.closed or channel in self.closed_channels:
            return self.drain()
        self.send(channel, commands.Exchange.Declare(exchange=SYNC_EXCHANGE, passive=True))
        lines = self.read(("Exchange.DeclareOk",), channel)
        if lines and lines[-1] == f"ch{channel} Exchange.DeclareOk()":
            lines.pop()
        return lines

    def expect(self, count: int, wait_s: float = WAIT_S) -> list[str]:
        """The next `count` frames (or fewer and TIMEOUT), for deliveries that a consumer's
        channel gets on its own time."""
        lines: list[str] = []
        deadline = time.monotonic() + wait_s
        while len(lines) < count:
            received = self._read_frame(deadline)
            if received is None:
                lines.append("CLOSED" if self.closed else "TIMEOUT")
                break
            line = self._line(*received)
            if line is not None:
                lines.append(line)
        return lines

    def drain(self, wait_s: float = 0.3) -> list[str]:
        """What arrives within wait_s; for frames that may or may not come."""
        lines: list[str] = []
        deadline = time.monotonic() + wait_s
        while True:
            received = self._read_frame(deadline)
            if received is None:
                if self.closed:
                    lines.append("CLOSED")
                return lines
            line = self._line(*received)
            if line is not None:
                lines.append(line)

    def close(self) -> None:
        self.sock.close()


@dataclass
class Broker:
    """Where the scenarios run: an AMQP address, and the HTTP API for what AMQP cannot do."""

    host: str
    port: int
    api_url: str
    user: str = "guest"
    password: str = "guest"
    opened: list[Connection] = field(default_factory=list)

    def socket(self) -> Connection:
        sock = socket.create_connection((self.host, self.port), timeout=WAIT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = Connection(sock)
        self.opened.append(connection)
        return connection

    def start(
        self, user: str | None = None, password: str | None = None, mechanism: str = "PLAIN"
    ) -> tuple[Connection, list[str]]:
        """Header and start-ok sent; returns the connection and the reply (tune, or a close)."""
        connection = self.socket()
        connection.send_bytes(PROTOCOL_HEADER)
        connection.read(("Connection.Start",), 0)
        response = f"\x00{user or self.user}\x00{password or self.password}"
        connection.send(
            0,
            commands.Connection.StartOk(
                client_properties={
                    "product": "warren-conformance",
                    "capabilities": {
                        "consumer_cancel_notify": True,
                        "connection.blocked": True,
                        "publisher_confirms": True,
                        "basic.nack": True,
                        "exchange_exchange_bindings": True,
                        "authentication_failure_close": True,
                    },
                },
                mechanism=mechanism,
                response=response,
                locale="en_US",
            ),
        )
        return connection, connection.read(("Connection.Tune",), 0)

    def connect(
        self, vhost: str = "/", user: str | None = None, password: str | None = None
    ) -> Connection:
        """An open connection with channel 1 open."""
        connection, _ = self.start(user, password)
        connection.send(0, commands.Connection.TuneOk(channel_max=2047, frame_max=131072))
        opened = connection.call(0, commands.Connection.Open(virtual_host=vhost))
        assert opened == ["ch0 Connection.OpenOk(known_hosts='')"], opened
        assert connection.call(1, commands.Channel.Open()) == ["ch1 Channel.OpenOk(channel_id='')"]
        return connection

    def api(self, method: str, path: str, document: object = None) -> tuple[int, object]:
        """The management HTTP API: status and decoded JSON (None when empty)."""
        data = None if document is None else json.dumps(document).encode()
        request = urllib.request.Request(self.api_url + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        token = f"{self.user}:{self.password}".encode()
        request.add_header("authorization", "Basic " + base64.b64encode(token).decode())
        try:
            with urllib.request.urlopen(request, timeout=WAIT_S) as answer:
                status, text = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read()
        return status, json.loads(text) if text else None

    def close_all(self) -> None:
        for connection in self.opened:
            connection.close()
        self.opened.clear()


def quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")
