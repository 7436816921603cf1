"""Basic content properties as bytes: checked once, read by field, rewritten without a decode.

A content header's property list (AMQP 0-9-1 §4.2.6.1, class basic) is sixteen flag bits and
then one value per set flag, in flag order. The broker stores and delivers the list exactly as
the client encoded it, reads only a few fields (headers for routing, expiration, reply-to,
priority, user-id), and rewrites fewer still on the way out (x-death and x-delivery-count in the
headers, BCC removed, a direct reply-to address, expiration dropped on dead-lettering).

`parse_properties` walks the list once and records where each value lies. It is as strict as
RabbitMQ's own decoder (rabbit_framing_amqp_0_9_1:decode_properties): exactly two flag octets
whose last two bits are ignored (RabbitMQ reads no continuation), every value complete, nothing
left over, and a headers table that decodes. Short strings stay bytes: RabbitMQ does not ask
them to be UTF-8, so neither do we. A list that fails is refused at publish (RabbitMQ: 541
INTERNAL_ERROR); one that passes can be rewritten later without failing.
"""

from __future__ import annotations

import struct
import typing
from dataclasses import dataclass

from pamqp import decode, encode

from warrenmq.amqp.codec import DECODE_ERRORS

__all__ = [
    "EMPTY_PROPERTIES",
    "NAMES",
    "PropertyError",
    "PropertyList",
    "encode_headers",
    "encode_shortstr",
    "parse_properties",
]

# The fourteen basic properties in flag order: the first is flag bit 15, the last bit 2.
NAMES = (
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
)
_SHORTSTR, _TABLE, _OCTET, _TIMESTAMP = "shortstr", "table", "octet", "timestamp"
_KINDS = (
    _SHORTSTR,
    _SHORTSTR,
    _TABLE,
    _OCTET,
    _OCTET,
    _SHORTSTR,
    _SHORTSTR,
    _SHORTSTR,
    _SHORTSTR,
    _TIMESTAMP,
    _SHORTSTR,
    _SHORTSTR,
    _SHORTSTR,
    _SHORTSTR,
)
_POSITION = {name: position for position, name in enumerate(NAMES)}
_FLAG_BITS = tuple(1 << (15 - position) for position in range(len(NAMES)))
_FIELDS = tuple(zip(range(len(NAMES)), _FLAG_BITS, _KINDS, strict=True))
_FLAGS = struct.Struct(">H")
_TABLE_LENGTH = struct.Struct(">I")

EMPTY_PROPERTIES = b"\x00\x00"  # no flag set


class PropertyError(ValueError):
    """The property list is malformed: truncated, overlong, or a headers table that won't decode."""


Span = tuple[int, int]  # a value's encoding (with its length prefix) as raw[start:end]


@dataclass(frozen=True, slots=True)
class PropertyList:
    raw: bytes  # the list exactly as received
    spans: tuple[Span | None, ...]  # per property in NAMES order: where its value lies, or None
    headers: dict[str, typing.Any] | None  # the headers table, decoded (None when absent)

    def shortstr(self, name: str) -> bytes | None:
        """A short-string property's bytes (no length octet), or None when it is absent."""
        span = self.spans[_POSITION[name]]
        return None if span is None else self.raw[span[0] + 1 : span[1]]

    def text(self, name: str) -> str | None:
        """A short-string property as text (bytes that are not UTF-8 are replaced)."""
        value = self.shortstr(name)
        return None if value is None else value.decode("utf-8", "replace")

    @property
    def priority(self) -> int:
        span = self.spans[_POSITION["priority"]]
        return 0 if span is None else self.raw[span[0]]

    def values(self) -> dict[str, typing.Any]:
        """Every property present, by name: text, integers (the timestamp in seconds since the
        epoch) and the headers table."""
        shown: dict[str, typing.Any] = {}
        for name, kind, span in zip(NAMES, _KINDS, self.spans, strict=True):
            if span is None:
                continue
            if kind is _SHORTSTR:
                shown[name] = self.text(name)
            elif kind is _OCTET:
                shown[name] = self.raw[span[0]]
            elif kind is _TIMESTAMP:
                shown[name] = int.from_bytes(self.raw[span[0] : span[1]])
            else:
                shown[name] = self.headers
        return shown

    def replaced(self, **values: bytes | None) -> bytes:
        """The list with the named properties set to these encoded values (None removes one)
        and every other one copied byte for byte. Encode values with `encode_headers` and
        `encode_shortstr`."""
        encoded = [None if span is None else self.raw[span[0] : span[1]] for span in self.spans]
        for name, value in values.items():
            encoded[_POSITION[name]] = value
        flags = sum(
            bit for bit, value in zip(_FLAG_BITS, encoded, strict=True) if value is not None
        )
        return _FLAGS.pack(flags) + b"".join(value for value in encoded if value is not None)


def encode_headers(table: dict[str, typing.Any]) -> bytes:
    """A headers table as a property value (pamqp's field table encoding)."""
    return encode.field_table(table)


def encode_shortstr(value: bytes) -> bytes:
    """A short-string property value; PropertyError past 255 bytes."""
    if len(value) > 255:
        raise PropertyError("a short string is at most 255 bytes")
    return bytes([len(value)]) + value


def parse_properties(raw: bytes) -> PropertyList:
    """Check a basic property list the way RabbitMQ decodes it; PropertyError if malformed.

    Publishers tend to send the same short list again and again (delivery-mode 2, a content
    type), so short lists are remembered: a repeat costs a dictionary look-up."""
    known = _PARSED.get(raw)
    if known is not None:
        return known
    parsed = _parse(raw)
    if len(raw) <= _PARSED_RAW_BYTES_MAX:
        if len(_PARSED) >= _PARSED_ENTRIES_MAX:
            _PARSED.clear()
        _PARSED[raw] = parsed
    return parsed


_PARSED: dict[bytes, PropertyList] = {}
_PARSED_ENTRIES_MAX = 512
_PARSED_RAW_BYTES_MAX = 64  # longer lists carry headers or ids that rarely repeat


def _parse(raw: bytes) -> PropertyList:
    end = len(raw)
    if end < _FLAGS.size:
        raise PropertyError("property flags are truncated")
    (flags,) = _FLAGS.unpack_from(raw)
    offset = _FLAGS.size
    spans: list[Span | None] = [None] * len(NAMES)
    headers: dict[str, typing.Any] | None = None
    for position, bit, kind in _FIELDS:
        if not flags & bit:
            continue
        start = offset
        if kind is _SHORTSTR:
            if offset >= end:
                raise PropertyError(f"the {NAMES[position]} property is truncated")
            offset += 1 + raw[offset]
        elif kind is _OCTET:
            offset += 1
        elif kind is _TIMESTAMP:
            offset += 8
        else:
            if offset + _TABLE_LENGTH.size > end:
                raise PropertyError("the headers property is truncated")
            offset += _TABLE_LENGTH.size + _TABLE_LENGTH.unpack_from(raw, offset)[0]
            if offset <= end:
                headers = _decode_table(raw[start:offset])
        if offset > end:
            raise PropertyError(f"the {NAMES[position]} property is truncated")
        spans[position] = (start, offset)
    if offset != end:
        raise PropertyError(f"{end - offset} bytes follow the last property")
    return PropertyList(raw, tuple(spans), headers)


def _decode_table(encoded: bytes) -> dict[str, typing.Any]:
    try:
        consumed, table = decode.field_table(encoded)
    except DECODE_ERRORS as error:
        raise PropertyError(f"the headers table does not decode: {error}") from error
    if consumed != len(encoded):
        raise PropertyError("the headers table does not fill its length")
    return typing.cast(dict[str, typing.Any], table)
