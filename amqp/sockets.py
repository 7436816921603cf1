"""What both protocols' asyncio transports share (server.py for 0-9-1, v1/transport.py for
1.0): the session's back-pressure hooks, one write per loop turn, reading paused and resumed
for the session, and telling the session once when the socket is gone."""

from __future__ import annotations

import asyncio
import time
import typing

__all__ = ["ClientSocket", "SocketSession"]


class SocketSession(typing.Protocol):
    def connection_lost(self) -> None: ...

    def writing_paused(self, paused: bool) -> None:
        """The write buffer passed its high-water mark (True), or drained (False)."""


class ClientSocket(asyncio.Protocol):
    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._lost = False
        self._reading_paused = False  # by the session: back-pressure or a resource alarm
        self._last_read_s = time.monotonic()
        self.session: SocketSession | None = None

    def pause_writing(self) -> None:
        if self.session is not None:
            self.session.writing_paused(True)

    def resume_writing(self) -> None:
        if self.session is not None:
            self.session.writing_paused(False)

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
        raise NotImplementedError

    def pause_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._reading_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._reading_paused = False
            self._last_read_s = time.monotonic()  # what went unread while paused is not missed
            self._transport.resume_reading()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
