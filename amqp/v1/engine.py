"""One AMQP 1.0 connection, server side, as a sans-IO machine: bytes in, events and bytes out.

SASL comes first, in Warren's own code (sasl.py); every byte after it goes to proton's engine
(`Transport(SERVER)` with no SASL layer), which does framing, sessions, links, credit and
settlement. Its collector's events become the few this module reports; the layer above answers
through proton's own objects (links, deliveries) and the methods here for the connection.

Proton objects are not thread-safe: one engine belongs to one event-loop thread.
"""

from __future__ import annotations

import enum
import typing
from dataclasses import dataclass

from proton import (
    Collector,
    Condition,
    Connection,
    Data,
    Delivery,
    Endpoint,
    Event,
    Link,
    Session,
    Transport,
    symbol,
)

from warrenmq.amqp.v1.sasl import Login, SaslError, SaslServer, SaslState

__all__ = [
    "Closed",
    "DeliveryUpdated",
    "Engine",
    "EngineState",
    "Flow",
    "LinkClosed",
    "LinkOpened",
    "Opened",
    "SessionClosed",
    "SessionOpened",
    "Transfer",
    "V1Event",
    "V1Settings",
]

MAX_FRAME_MIN_BYTES = 512  # AMQP 1.0 §2.7.1 MIN-MAX-FRAME-SIZE


_IGNORED_WHILE_CLOSING = frozenset(
    {
        Event.DELIVERY,
        Event.LINK_REMOTE_OPEN,
        Event.LINK_FLOW,
        Event.SESSION_REMOTE_OPEN,
    }
)


class EngineState(enum.Enum):
    SASL = "sasl"
    OPENING = "awaiting open"
    OPEN = "open"
    CLOSED = "closed"  # nothing more to read; the socket closes once the output is written


@dataclass(frozen=True, slots=True)
class V1Settings:
    """What the server offers in its open frame, and enforces."""

    max_frame_bytes: int = 131072
    channel_max: int = 2047  # sessions per connection, less one
    idle_timeout_s: float = 60.0  # RabbitMQ's heartbeat; the open frame says half of it
    message_size_max_bytes: int = 16 * 1024 * 1024
    container_id: str = "warren"
    properties: dict[str, typing.Any] | None = None


@dataclass(frozen=True, slots=True)
class Opened:
    """The client's open frame: answer with `accept` or `refuse`."""

    hostname: str
    container_id: str
    properties: dict[str, typing.Any]


@dataclass(frozen=True, slots=True)
class SessionOpened:
    session: Session


@dataclass(frozen=True, slots=True)
class SessionClosed:
    session: Session


@dataclass(frozen=True, slots=True)
class LinkOpened:
    """The client attached a link: the layer above answers it (open it or close it)."""

    link: Link


@dataclass(frozen=True, slots=True)
class LinkClosed:
    link: Link
    closed: bool  # detach with closed=true (False: detached only)


@dataclass(frozen=True, slots=True)
class Flow:
    link: Link  # the client's flow frame changed this link's credit or drain


@dataclass(frozen=True, slots=True)
class Transfer:
    """A whole message arrived on a link of the client's (our receiver)."""

    delivery: Delivery
    message: bytes  # the transfer's payload: every section as the client encoded it


@dataclass(frozen=True, slots=True)
class DeliveryUpdated:
    """The client settled, or sent an outcome for, one of our deliveries."""

    delivery: Delivery


@dataclass(frozen=True, slots=True)
class Closed:
    reason: str


V1Event = (
    Opened
    | SessionOpened
    | SessionClosed
    | LinkOpened
    | LinkClosed
    | Flow
    | Transfer
    | DeliveryUpdated
    | Closed
)


class Engine:
    def __init__(
        self,
        settings: V1Settings,
        mechanisms: tuple[str, ...],
        check_login: typing.Callable[[Login], str | None],
        hold_refusal: typing.Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.state = EngineState.SASL
        self.sasl = SaslServer(mechanisms, check_login, hold_refusal)
        self.transport = Transport(Transport.SERVER)
        self.transport.max_frame_size = settings.max_frame_bytes
        self.transport.channel_max = settings.channel_max
        self.transport.idle_timeout = settings.idle_timeout_s
        self.connection = Connection()
        self.collector = Collector()
        self.connection.collect(self.collector)
        self.transport.bind(self.connection)
        self._closed_reported = False
        self._refused = False  # the open was refused: nothing more is written
        self._last_words = b""
        # the bytes before the client's open frame is whole, to read what proton would
        # quietly correct (a max-frame-size under 512); None once read
        self._open_prefix: bytearray | None = bytearray()
        self._client_max_frame: int | None = None

    @property
    def user(self) -> str:
        return self.sasl.user

    # --- bytes ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[V1Event]:
        if self.state is EngineState.CLOSED:
            return []
        if self.state is EngineState.SASL:
            try:
                data = self.sasl.receive_data(data)
            except SaslError as error:
                return self._close_now(f"SASL: {error}")
            if self.sasl.state is SaslState.FAILED:
                return self._close_now(f"{self.sasl.mechanism} login refused")
            if self.sasl.state is not SaslState.DONE:
                return []
            self.state = EngineState.OPENING
        if self._open_prefix is not None:
            self._read_open(data)
        view = memoryview(data)
        while view:
            capacity = self.transport.capacity()
            if capacity <= 0:
                break  # the transport closed its input: what follows is not read
            chunk, view = view[:capacity], view[capacity:]
            self.transport.push(bytes(chunk))
        return self.events()

    def recheck_login(self) -> list[V1Event]:
        """Decide a held login again (SaslServer.recheck), then read what came after it."""
        if self.state is not EngineState.SASL:
            return []
        self.sasl.recheck()
        return self.receive_data(b"")

    def data_to_send(self) -> bytes:
        output = self.sasl.data_to_send()
        if self.state is EngineState.SASL:
            return output
        if self._refused:
            output, self._last_words = output + self._last_words, b""
            return output
        return output + self._transport_output()

    def _transport_output(self) -> bytes:
        parts = []
        while True:
            pending = self.transport.pending()
            if pending <= 0:
                break
            parts.append(self.transport.peek(pending) or b"")
            self.transport.pop(pending)
        return b"".join(parts)

    def tick(self, now_s: float) -> list[V1Event]:
        """Proton's idle-timeout clock: empty frames out, a silent peer closed."""
        if self.state in (EngineState.OPENING, EngineState.OPEN):
            self.transport.tick(now_s)
            return self.events()
        return []

    def input_closed(self) -> list[V1Event]:
        """The socket hit end-of-file."""
        if self.state in (EngineState.OPENING, EngineState.OPEN):
            self.transport.close_tail()
            return self.events()
        return self._close_now("connection lost")

    @property
    def finished(self) -> bool:
        """Nothing more will be read or written: close the socket once output is flushed."""
        if self.state is EngineState.CLOSED:
            return True
        return self.state is not EngineState.SASL and self.transport.closed

    # --- the connection ---------------------------------------------------------------------

    def accept(self) -> None:
        """Answer the client's open with ours."""
        settings = self.settings
        self.connection.container = settings.container_id
        self.connection.offered_capabilities = [
            symbol("LINK_PAIR_V1_0"),
            symbol("ANONYMOUS-RELAY"),
        ]
        self.connection.properties = {
            symbol(key): value for key, value in (settings.properties or {}).items()
        }
        self.connection.open()
        self.state = EngineState.OPEN

    def refuse_open(self, condition: str, description: str) -> list[V1Event]:
        """Refuse the client's open as RabbitMQ does during the handshake: no open or close
        frame, the socket is closed (the reason is only logged)."""
        self._last_words = self._transport_output()  # our AMQP header, if not yet written
        self._refused = True
        self.state = EngineState.CLOSED
        return self._close_now(f"{condition}: {description}")

    def close(self, condition: str | None = None, description: str = "") -> None:
        """Close the connection, with an error `condition` (amqp:...) where there is one."""
        if condition is not None:
            self.connection.condition = Condition(condition, description)
        if self.state is EngineState.OPENING:
            self.connection.open()  # a close must follow an open (§2.4.1)
        self.connection.close()
        self.state = EngineState.CLOSED if self.transport.closed else self.state

    # --- proton's events as ours ----------------------------------------------------------

    def events(self) -> list[V1Event]:
        out: list[V1Event] = []
        collector = self.collector
        while True:
            event = collector.peek()
            if event is None:
                break
            try:
                self._translate(event, out)
            except UnicodeDecodeError:
                # a string field (hostname, link name, address) the client sent is not UTF-8:
                # proton's accessors raise on it, so nothing of it reaches the layer above
                self.close("amqp:decode-error", "a string field is not valid UTF-8")
            collector.pop()
        if self.transport.closed and not self._closed_reported:
            self._closed_reported = True
            condition = self.transport.condition or self.connection.remote_condition
            reason = (
                f"{condition.name}: {condition.description}" if condition else "closed by client"
            )
            self.state = EngineState.CLOSED
            out.append(Closed(reason))
        return out

    def _translate(self, event: Event, out: list[V1Event]) -> None:
        kind = event.type
        if kind in _IGNORED_WHILE_CLOSING and self.connection.state & Endpoint.LOCAL_CLOSED:
            return  # we sent close: what the client sent meanwhile is not acted on (§2.4.3)
        if kind == Event.CONNECTION_REMOTE_OPEN:
            refusal = self._open_refusal()
            if refusal is not None:
                out += self.refuse_open(*refusal)
                return
            connection = self.connection
            properties = {str(k): v for k, v in (connection.remote_properties or {}).items()}
            out.append(
                Opened(
                    connection.remote_hostname or "", connection.remote_container or "", properties
                )
            )
        elif kind == Event.CONNECTION_REMOTE_CLOSE:
            if self.connection.state & Endpoint.LOCAL_ACTIVE:
                self.connection.close()
        elif kind == Event.SESSION_REMOTE_OPEN:
            out.append(SessionOpened(typing.cast(Session, event.session)))
        elif kind == Event.SESSION_REMOTE_CLOSE:
            session = typing.cast(Session, event.session)
            if session.state & Endpoint.LOCAL_ACTIVE:
                session.close()
            out.append(SessionClosed(session))
        elif kind == Event.LINK_REMOTE_OPEN:
            link = typing.cast(Link, event.link)
            _ = (link.name, link.remote_source.address, link.remote_target.address)  # UTF-8?
            _ = link.remote_properties
            out.append(LinkOpened(link))
        elif kind in (Event.LINK_REMOTE_CLOSE, Event.LINK_REMOTE_DETACH):
            link = typing.cast(Link, event.link)
            closed = kind == Event.LINK_REMOTE_CLOSE
            if link.state & Endpoint.LOCAL_ACTIVE:
                link.close() if closed else link.detach()
            out.append(LinkClosed(link, closed))
        elif kind == Event.LINK_FLOW:
            out.append(Flow(typing.cast(Link, event.link)))
        elif kind == Event.DELIVERY:
            delivery = typing.cast(Delivery, event.delivery)
            link = delivery.link
            if link.is_receiver:
                limit = self.settings.message_size_max_bytes
                if delivery.pending > limit:  # whole or not yet: it is refused as it grows
                    if link.state & Endpoint.LOCAL_ACTIVE:
                        link.condition = Condition(
                            "amqp:link:message-size-exceeded",
                            f"message size ({delivery.pending} bytes) > maximum message size "
                            f"({limit} bytes)",
                        )
                        link.close()
                elif delivery.readable and not delivery.partial:
                    message = link.recv(delivery.pending) or b""
                    link.advance()
                    out.append(Transfer(delivery, message))
            elif delivery.updated:
                out.append(DeliveryUpdated(delivery))

    def _read_open(self, data: bytes) -> None:
        """Find the open frame's max-frame-size (after the 8-byte AMQP header)."""
        prefix = self._open_prefix
        assert prefix is not None
        prefix += data
        if len(prefix) < 16:
            return
        size, offset = int.from_bytes(prefix[8:12]), prefix[12]
        if len(prefix) < 8 + size or size > self.settings.max_frame_bytes:
            if len(prefix) > MAX_FRAME_MIN_BYTES * 8:
                self._open_prefix = None  # not an open we can read: proton will say so
            return
        self._open_prefix = None
        performative = Data()
        try:
            performative.decode(bytes(prefix[8 + offset * 4 : 8 + size]))
            fields = performative.get_object()
        except Exception:
            return  # proton reports the malformed frame
        values = getattr(fields, "value", None)
        if isinstance(values, list) and len(values) > 2 and isinstance(values[2], int):
            self._client_max_frame = int(values[2])

    def _open_refusal(self) -> tuple[str, str] | None:
        """RabbitMQ's limits on the client's open: frames of at least 512 bytes (§2.7.1), and
        an idle timeout of at least a second if any."""
        frame_max = self._client_max_frame or 0
        if 0 < frame_max < MAX_FRAME_MIN_BYTES:
            return (
                "amqp:frame-size-too-small",
                f"max_frame_size ({frame_max}) < minimum maximum frame size "
                f"({MAX_FRAME_MIN_BYTES})",
            )
        idle_ms = int(self.transport.remote_idle_timeout * 1000)
        if 0 < idle_ms < 1000:
            return (
                "amqp:not-allowed",
                f"idle-time-out ({idle_ms} ms) < minimum idle-time-out (1000 ms)",
            )
        return None

    def _close_now(self, reason: str) -> list[V1Event]:
        self.state = EngineState.CLOSED
        if self._closed_reported:
            return []
        self._closed_reported = True
        return [Closed(reason)]
