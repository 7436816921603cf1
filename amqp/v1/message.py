"""AMQP 1.0 messages (§3.2): their sections, and RabbitMQ's mapping to and from AMQP 0-9-1
(rabbitmq.com/docs/conversions). Pure functions over bytes, with proton's codec.

A message is kept as it was published: the bare message (properties, application-properties,
body sections) is what the publisher's signature covers and is sent on byte for byte; the
header and message annotations around it are the broker's to rewrite on the way out.
"""

from __future__ import annotations

import datetime
import typing
import uuid
from dataclasses import dataclass, field

from pamqp import commands
from proton import Data, Message, symbol

from warrenmq.amqp.codec import encode_properties
from warrenmq.amqp.properties import PropertyList
from warrenmq.amqp.v1.address import queue_address, unquote_queue_address

__all__ = [
    "MessageError",
    "Sections",
    "consumer_payload",
    "from_0_9_1",
    "headers_of",
    "parse_message",
    "to_0_9_1",
]

HEADER = 0x70
DELIVERY_ANNOTATIONS = 0x71
MESSAGE_ANNOTATIONS = 0x72
PROPERTIES = 0x73
APPLICATION_PROPERTIES = 0x74
DATA = 0x75
AMQP_SEQUENCE = 0x76
AMQP_VALUE = 0x77
FOOTER = 0x78
_BARE = (PROPERTIES, APPLICATION_PROPERTIES, DATA, AMQP_SEQUENCE, AMQP_VALUE)
_SHORTSTR_MAX = 255
_AMQP_1_0_TYPE = "amqp-1.0"  # RabbitMQ's 0-9-1 type for a body that is not one data section


class MessageError(ValueError):
    """The transfer is not a well-formed AMQP 1.0 message (amqp:decode-error)."""


@dataclass(slots=True)
class Sections:
    """One message, split: the bare message as bytes, and what the broker reads of it."""

    bare: bytes  # properties, application-properties and body sections, as encoded
    body: bytes  # the body sections alone, as encoded (the end of `bare`)
    message: Message  # every section, decoded
    data_body: bytes | None  # the body when it is exactly one data section
    annotations: dict[str, typing.Any] = field(default_factory=dict)  # message annotations
    has_header: bool = False

    @property
    def durable(self) -> bool:
        return bool(self.message.durable)

    @property
    def priority(self) -> int:
        return int(self.message.priority) if self.has_header else 4


def parse_message(payload: bytes) -> Sections:
    """Split and decode a transfer's payload; MessageError if it is not a message."""
    message = Message()
    try:
        message.decode(payload)
    except Exception as error:  # proton raises MessageException or DataException
        raise MessageError(f"the message does not decode: {error}") from error
    bare_start = bare_end = body_start = None
    body_codes: list[object] = []
    has_header = False
    for code, start, end in _sections(payload):
        if code not in (HEADER, DELIVERY_ANNOTATIONS, MESSAGE_ANNOTATIONS, FOOTER, *_BARE):
            raise MessageError(f"{code!r} is not a message section")
        if code in _BARE:
            bare_start = start if bare_start is None else bare_start
            bare_end = end
        if code in (DATA, AMQP_SEQUENCE, AMQP_VALUE):
            body_start = start if body_start is None else body_start
            body_codes.append(code)
        has_header = has_header or code == HEADER
    if bare_start is None or bare_end is None:
        raise MessageError("the message has no bare message")
    data_body = None
    if body_codes == [DATA]:
        body = message.body
        data_body = bytes(body) if isinstance(body, (bytes, memoryview)) else b""
    annotations = {str(key): value for key, value in (message.annotations or {}).items()}
    return Sections(
        bare=payload[bare_start:bare_end],
        body=payload[body_start:bare_end] if body_start is not None else b"",
        message=message,
        data_body=data_body,
        annotations=annotations,
        has_header=has_header,
    )


def _sections(payload: bytes) -> typing.Iterator[tuple[object, int, int]]:
    """Each top-level value of an encoded message: its descriptor code, start and end."""
    offset = 0
    view = memoryview(payload)
    while offset < len(payload):
        data = Data()
        try:
            used = data.decode(bytes(view[offset:]))
        except Exception as error:
            raise MessageError(f"a section does not decode: {error}") from error
        yield _section_code(data), offset, offset + used
        offset += used


def _section_code(data: Data) -> object:
    data.rewind()
    if data.next() != Data.DESCRIBED:
        return None
    data.enter()
    data.next()
    code = data.get_object()
    data.exit()
    return code


# --- AMQP 1.0 to 0-9-1 ------------------------------------------------------------------------


def to_0_9_1(sections: Sections) -> tuple[bytes, bytes]:
    """The 0-9-1 property list and body a 0-9-1 consumer gets for this message."""
    message = sections.message
    given: dict[str, typing.Any] = {}
    headers: dict[str, typing.Any] = {}
    given["delivery_mode"] = 2 if sections.durable else 1
    if sections.has_header:
        given["priority"] = sections.priority
        if message.ttl:
            given["expiration"] = str(int(message.ttl * 1000))
    _id_to_0_9_1(message.id, "message_id", "x-message-id", given, headers)
    _id_to_0_9_1(message.correlation_id, "correlation_id", "x-correlation-id", given, headers)
    if message.user_id:
        given["user_id"] = bytes(message.user_id).decode("utf-8", "replace")
    if message.reply_to:
        given["reply_to"] = _address_to_queue(str(message.reply_to))
    for name in ("content_type", "content_encoding"):
        value = getattr(message, name)
        if value:
            given[name] = str(value)
    if message.creation_time:
        given["timestamp"] = datetime.datetime.fromtimestamp(
            int(message.creation_time), datetime.UTC
        )
    if message.group_id:
        given["app_id"] = str(message.group_id)
    if message.subject:
        given["message_type"] = str(message.subject)
    for name, value in (message.properties or {}).items():
        headers[str(name)] = _plain(value)
    for name, value in sections.annotations.items():
        if name == "x-cc":
            headers["CC"] = _plain(value)
        elif name.startswith("x-") and name not in ("x-exchange", "x-routing-key"):
            headers[name] = _plain(value)
    body = sections.data_body
    if body is None:
        body = sections.body
        given["message_type"] = _AMQP_1_0_TYPE
    if headers:
        given["headers"] = headers
    return encode_properties(commands.Basic.Properties(**given)), body


def headers_of(sections: Sections) -> dict[str, typing.Any] | None:
    """What headers-exchange bindings match: application properties (RabbitMQ's rule)."""
    properties = sections.message.properties
    if not properties:
        return None
    return {str(name): _plain(value) for name, value in properties.items()}


def _id_to_0_9_1(
    value: object,
    name: str,
    header: str,
    given: dict[str, typing.Any],
    headers: dict[str, typing.Any],
) -> None:
    if value is None:
        return
    if isinstance(value, uuid.UUID):
        given[name] = f"urn:uuid:{value}"
    elif isinstance(value, int):
        given[name] = str(value)
    elif isinstance(value, str) and len(value.encode()) <= _SHORTSTR_MAX:
        given[name] = value
    else:
        headers[header] = bytes(value) if isinstance(value, (bytes, memoryview)) else str(value)


def _address_to_queue(address: str) -> str:
    """reply-to `/queues/q` is queue q for a 0-9-1 consumer; other addresses stay as they are."""
    queue = unquote_queue_address(address)
    return address if queue is None else queue


def _plain(value: object) -> typing.Any:
    """A 1.0 value as a 0-9-1 table value."""
    if isinstance(value, (bool, int, float, str, bytes)) or value is None:
        return value
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return str(value)


# --- AMQP 0-9-1 to 1.0 ------------------------------------------------------------------------


def from_0_9_1(properties: PropertyList, body: bytes) -> tuple[bool, int, dict[str, object], bytes]:
    """A 0-9-1 message as a 1.0 consumer sees it: durable, priority, the message annotations
    from x- headers, and the bare message (one data section with the body)."""
    values = properties.values()
    message = Message(body=body, inferred=True)
    annotations: dict[str, object] = {}
    for name in ("message_id", "correlation_id"):
        value = values.get(name)
        if value is not None:
            setattr(message, "id" if name == "message_id" else name, _id_from_0_9_1(value))
    if "user_id" in values:
        message.user_id = values["user_id"].encode()
    if "reply_to" in values:
        message.reply_to = _queue_to_address(values["reply_to"])
    for name in ("content_type", "content_encoding"):
        if name in values:
            setattr(message, name, symbol(values[name]))
    if "timestamp" in values:
        message.creation_time = float(values["timestamp"])
    if "app_id" in values:
        message.group_id = values["app_id"]
    if "type" in values:
        annotations["x-basic-type"] = values["type"]
    application: dict[str, object] = {}
    for name, value in (properties.headers or {}).items():
        if isinstance(value, (dict, list)):
            continue  # tables and arrays are dropped (RabbitMQ's mapping)
        if name.startswith("x-"):
            annotations[name] = _value_1_0(value)
        else:
            application[name] = _value_1_0(value)
    if application:
        message.properties = typing.cast(typing.Any, application)
    encoded = bytes(message.encode())
    bare = encoded[_bare_start(encoded) :]
    return values.get("delivery_mode") == 2, int(values.get("priority", 4)), annotations, bare


def _id_from_0_9_1(value: str) -> object:
    if value.startswith("urn:uuid:"):
        try:
            return uuid.UUID(value[len("urn:uuid:") :])
        except ValueError:
            return value
    return value


def _queue_to_address(reply_to: str) -> str:
    return reply_to if reply_to.startswith("/") else queue_address(reply_to)


def _value_1_0(value: object) -> object:
    """A 0-9-1 header value for 1.0: timestamps become ms since the epoch."""
    if isinstance(value, datetime.datetime):
        return int(value.timestamp() * 1000)
    return value


def _bare_start(encoded: bytes) -> int:
    return next((start for code, start, _ in _sections(encoded) if code in _BARE), len(encoded))


# --- what a 1.0 consumer gets -------------------------------------------------------------------


def consumer_payload(
    *,
    durable: bool,
    priority: int,
    delivery_count: int,
    first_acquirer: bool,
    annotations: dict[str, object],
    bare: bytes,
) -> bytes:
    """A header, message annotations (where there are any) and the bare message."""
    data = Data()
    data.put_described()
    data.enter()
    data.put_ulong(HEADER)
    data.put_list()
    data.enter()
    data.put_bool(durable)
    data.put_ubyte(max(0, min(priority, 255)))
    data.put_null()  # ttl: not carried to consumers
    data.put_bool(first_acquirer)
    data.put_uint(delivery_count)
    data.exit()
    data.exit()
    parts = [data.encode()]
    if annotations:
        data = Data()
        data.put_described()
        data.enter()
        data.put_ulong(MESSAGE_ANNOTATIONS)
        data.put_map()
        data.enter()
        for name, value in annotations.items():
            data.put_symbol(symbol(name))
            data.put_object(value)
        data.exit()
        data.exit()
        parts.append(data.encode())
    parts.append(bare)
    return b"".join(parts)
