"""The asyncio listener for AMQP, and the transport of AMQP 0-9-1 connections (with sockets.py and
v1/transport.py, the only modules in amqp/ that do I/O).

Bytes from the socket go to the connection machine; its events go to the session the node made
for this connection; whatever the machine or the session queued goes out in one write per loop
turn. Timers live here: the handshake must finish in time, a peer silent for two heartbeat
intervals is dropped (AMQP 0-9-1 §4.2.7), and a peer that never answers our connection.close
is dropped after a grace period.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import time
import typing

from warrenmq.amqp.codec import HEARTBEAT
from warrenmq.amqp.connection import Authenticator, Connection, ConnectionState, Settings
from warrenmq.amqp.events import ConnectionClosed, Event
from warrenmq.amqp.sockets import ClientSocket, SocketSession
from warrenmq.amqp.v1.engine import V1Settings
from warrenmq.amqp.v1.transport import V1Protocol, V1SessionFactory

__all__ = ["AmqpServerProtocol", "Protocols", "Session", "SessionFactory", "is_amqp_1_0", "serve"]

HANDSHAKE_TIMEOUT_S = 10.0  # RabbitMQ's handshake_timeout
CLOSE_TIMEOUT_S = 3.0  # how long we wait for close-ok after sending connection.close


class Session(Authenticator, SocketSession, typing.Protocol):
    """What the node attaches to each AMQP 0-9-1 connection."""

    def events_received(self, events: list[Event]) -> None: ...


SessionFactory = typing.Callable[["AmqpServerProtocol"], Session]


class Protocols(typing.NamedTuple):
    """What one listener serves: AMQP 0-9-1, and AMQP 1.0 beside it where it is set."""

    settings: Settings
    session_factory: SessionFactory
    v1_settings: V1Settings | None = None
    v1_session_factory: V1SessionFactory | None = None


V1_HEADERS = (b"AMQP\x00\x01", b"AMQP\x02\x01", b"AMQP\x03\x01")  # plain, TLS, SASL


def is_amqp_1_0(header: bytes) -> bool | None:
    """Whether the client's first bytes ask for AMQP 1.0 (True), anything else (False: the
    0-9-1 machine answers, with its own header where it is not 0-9-1's), or cannot tell yet
    (None: `AMQP\\x00` begins both 0-9-1's header and 1.0's)."""
    undecided = False
    for prefix in V1_HEADERS:
        if header.startswith(prefix):
            return True
        undecided = undecided or prefix.startswith(header)
    return None if undecided else False


class AmqpServerProtocol(ClientSocket):
    session: Session | None

    def __init__(self, protocols: Protocols) -> None:
        super().__init__()
        self._protocols = protocols
        self._settings = protocols.settings
        self._session_factory = protocols.session_factory
        self._header = b""  # the first bytes, until they tell the protocol
        self._closing_since_s: float | None = None
        self._opened_at_s = time.monotonic()
        self.peer: tuple[str, int] = ("", 0)
        self.local: tuple[str, int] = ("", 0)  # the listener's address this client reached
        self.tls = False  # the connection came through the amqps listener
        self.tls_details: dict[str, str] = {}  # protocol, cipher, client certificate subject
        self.connected_at_ms = int(time.time() * 1000)
        self.connection: Connection | None = None

    # --- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = typing.cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer = (str(peer[0]), int(peer[1]))
        local = transport.get_extra_info("sockname") or ("", 0)
        self.local = (str(local[0]), int(local[1]))
        tls = transport.get_extra_info("ssl_object")
        self.tls = tls is not None
        if tls is not None:
            self.tls_details = _tls_details(tls)
        high = self._settings.write_buffer_high_bytes
        self._transport.set_write_buffer_limits(high=high, low=high // 4)
        self._schedule_timer(1.0)

    def data_received(self, data: bytes) -> None:
        if self.connection is None:
            data = self._header + data
            version_1_0 = is_amqp_1_0(data) if self._protocols.v1_session_factory else False
            if version_1_0 is None:
                self._header = data
                return
            if version_1_0:
                self._hand_over(data)
                return
            self.session = self._session_factory(self)
            self.connection = Connection(self._settings, self.session)
        assert self.connection is not None and self.session is not None
        self._last_read_s = time.monotonic()
        self._take(self.connection.receive_data(data))

    def recheck(self) -> None:
        """The session can answer the held login or vhost again (Connection.recheck)."""
        assert self.connection is not None
        self._take(self.connection.recheck())

    def _take(self, events: list[Event]) -> None:
        assert self.session is not None
        if events:
            self.session.events_received(events)
        self.flush()
        if any(isinstance(event, ConnectionClosed) for event in events):
            self._close_transport()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def _hand_over(self, data: bytes) -> None:
        """An AMQP 1.0 client: its socket goes to the 1.0 protocol, with the bytes read."""
        protocols, transport = self._protocols, self._transport
        assert protocols.v1_settings is not None and protocols.v1_session_factory is not None
        assert transport is not None
        if self._timer is not None:
            self._timer.cancel()
        self._lost = True  # this protocol is done with the socket
        v1 = V1Protocol(
            protocols.v1_settings,
            protocols.v1_session_factory,
            self.peer,
            self.local,
            self.tls_details if self.tls else None,
        )
        transport.set_protocol(v1)
        v1.connection_made(transport)
        v1.data_received(data)

    # --- what sessions call ---------------------------------------------------------------

    def flush(self) -> None:
        self._flush_scheduled = False
        if self.connection is None or self._transport is None or self._transport.is_closing():
            return
        data = self.connection.data_to_send()
        if data:
            self._transport.write(data)
        if self.connection.state is ConnectionState.CLOSING and self._closing_since_s is None:
            self._closing_since_s = time.monotonic()
        if self.connection.state is ConnectionState.CLOSED:
            self._close_transport()

    # --- timers -----------------------------------------------------------------------------

    def _schedule_timer(self, delay_s: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._on_timer)

    def _on_timer(self) -> None:
        connection = self.connection
        if self._transport is None or self._transport.is_closing():
            return
        now_s = time.monotonic()
        if connection is None:  # not a byte of the header yet
            if now_s - self._opened_at_s > HANDSHAKE_TIMEOUT_S:
                self._transport.abort()
            else:
                self._schedule_timer(1.0)
            return
        if connection.state is ConnectionState.CLOSING:
            if (
                self._closing_since_s is not None
                and now_s - self._closing_since_s > CLOSE_TIMEOUT_S
            ):
                self._transport.abort()
                return
        elif connection.state is not ConnectionState.OPEN:
            if now_s - self._opened_at_s > HANDSHAKE_TIMEOUT_S:
                self._transport.abort()
                return
        elif connection.heartbeat_s:
            if not self._reading_paused and now_s - self._last_read_s > 2 * connection.heartbeat_s:
                self._transport.abort()  # missed heartbeats: RabbitMQ drops the socket too
                return
            self._transport.write(HEARTBEAT)
            self._schedule_timer(connection.heartbeat_s / 2)
            return
        self._schedule_timer(1.0)

    def _close_transport(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


def _tls_details(tls: ssl_module.SSLObject) -> dict[str, str]:
    """What RabbitMQ's API shows of a TLS connection (ssl_protocol, ssl_cipher, peer_cert_*)."""
    cipher = tls.cipher()
    details = {"ssl_protocol": tls.version() or "", "ssl_cipher": cipher[0] if cipher else ""}
    certificate = tls.getpeercert() or {}
    subject = typing.cast(tuple[tuple[tuple[str, str], ...], ...], certificate.get("subject") or ())
    if subject:
        details["peer_cert_subject"] = ",".join(
            f"{name}={value}" for entry in subject for name, value in entry
        )
    return details


async def serve(
    host: str,
    port: int,
    protocols: Protocols,
    ssl: ssl_module.SSLContext | None = None,
) -> asyncio.Server:
    """Listen for AMQP; with `ssl`, the listener is amqps (TLS first, then AMQP inside)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: AmqpServerProtocol(protocols),
        host,
        port,
        reuse_address=True,
        ssl=ssl,
        ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if ssl is not None else None,
    )
