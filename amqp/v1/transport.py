"""The asyncio transport of an AMQP 1.0 connection: the only module in amqp/v1/ that does I/O.

The AMQP listener (amqp/server.py) reads the protocol header and hands a 1.0 client's socket
to this protocol, with the bytes read so far. Bytes go to the engine, its events to the node's
session for this connection, and what either queued goes out in one write per loop turn. The
engine's idle-timeout clock is ticked every second; a handshake must finish in time.
"""

from __future__ import annotations

import asyncio
import time
import typing

from warrenmq.amqp.sockets import ClientSocket, SocketSession
from warrenmq.amqp.v1.engine import Closed, Engine, EngineState, V1Event, V1Settings
from warrenmq.amqp.v1.sasl import Login

__all__ = ["V1Protocol", "V1Session", "V1SessionFactory"]

HANDSHAKE_TIMEOUT_S = 10.0  # RabbitMQ's handshake_timeout
TICK_S = 1.0


class V1Session(SocketSession, typing.Protocol):
    """What the node attaches to each AMQP 1.0 connection."""

    @property
    def mechanisms(self) -> tuple[str, ...]:
        """What SASL offers, in order of preference."""

    def check_login(self, login: Login) -> str | None: ...

    def hold_refusal(self) -> bool: ...

    def events_received(self, events: list[V1Event]) -> None: ...


V1SessionFactory = typing.Callable[["V1Protocol"], V1Session]


class V1Protocol(ClientSocket):
    session: V1Session | None

    def __init__(
        self,
        settings: V1Settings,
        session_factory: V1SessionFactory,
        peer: tuple[str, int],
        local: tuple[str, int],
        tls_details: dict[str, str] | None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.peer = peer
        self.local = local
        self.tls = tls_details is not None
        self.tls_details = tls_details or {}
        self.connected_at_ms = int(time.time() * 1000)
        self._session_factory = session_factory
        self._opened_at_s = time.monotonic()
        self.engine: Engine | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = typing.cast(asyncio.Transport, transport)
        self.session = self._session_factory(self)
        session = self.session
        self.engine = Engine(
            self.settings, session.mechanisms, session.check_login, session.hold_refusal
        )
        self._timer = asyncio.get_running_loop().call_later(TICK_S, self._on_timer)

    def data_received(self, data: bytes) -> None:
        assert self.engine is not None
        self._deliver(self.engine.receive_data(data))

    def eof_received(self) -> bool | None:
        if self.engine is not None:
            self._deliver(self.engine.input_closed())
        return None

    # --- what the session calls ---------------------------------------------------------------

    def recheck(self) -> None:
        """The session can answer the held login again (Engine.recheck_login)."""
        assert self.engine is not None
        self._deliver(self.engine.recheck_login())

    def flush(self) -> None:
        self._flush_scheduled = False
        engine, transport = self.engine, self._transport
        if engine is None or transport is None or transport.is_closing():
            return
        data = engine.data_to_send()
        if data:
            transport.write(data)
        if engine.finished:
            transport.close()

    # --- internals ------------------------------------------------------------------------------

    def _deliver(self, events: list[V1Event]) -> None:
        if events and self.session is not None:
            self.session.events_received(events)
        self.flush()
        if any(isinstance(event, Closed) for event in events) and self._transport is not None:
            self._transport.close()

    def _on_timer(self) -> None:
        engine, transport = self.engine, self._transport
        if engine is None or transport is None or transport.is_closing():
            return
        now_s = time.monotonic()
        if engine.state in (EngineState.SASL, EngineState.OPENING):
            if now_s - self._opened_at_s > HANDSHAKE_TIMEOUT_S:
                transport.abort()
                return
        self._deliver(engine.tick(now_s))
        self._timer = asyncio.get_running_loop().call_later(TICK_S, self._on_timer)
