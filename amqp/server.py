"""The asyncio transport for AMQP connections: the only module in amqp/ that does I/O.

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

__all__ = ["AmqpServerProtocol", "Session", "SessionFactory", "serve"]

HANDSHAKE_TIMEOUT_S = 10.0  # RabbitMQ's handshake_timeout
CLOSE_TIMEOUT_S = 3.0  # how long we wait for close-ok after sending connection.close


class Session(Authenticator, typing.Protocol):
    """What the node attaches to each connection."""

    def events_received(self, events: list[Event]) -> None: ...

    def connection_lost(self) -> None: ...

    def writing_paused(self, paused: bool) -> None:
        """The write buffer passed its high-water mark (True), or drained (False)."""


SessionFactory = typing.Callable[["AmqpServerProtocol"], Session]


class AmqpServerProtocol(asyncio.Protocol):
    def __init__(self, settings: Settings, session_factory: SessionFactory) -> None:
        self._settings = settings
        self._session_factory = session_factory
        self._transport: asyncio.Transport | None = None
        self._flush_scheduled = False
        self._last_read_s = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._closing_since_s: float | None = None
        self._opened_at_s = time.monotonic()
        self._lost = False
        self._reading_paused = False  # by the session: back-pressure or a resource alarm
        self.peer: tuple[str, int] = ("", 0)
        self.local: tuple[str, int] = ("", 0)  # the listener's address this client reached
        self.tls = False  # the connection came through the amqps listener
        self.tls_details: dict[str, str] = {}  # protocol, cipher, client certificate subject
        self.connected_at_ms = int(time.time() * 1000)
        self.session: Session | None = None
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
        self.session = self._session_factory(self)
        self.connection = Connection(self._settings, self.session)
        self._schedule_timer(1.0)

    def data_received(self, data: bytes) -> None:
        assert self.connection is not None and self.session is not None
        self._last_read_s = time.monotonic()
        events = self.connection.receive_data(data)
        if events:
            self.session.events_received(events)
        self.flush()
        if any(isinstance(event, ConnectionClosed) for event in events):
            self._close_transport()

    def pause_writing(self) -> None:
        if self.session is not None:
            self.session.writing_paused(True)

    def resume_writing(self) -> None:
        if self.session is not None:
            self.session.writing_paused(False)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        if self._timer is not None:
            self._timer.cancel()
        if self.session is not None:
            self.session.connection_lost()

    # --- what sessions call ---------------------------------------------------------------

    def flush_soon(self) -> None:
        """Write what is queued at the end of this loop turn, once, however many callers."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

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

    def pause_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._reading_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._reading_paused = False
            self._last_read_s = time.monotonic()  # heartbeats unread while paused are not missed
            self._transport.resume_reading()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- timers -----------------------------------------------------------------------------

    def _schedule_timer(self, delay_s: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._on_timer)

    def _on_timer(self) -> None:
        connection = self.connection
        if connection is None or self._transport is None or self._transport.is_closing():
            return
        now_s = time.monotonic()
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
    settings: Settings,
    session_factory: SessionFactory,
    ssl: ssl_module.SSLContext | None = None,
) -> asyncio.Server:
    """Listen for AMQP; with `ssl`, the listener is amqps (TLS first, then AMQP inside)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: AmqpServerProtocol(settings, session_factory),
        host,
        port,
        reuse_address=True,
        ssl=ssl,
        ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if ssl is not None else None,
    )
