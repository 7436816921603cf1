"""The SASL layer of an AMQP 1.0 connection (AMQP 1.0 §5.3), server side, as a sans-IO machine.

Proton's own SASL server offers no PLAIN without Cyrus SASL, so Warren runs this part itself:
the client's SASL header gets ours and the mechanisms we offer, its sasl-init is checked by the
node's authenticator, and sasl-outcome tells it the result. What the client sends after a
successful outcome (the AMQP header onward) is handed on, unread, to the AMQP engine. A refused
login may be held (`hold` says so): no outcome yet, nothing more read, until `recheck`.

RabbitMQ requires SASL for AMQP 1.0: a client that opens with the bare AMQP header gets the
SASL header back and the socket is closed (rabbitmq.com/docs/amqp, "Version Negotiation").
"""

from __future__ import annotations

import enum
import struct
import typing
from dataclasses import dataclass

from proton import Data, symbol

__all__ = [
    "AMQP_HEADER",
    "SASL_HEADER",
    "Login",
    "SaslError",
    "SaslServer",
    "SaslState",
]

SASL_HEADER = b"AMQP\x03\x01\x00\x00"
AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
SASL_FRAME_TYPE = 1
SASL_MECHANISMS = 0x40
SASL_INIT = 0x41
SASL_OUTCOME = 0x44
OUTCOME_OK = 0
OUTCOME_AUTH = 1  # authentication failed: bad credentials
SASL_FRAME_MAX_BYTES = 512  # §5.3.1: the minimum max-frame-size, which SASL frames must fit

_FRAME = struct.Struct(">IBBH")  # size, data offset (words), type, type-specific (channel)


class SaslError(Exception):
    """The client broke the SASL exchange: the connection closes without an outcome."""


class SaslState(enum.Enum):
    AWAITING_HEADER = "awaiting SASL header"
    AWAITING_INIT = "awaiting sasl-init"
    DONE = "authenticated"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Login:
    """What the client's sasl-init asks for; `check` decides whether it succeeds."""

    mechanism: str  # "PLAIN" or "ANONYMOUS"
    username: str  # PLAIN's authentication identity; "" for ANONYMOUS
    password: str


class SaslServer:
    """Bytes in, bytes out, until the client is authenticated (`state` DONE, with `user`)."""

    def __init__(
        self,
        mechanisms: tuple[str, ...],
        check: typing.Callable[[Login], str | None],
        hold: typing.Callable[[], bool],
    ) -> None:
        """`check` returns the user a login authenticates as, or None to refuse it; `hold`,
        asked before a refusal, True to wait for `recheck` (the Authenticator's hold_refusal)."""
        self.mechanisms = mechanisms
        self.state = SaslState.AWAITING_HEADER
        self.user = ""
        self.mechanism = ""
        self._check = check
        self._hold = hold
        self._held: bytes | None = None  # the sasl-init whose refusal waits for recheck()
        self._buffer = bytearray()
        self._output = bytearray()

    def receive_data(self, data: bytes) -> bytes:
        """Take the client's bytes; return those past the SASL exchange (for the AMQP engine).
        Raises SaslError on a broken exchange; a refused login sets FAILED."""
        self._buffer += data
        if self.state is SaslState.AWAITING_HEADER:
            if len(self._buffer) < len(SASL_HEADER):
                if not SASL_HEADER.startswith(self._buffer):
                    self._refuse_header()
                return b""
            if self._buffer[: len(SASL_HEADER)] != SASL_HEADER:
                self._refuse_header()
            del self._buffer[: len(SASL_HEADER)]
            self._output += SASL_HEADER + _mechanisms_frame(self.mechanisms)
            self.state = SaslState.AWAITING_INIT
        if self.state is SaslState.AWAITING_INIT and self._held is None:
            body = self._next_frame()
            if body is None:
                return b""
            self._on_init(body)
        if self.state is SaslState.DONE:
            rest = bytes(self._buffer)
            self._buffer.clear()
            return rest
        return b""

    def recheck(self) -> None:
        """Decide the held sasl-init again; `receive_data(b"")` then hands on what followed."""
        body, self._held = self._held, None
        if body is not None:
            self._on_init(body)

    def data_to_send(self) -> bytes:
        data = bytes(self._output)
        self._output.clear()
        return data

    def _refuse_header(self) -> None:
        """Any other header (the bare AMQP one included) gets ours, then the socket closes."""
        self._output += SASL_HEADER
        self.state = SaslState.FAILED
        raise SaslError("AMQP 1.0 needs SASL: the client sent another protocol header")

    def _next_frame(self) -> bytes | None:
        if len(self._buffer) < _FRAME.size:
            return None
        size, offset, frame_type, _ = _FRAME.unpack_from(self._buffer)
        if frame_type != SASL_FRAME_TYPE or offset < 2 or size < offset * 4:
            raise SaslError(f"not a SASL frame (type {frame_type}, data offset {offset})")
        if size > SASL_FRAME_MAX_BYTES:
            raise SaslError(f"SASL frame of {size} bytes is larger than {SASL_FRAME_MAX_BYTES}")
        if len(self._buffer) < size:
            return None
        body = bytes(self._buffer[offset * 4 : size])
        del self._buffer[:size]
        return body

    def _on_init(self, body: bytes) -> None:
        fields = _performative(body, SASL_INIT)
        mechanism = str(fields[0]) if fields and fields[0] is not None else ""
        response = fields[1] if len(fields) > 1 else None
        if mechanism not in self.mechanisms:
            raise SaslError(f"invalid authentication mechanism '{mechanism}'")
        if mechanism == "PLAIN":
            if not isinstance(response, bytes):
                raise SaslError("PLAIN without a response")
            parts = response.split(b"\x00")
            if len(parts) != 3:
                raise SaslError("PLAIN response is not authzid NUL authcid NUL password")
            try:
                login = Login("PLAIN", parts[1].decode(), parts[2].decode())
            except UnicodeDecodeError as error:
                raise SaslError("PLAIN response is not UTF-8") from error
        else:
            login = Login(mechanism, "", "")
        self.mechanism = mechanism
        user = self._check(login)
        if user is None:
            if self._hold():
                self._held = body
                return
            self._output += _outcome_frame(OUTCOME_AUTH)
            self.state = SaslState.FAILED
            return
        self.user = user
        self._output += _outcome_frame(OUTCOME_OK)
        self.state = SaslState.DONE


def _mechanisms_frame(names: tuple[str, ...]) -> bytes:
    def fields(data: Data) -> None:
        data.put_array(False, Data.SYMBOL)
        data.enter()
        for name in names:
            data.put_symbol(symbol(name))
        data.exit()

    return _frame(SASL_MECHANISMS, fields)


def _outcome_frame(code: int) -> bytes:
    return _frame(SASL_OUTCOME, lambda data: data.put_ubyte(code))


def _frame(descriptor: int, fields: typing.Callable[[Data], None]) -> bytes:
    """A SASL frame holding the performative `descriptor`, its list filled by `fields`."""
    data = Data()
    data.put_described()
    data.enter()
    data.put_ulong(descriptor)
    data.put_list()
    data.enter()
    fields(data)
    data.exit()
    data.exit()
    body = data.encode()
    return _FRAME.pack(_FRAME.size + len(body), 2, SASL_FRAME_TYPE, 0) + body


def _performative(body: bytes, descriptor: int) -> list[object]:
    """The fields of the described list `descriptor` that `body` must hold."""
    data = Data()
    try:
        data.decode(body)
        data.rewind()
        if data.next() != Data.DESCRIBED:
            raise SaslError("a SASL frame's body is not a described value")
        data.enter()
        data.next()
        code = data.get_object()
        data.next()
        value = data.get_object()
    except SaslError:
        raise
    except Exception as error:  # proton's DataException, or a type it cannot decode
        raise SaslError(f"malformed SASL frame: {error}") from error
    if code != descriptor or not isinstance(value, list):
        raise SaslError(f"expected performative {descriptor:#x}, got {code!r}")
    return [
        bytes(item) if isinstance(item, (bytes, bytearray, memoryview)) else item for item in value
    ]
