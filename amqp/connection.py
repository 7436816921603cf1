"""One AMQP 0-9-1 connection as a sans-IO state machine: bytes in, events and bytes out.

Theory of operation
-------------------
`receive_data(bytes)` parses every complete frame and returns the events the layer above acts on;
whatever the machine answers by itself (handshake, channel open/close, heartbeats' absence of a
reply) is queued and taken with `data_to_send()`. The layer above answers broker methods with
`send_method`, `send_content`, `close_channel` and `close`.

A refusal may wait: when the authenticator's answer is no but `hold_refusal()` says its view
may be behind (a replicated one, catching up), the method is held, nothing after it is read,
and `recheck()` later decides it again and goes on with the frames that came meanwhile.

The handshake runs AWAITING_HEADER → AWAITING_START_OK → AWAITING_TUNE_OK → AWAITING_OPEN → OPEN
(AMQP 0-9-1 §2.2.4). Either side may close: after the server sends connection.close it ignores
everything but close-ok (§4.2.2 "closing"), as a channel that the server closed ignores everything
but channel.close-ok. A client mistake never raises out of this module: it becomes channel.close
(soft errors) or connection.close (hard errors) with RabbitMQ's reply code and the failing method's
class and method ids. Only a transition the table below does not allow raises, and leaves the
state as it was: that is a bug in the caller, not bad input.
"""

from __future__ import annotations

import enum
import typing
from dataclasses import dataclass, field

from pamqp import base, commands, decode

from warrenmq.amqp.codec import (
    BodyFrame,
    FrameError,
    FrameReader,
    HeaderFrame,
    HeartbeatFrame,
    MethodFrame,
    UnknownMethod,
    content_frames,
    encode_method,
    unchecked,
)
from warrenmq.amqp.events import (
    ChannelClosed,
    ChannelCloseReceived,
    ChannelOpened,
    ConnectionClosed,
    ConnectionOpened,
    ContentReceived,
    Event,
    MethodReceived,
)
from warrenmq.amqp.properties import PropertyError, parse_properties
from warrenmq.amqp.spec import (
    CLASS_BASIC,
    FRAME_MIN_SIZE_BYTES,
    PROTOCOL_HEADER,
    PROTOCOL_HEADER_0_9,
    ReplyCode,
    reply_text,
)

__all__ = ["Authenticator", "Connection", "ConnectionState", "Settings"]


class ConnectionState(enum.Enum):
    AWAITING_HEADER = "awaiting protocol header"
    AWAITING_START_OK = "awaiting connection.start-ok"
    AWAITING_TUNE_OK = "awaiting connection.tune-ok"
    AWAITING_OPEN = "awaiting connection.open"
    OPEN = "open"
    CLOSING = "closing"  # we sent connection.close and wait for close-ok
    CLOSED = "closed"


_S = ConnectionState
TRANSITIONS: dict[ConnectionState, frozenset[ConnectionState]] = {
    _S.AWAITING_HEADER: frozenset({_S.AWAITING_START_OK, _S.CLOSED}),
    _S.AWAITING_START_OK: frozenset({_S.AWAITING_TUNE_OK, _S.CLOSING, _S.CLOSED}),
    _S.AWAITING_TUNE_OK: frozenset({_S.AWAITING_OPEN, _S.CLOSING, _S.CLOSED}),
    _S.AWAITING_OPEN: frozenset({_S.OPEN, _S.CLOSING, _S.CLOSED}),
    _S.OPEN: frozenset({_S.CLOSING, _S.CLOSED}),
    _S.CLOSING: frozenset({_S.CLOSED}),
    _S.CLOSED: frozenset(),
}


class ChannelState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # we sent channel.close and wait for close-ok
    CLOSE_RECEIVED = "close-received"  # the client sent channel.close; our close-ok waits


@dataclass(frozen=True, slots=True)
class Settings:
    """What the server offers in connection.tune and enforces (RabbitMQ's defaults)."""

    channel_max: int = 2047
    frame_max_bytes: int = 131072
    heartbeat_s: int = 60
    message_size_max_bytes: int = 16 * 1024 * 1024  # RabbitMQ 4.x max_message_size
    # the transport's write buffer: past this, the layer above stops sending deliveries until
    # it has drained to a quarter (asyncio's pause_writing and resume_writing)
    write_buffer_high_bytes: int = 4 * 1024 * 1024
    server_properties: dict[str, typing.Any] = field(default_factory=dict)


class Authenticator(typing.Protocol):
    """The node's answer to who may log in and where; local reads, no I/O."""

    def authenticate(self, username: str, password: str) -> bool: ...

    def vhost_refusal(self, username: str, vhost: str) -> str | None:
        """Why `username` may not open `vhost` (a 530 reply text), or None when it may."""

    def hold_refusal(self) -> bool:
        """Whether to ask again before refusing: True promises a later `Connection.recheck()`,
        after which the answers stand (this returns False)."""


@dataclass(slots=True)
class _Channel:
    state: ChannelState = ChannelState.OPEN
    # the method whose content is being assembled: basic.publish, or a server-only method that
    # carries content (RabbitMQ assembles it before refusing it)
    publish: base.Frame | None = None
    header: HeaderFrame | None = None
    body_parts: list[bytes] = field(default_factory=list)
    body_received_bytes: int = 0


class _ConnectionError(Exception):
    """A hard error: close the connection with this code."""

    def __init__(self, code: ReplyCode, text: str, method: base.Frame | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.method = method


def _ids(method: base.Frame | None) -> tuple[int, int]:
    if method is None:
        return 0, 0
    return method.index >> 16, method.index & 0xFFFF


class Connection:
    def __init__(self, settings: Settings, authenticator: Authenticator) -> None:
        self.settings = settings
        self.authenticator = authenticator
        self.state = ConnectionState.AWAITING_HEADER
        self.user = ""
        self.vhost = ""
        self.client_properties: dict[str, typing.Any] = {}
        self.mechanism = ""  # the SASL mechanism the client logged in with
        # negotiated in connection.tune-ok
        self.channel_max = settings.channel_max
        self.frame_max_bytes = settings.frame_max_bytes
        self.heartbeat_s = settings.heartbeat_s
        self.close_reason = ""
        self._header = bytearray()
        self._reader = FrameReader(settings.frame_max_bytes)
        self._channels: dict[int, _Channel] = {}
        self._outgoing: list[bytes] = []
        self._events: list[Event] = []
        self._held: base.Frame | None = None  # a method whose refusal waits for recheck()

    # --- state table --------------------------------------------------------------------

    def _move(self, state: ConnectionState) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"connection cannot go from {self.state.value} to {state.value}")
        self.state = state

    # --- input --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state is ConnectionState.CLOSED

    def receive_data(self, data: bytes) -> list[Event]:
        if self.closed:
            return []
        if self.state is ConnectionState.AWAITING_HEADER:
            data = self._receive_header(data)
        self._reader.feed(data)
        return self._read()

    def recheck(self) -> list[Event]:
        """Decide the held method again (the authenticator is now current), then read on."""
        held, self._held = self._held, None
        if self.closed or held is None:
            return []
        return self._read(held)

    def _read(self, held: base.Frame | None = None) -> list[Event]:
        try:
            if held is not None:
                self._receive_connection_method(held)
            while not self.closed and self._held is None:  # a frame may close it or be held
                frame = self._reader.next_frame()
                if frame is None:
                    break
                self._receive_frame(frame)
        except UnknownMethod as error:
            self._finish(str(error))
        except FrameError as error:
            self._fail(_ConnectionError(ReplyCode.FRAME_ERROR, str(error), error.method))
        except _ConnectionError as error:
            self._fail(error)
        events, self._events = self._events, []
        return events

    def _receive_header(self, data: bytes) -> bytes:
        needed = len(PROTOCOL_HEADER) - len(self._header)
        self._header += data[:needed]
        if len(self._header) < len(PROTOCOL_HEADER):
            return b""
        if bytes(self._header) not in (PROTOCOL_HEADER, PROTOCOL_HEADER_0_9):
            # AMQP 0-9-1 §4.2.2: answer with the header we speak, then close the socket.
            self._outgoing.append(PROTOCOL_HEADER)
            self._finish("unsupported protocol header")
            return b""
        self._move(ConnectionState.AWAITING_START_OK)
        self.send_method(
            0,
            commands.Connection.Start(
                version_major=0,
                version_minor=9,
                server_properties=self.settings.server_properties,
                mechanisms="PLAIN AMQPLAIN",
                locales="en_US",
            ),
        )
        return data[needed:]

    def _receive_frame(self, frame: MethodFrame | HeaderFrame | BodyFrame | HeartbeatFrame) -> None:
        if isinstance(frame, HeartbeatFrame):
            if frame.channel != 0:
                raise _ConnectionError(
                    ReplyCode.FRAME_ERROR, "heartbeat frame on a non-zero channel"
                )
            return
        if self.state is ConnectionState.CLOSING:
            if isinstance(frame, MethodFrame) and isinstance(
                frame.method, (commands.Connection.CloseOk, commands.Connection.Close)
            ):
                if isinstance(frame.method, commands.Connection.Close):
                    self._outgoing.append(encode_method(0, commands.Connection.CloseOk()))
                self._finish(self.close_reason)
            return
        if frame.channel == 0:
            if not isinstance(frame, MethodFrame):
                raise _ConnectionError(ReplyCode.UNEXPECTED_FRAME, "content frame on channel 0")
            self._receive_connection_method(frame.method)
            return
        if self.state is not ConnectionState.OPEN:
            raise _ConnectionError(
                ReplyCode.CHANNEL_ERROR, f"frame on channel {frame.channel} before connection.open"
            )
        self._receive_channel_frame(frame)

    # --- channel 0: the connection class ------------------------------------------------

    def _receive_connection_method(self, method: base.Frame) -> None:
        expected: dict[ConnectionState, type[base.Frame]] = {
            ConnectionState.AWAITING_START_OK: commands.Connection.StartOk,
            ConnectionState.AWAITING_TUNE_OK: commands.Connection.TuneOk,
            ConnectionState.AWAITING_OPEN: commands.Connection.Open,
        }
        if isinstance(method, commands.Connection.Close):
            self._outgoing.append(encode_method(0, commands.Connection.CloseOk()))
            self._finish(f"closed by client: {method.reply_code} {method.reply_text}")
            return
        if self.state is ConnectionState.OPEN and not isinstance(
            method, commands.Connection.UpdateSecret
        ):
            # RabbitMQ's reader (handle_method0): the handshake is over, nothing else belongs
            raise _ConnectionError(
                ReplyCode.CHANNEL_ERROR, "unexpected method in connection state running", method
            )
        wanted = expected.get(self.state)
        if wanted is not None and not isinstance(method, wanted):
            raise _ConnectionError(
                ReplyCode.COMMAND_INVALID,
                f"expected '{wanted.name.lower()}', got '{method.name.lower()}'",
                method,
            )
        if isinstance(method, commands.Connection.StartOk):
            self._on_start_ok(method)
        elif isinstance(method, commands.Connection.TuneOk):
            self._on_tune_ok(method)
        elif isinstance(method, commands.Connection.Open):
            self._on_open(method)
        elif isinstance(method, commands.Connection.UpdateSecret):
            self._on_update_secret(method)
        else:
            raise _ConnectionError(
                ReplyCode.COMMAND_INVALID,
                f"unexpected method '{method.name.lower()}' on channel 0",
                method,
            )

    def _on_start_ok(self, method: commands.Connection.StartOk) -> None:
        self.client_properties = dict(method.client_properties or {})
        mechanism = self.mechanism = method.mechanism
        credentials = _credentials(mechanism, method.response)
        if credentials is None:
            raise _ConnectionError(
                ReplyCode.COMMAND_INVALID,
                f"unknown authentication mechanism '{mechanism}'"
                if mechanism not in ("PLAIN", "AMQPLAIN")
                else f"malformed {mechanism} response",
                method,
            )
        username, password = credentials
        if not self.authenticator.authenticate(username, password):
            if self._hold(method):
                return
            # RabbitMQ's authentication_failure_close capability: a 403 close, not a bare drop.
            raise _ConnectionError(  # with class and method 0, as RabbitMQ sends it
                ReplyCode.ACCESS_REFUSED,
                f"Login was refused using authentication mechanism {mechanism}. "
                "For details see the broker logfile.",
            )
        self.user = username
        self._move(ConnectionState.AWAITING_TUNE_OK)
        self.send_method(
            0,
            commands.Connection.Tune(
                channel_max=self.settings.channel_max,
                frame_max=self.settings.frame_max_bytes,
                heartbeat=self.settings.heartbeat_s,
            ),
        )

    def _on_tune_ok(self, method: commands.Connection.TuneOk) -> None:
        offered = self.settings
        if method.frame_max and method.frame_max < FRAME_MIN_SIZE_BYTES:
            raise _ConnectionError(
                ReplyCode.NOT_ALLOWED,
                f"frame_max={method.frame_max} < {FRAME_MIN_SIZE_BYTES} min size",
                method,
            )
        if method.frame_max > offered.frame_max_bytes or method.channel_max > offered.channel_max:
            raise _ConnectionError(
                ReplyCode.NOT_ALLOWED,
                "negotiated frame_max or channel_max is higher than the maximum allowed value",
                method,
            )
        self.channel_max = method.channel_max or offered.channel_max
        self.frame_max_bytes = method.frame_max or offered.frame_max_bytes
        self.heartbeat_s = method.heartbeat
        self._reader.frame_max_bytes = self.frame_max_bytes
        self._move(ConnectionState.AWAITING_OPEN)

    def _on_open(self, method: commands.Connection.Open) -> None:
        refusal = self.authenticator.vhost_refusal(self.user, method.virtual_host)
        if refusal is not None:
            if self._hold(method):
                return
            raise _ConnectionError(ReplyCode.NOT_ALLOWED, refusal, method)
        self.vhost = method.virtual_host
        self._move(ConnectionState.OPEN)
        self.send_method(0, commands.Connection.OpenOk())
        self._events.append(ConnectionOpened(self.user, self.vhost, self.client_properties))

    def _on_update_secret(self, method: commands.Connection.UpdateSecret) -> None:
        """A new secret for the logged-in user (OAuth token refresh in RabbitMQ): accepted
        when it authenticates the same user."""
        secret = method.new_secret
        if isinstance(secret, bytes):
            secret = secret.decode("utf-8", "replace")
        if not self.authenticator.authenticate(self.user, secret or ""):
            if self._hold(method):
                return
            raise _ConnectionError(
                ReplyCode.NOT_ALLOWED, "New secret was refused by one of the backends", method
            )
        self.send_method(0, commands.Connection.UpdateSecretOk())

    def _hold(self, method: base.Frame) -> bool:
        if not self.authenticator.hold_refusal():
            return False
        self._held = method
        return True

    # --- channels -------------------------------------------------------------------------

    def _receive_channel_frame(self, frame: MethodFrame | HeaderFrame | BodyFrame) -> None:
        number = frame.channel
        channel = self._channels.get(number)
        if channel is None:
            if isinstance(frame, MethodFrame) and isinstance(frame.method, commands.Channel.Open):
                self._open_channel(number, frame.method)
                return
            raise _ConnectionError(
                ReplyCode.CHANNEL_ERROR, "expected 'channel.open'", _method_of(frame)
            )
        if channel.state is ChannelState.CLOSING:
            self._receive_on_closing_channel(number, frame)
            return
        if channel.state is ChannelState.CLOSE_RECEIVED:
            return  # a client waiting for close-ok sends nothing that counts
        if channel.publish is not None:
            self._receive_content(number, channel, frame)
            return
        if not isinstance(frame, MethodFrame):
            raise _ConnectionError(
                ReplyCode.UNEXPECTED_FRAME,
                "expected method frame, got non method frame instead",
            )
        self._receive_channel_method(number, frame.method)

    def _open_channel(self, number: int, method: commands.Channel.Open) -> None:
        # RabbitMQ's reader limits how many channels are open, not their numbers
        if self.channel_max and len(self._channels) >= self.channel_max:
            raise _ConnectionError(
                ReplyCode.NOT_ALLOWED,
                f"number of channels opened ({len(self._channels)}) has reached the negotiated "
                f"channel_max ({self.channel_max})",
                method,
            )
        self._channels[number] = _Channel()
        # channel-id is reserved (AMQP 0-9-1 §1.5.2.2): RabbitMQ sends it empty; pamqp would
        # insist on "0"
        self.send_method(number, unchecked(commands.Channel.OpenOk, channel_id=""))
        self._events.append(ChannelOpened(number))

    def _receive_on_closing_channel(
        self, number: int, frame: MethodFrame | HeaderFrame | BodyFrame
    ) -> None:
        if not isinstance(frame, MethodFrame):
            return
        if isinstance(frame.method, commands.Channel.CloseOk):
            del self._channels[number]
        elif isinstance(frame.method, commands.Channel.Close):
            self._outgoing.append(encode_method(number, commands.Channel.CloseOk()))

    def _receive_channel_method(self, number: int, method: base.Frame) -> None:
        if isinstance(method, commands.Channel.Open):
            raise _ConnectionError(ReplyCode.CHANNEL_ERROR, "second 'channel.open' seen", method)
        if isinstance(method, commands.Channel.Close):
            self._channels[number].state = ChannelState.CLOSE_RECEIVED
            self._events.append(ChannelCloseReceived(number))
        elif isinstance(method, commands.Channel.CloseOk):
            return  # a close-ok for a close we never sent: nothing to do
        elif isinstance(method, commands.Channel.Flow):
            if not method.active:
                # RabbitMQ: channel.flow(active=false) from a client is not supported.
                raise _ConnectionError(ReplyCode.NOT_IMPLEMENTED, "active=false", method)
            self.send_method(number, commands.Channel.FlowOk(active=True))
        elif isinstance(method, CONTENT_METHODS):
            self._channels[number].publish = method
        elif method.index >> 16 == commands.Connection.frame_id:
            raise _ConnectionError(
                ReplyCode.COMMAND_INVALID,
                f"connection method '{method.name.lower()}' on channel {number}",
                method,
            )
        else:
            self._events.append(MethodReceived(number, method))

    def _receive_content(
        self, number: int, channel: _Channel, frame: MethodFrame | HeaderFrame | BodyFrame
    ) -> None:
        publish = channel.publish
        assert publish is not None
        if channel.header is None:
            if not isinstance(frame, HeaderFrame):
                raise _ConnectionError(
                    ReplyCode.UNEXPECTED_FRAME,
                    f"expected content header for class {CLASS_BASIC}, got non content header "
                    "frame instead",
                    publish,
                )
            if frame.class_id != CLASS_BASIC:
                raise _ConnectionError(
                    ReplyCode.UNEXPECTED_FRAME,
                    f"expected content header for class {CLASS_BASIC}, got one for class "
                    f"{frame.class_id} instead",
                    publish,
                )
            channel.header = frame
            if frame.body_size > self.settings.message_size_max_bytes:
                self._reset_content(channel)
                self.close_channel(
                    number,
                    ReplyCode.PRECONDITION_FAILED,
                    f"message size {frame.body_size} is larger than configured max size "
                    f"{self.settings.message_size_max_bytes}",
                    publish,
                )
                self._events.append(ChannelClosed(number))
                return
        elif isinstance(frame, BodyFrame):
            channel.body_parts.append(frame.payload)
            channel.body_received_bytes += len(frame.payload)
            if channel.body_received_bytes > channel.header.body_size:
                # RabbitMQ's command assembler wants no more body than the header declared:
                # what goes beyond it is an unexpected frame
                raise _ConnectionError(
                    ReplyCode.UNEXPECTED_FRAME,
                    "expected content body, got non content body frame instead",
                    publish,
                )
        else:
            raise _ConnectionError(
                ReplyCode.UNEXPECTED_FRAME,
                "expected content body, got non content body frame instead",
                publish,
            )
        if channel.body_received_bytes == channel.header.body_size:
            self._complete_content(number, channel, publish, channel.header)

    def _complete_content(
        self, number: int, channel: _Channel, publish: base.Frame, header: HeaderFrame
    ) -> None:
        body = b"".join(channel.body_parts)
        self._reset_content(channel)
        try:
            properties = parse_properties(header.properties)
        except PropertyError as error:
            # RabbitMQ decodes the list in the channel process, which crashes on a malformed
            # one: the connection closes with a bare 541 INTERNAL_ERROR, class and method 0
            raise _ConnectionError(ReplyCode.INTERNAL_ERROR, "") from error
        self._events.append(ContentReceived(number, publish, properties, body))

    @staticmethod
    def _reset_content(channel: _Channel) -> None:
        channel.publish = None
        channel.header = None
        channel.body_parts = []
        channel.body_received_bytes = 0

    # --- output ---------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        return data

    def is_channel_open(self, number: int) -> bool:
        channel = self._channels.get(number)
        return (
            self.state is ConnectionState.OPEN
            and channel is not None
            and channel.state is ChannelState.OPEN
        )

    def send_method(self, number: int, method: base.Frame) -> None:
        if self.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            return
        self._outgoing.append(encode_method(number, method))

    def answer_channel_close(self, number: int) -> None:
        """Send the close-ok for a channel.close the client sent (ChannelCloseReceived)."""
        channel = self._channels.get(number)
        if channel is not None and channel.state is ChannelState.CLOSE_RECEIVED:
            del self._channels[number]
            self.send_method(number, commands.Channel.CloseOk())

    def send_content(
        self, number: int, method: base.Frame | bytes, properties: bytes, body: bytes
    ) -> None:
        """A method with content; `method` may come encoded already (`encode_deliver`)."""
        channel = self._channels.get(number)
        # a channel the client is closing still gets the content of replies owed before it
        if (
            self.state is ConnectionState.OPEN
            and channel is not None
            and channel.state is not ChannelState.CLOSING
        ):
            method_frame = method if isinstance(method, bytes) else encode_method(number, method)
            self._outgoing += content_frames(
                number, method_frame, properties, body, self.frame_max_bytes
            )

    def close_channel(
        self, number: int, code: ReplyCode, text: str, method: base.Frame | None = None
    ) -> None:
        """Close one channel for a soft error; the channel ignores all but close-ok after this."""
        channel = self._channels.get(number)
        if channel is None or channel.state is ChannelState.CLOSING:
            return
        class_id, method_id = _ids(method)
        self.send_method(
            number,
            commands.Channel.Close(
                reply_code=int(code),
                reply_text=reply_text(code, text),
                class_id=class_id,
                method_id=method_id,
            ),
        )
        channel.state = ChannelState.CLOSING
        self._reset_content(channel)

    def close(self, code: ReplyCode, text: str, method: base.Frame | None = None) -> None:
        """Close the connection; after this only connection.close-ok is read."""
        if self.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            return
        class_id, method_id = _ids(method)
        self.send_method(
            0,
            commands.Connection.Close(
                reply_code=int(code),
                reply_text=reply_text(code, text),
                class_id=class_id,
                method_id=method_id,
            ),
        )
        self.close_reason = reply_text(code, text)
        self._move(ConnectionState.CLOSING)

    def _fail(self, error: _ConnectionError) -> None:
        if self.state is ConnectionState.CLOSING:
            return  # what comes after our close is not read (but for close-ok)
        if not self._explains_failure(error.code):
            self._finish(error.text)  # the socket is closed with no connection.close
            return
        self.close(error.code, error.text, error.method)

    def _explains_failure(self, code: ReplyCode) -> bool:
        """Whether a failure gets a connection.close, as RabbitMQ's reader decides: always once
        the connection is open or being opened; while tuning only for not-allowed; while
        starting only a refused login, and only to a client with the
        authentication_failure_close capability. Any other handshake failure just closes the
        socket (RabbitMQ: 'we don't trust the client at this point')."""
        if self.state in (ConnectionState.OPEN, ConnectionState.AWAITING_OPEN):
            return True
        if self.state is ConnectionState.AWAITING_TUNE_OK:
            return code is ReplyCode.NOT_ALLOWED
        if self.state is ConnectionState.AWAITING_START_OK:
            capabilities = self.client_properties.get("capabilities") or {}
            return code is ReplyCode.ACCESS_REFUSED and bool(
                isinstance(capabilities, dict) and capabilities.get("authentication_failure_close")
            )
        return False

    def _finish(self, reason: str) -> None:
        self._move(ConnectionState.CLOSED)
        self._channels.clear()
        self._events.append(ConnectionClosed(reason))


CONTENT_METHODS = (
    commands.Basic.Publish,
    commands.Basic.Deliver,
    commands.Basic.Return,
    commands.Basic.GetOk,
)


def _method_of(frame: MethodFrame | HeaderFrame | BodyFrame) -> base.Frame | None:
    return frame.method if isinstance(frame, MethodFrame) else None


def _credentials(mechanism: str, response: str | bytes) -> tuple[str, str] | None:
    """SASL PLAIN (RFC 4616: authzid NUL authcid NUL passwd) or RabbitMQ's AMQPLAIN table."""
    raw = response.encode() if isinstance(response, str) else bytes(response)
    if mechanism == "PLAIN":
        parts = raw.split(b"\x00")
        if len(parts) != 3:
            return None
        return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
    if mechanism == "AMQPLAIN":
        try:
            _, table = decode.field_table(len(raw).to_bytes(4, "big") + raw)
        except (ValueError, IndexError, KeyError, UnicodeDecodeError):
            return None
        login, password = table.get("LOGIN"), table.get("PASSWORD")
        if not isinstance(login, (str, bytes)) or not isinstance(password, (str, bytes)):
            return None
        return (
            login.decode() if isinstance(login, bytes) else login,
            password.decode() if isinstance(password, bytes) else password,
        )
    return None
