"""Basic property lists as bytes: checked as strictly as RabbitMQ, rewritten without a decode."""

from __future__ import annotations

import datetime
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands, header

from warrenmq.amqp.connection import Connection, Settings
from warrenmq.amqp.events import ContentReceived
from warrenmq.amqp.properties import (
    NAMES,
    PropertyError,
    encode_headers,
    encode_shortstr,
    parse_properties,
)
from warrenmq.amqp.spec import ReplyCode

from .test_connection import Gate, client_frame, frames_out, handshake


def marshal(properties: commands.Basic.Properties) -> bytes:
    return header.ContentHeader(0, 0, properties).marshal()[12:]


# Recorded against RabbitMQ 3.10.8 with a raw client (basic.publish, then a content header
# carrying the list): each of these closed the connection with 541 INTERNAL_ERROR, class 0 / 0.
REFUSED_BY_RABBITMQ = {
    "content-type flag, no data": b"\x80\x00",
    "content-type shorter than its length": b"\x80\x00\x05ab",
    "headers flag, truncated table": b"\x20\x00\x00\x00\x00\x10",
    "delivery-mode flag, no data": b"\x10\x00",
    "timestamp flag, 2 of 8 bytes": b"\x00\x40\x00\x00",
    "bytes after the last property": b"\x00\x00\x01\x02",
    "no flags at all": b"",
    "one flag octet": b"\x80",
}
# ... and each of these it took and confirmed.
TAKEN_BY_RABBITMQ = {
    "the continuation bit": b"\x00\x01",
    "the unused bit 1": b"\x00\x02",
    "a content type that is not UTF-8": b"\x80\x00\x02\xff\xfe",
}


@pytest.mark.parametrize("raw", REFUSED_BY_RABBITMQ.values(), ids=REFUSED_BY_RABBITMQ.keys())
def test_what_rabbitmq_refuses_is_refused(raw: bytes) -> None:
    with pytest.raises(PropertyError):
        parse_properties(raw)


@pytest.mark.parametrize("raw", TAKEN_BY_RABBITMQ.values(), ids=TAKEN_BY_RABBITMQ.keys())
def test_what_rabbitmq_takes_is_taken_and_kept_byte_for_byte(raw: bytes) -> None:
    parsed = parse_properties(raw)
    assert parsed.raw == raw
    assert parsed.replaced(reply_to=encode_shortstr(b"r")).startswith(bytes([raw[0] | 0x02]))


def publish_with(raw_properties: bytes, body: bytes = b"x") -> bytes:
    payload = struct.pack(">HHQ", 60, 0, len(body)) + raw_properties
    return (
        client_frame(1, commands.Basic.Publish(exchange="", routing_key="q"))
        + struct.pack(">BHI", 2, 1, len(payload))
        + payload
        + b"\xce"
        + struct.pack(">BHI", 3, 1, len(body))
        + body
        + b"\xce"
    )


@pytest.mark.parametrize(
    "raw",
    [raw for raw in REFUSED_BY_RABBITMQ.values() if len(raw) >= 2],
    ids=[name for name, raw in REFUSED_BY_RABBITMQ.items() if len(raw) >= 2],
)
def test_a_malformed_list_closes_the_connection_as_rabbitmq_does(raw: bytes) -> None:
    connection = Connection(Settings(), Gate())
    handshake(connection)
    connection.receive_data(client_frame(1, commands.Channel.Open()))
    frames_out(connection)
    events = connection.receive_data(publish_with(raw))
    assert not [event for event in events if isinstance(event, ContentReceived)]
    ((channel, close),) = frames_out(connection)
    assert channel == 0 and isinstance(close, commands.Connection.Close)
    assert (close.reply_code, close.reply_text) == (ReplyCode.INTERNAL_ERROR, "INTERNAL_ERROR")
    assert (close.class_id, close.method_id) == (0, 0)


def test_the_fields_the_broker_reads() -> None:
    properties = commands.Basic.Properties(
        content_type="text/plain",
        headers={"k": "v", "n": 1},
        delivery_mode=2,
        priority=7,
        reply_to="amq.rabbitmq.reply-to",
        expiration="6000",
        timestamp=datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC),
        user_id="guest",
    )
    parsed = parse_properties(marshal(properties))
    assert parsed.headers == {"k": "v", "n": 1}
    assert parsed.priority == 7
    assert parsed.shortstr("reply_to") == b"amq.rabbitmq.reply-to"
    assert parsed.text("expiration") == "6000" and parsed.text("message_id") is None
    assert parsed.values() == {
        "content_type": "text/plain",
        "headers": {"k": "v", "n": 1},
        "delivery_mode": 2,
        "priority": 7,
        "reply_to": "amq.rabbitmq.reply-to",
        "expiration": "6000",
        "timestamp": 1704153600,
        "user_id": "guest",
    }


def test_rewriting_changes_only_what_it_names() -> None:
    raw = marshal(commands.Basic.Properties(content_type="a", expiration="5", app_id="z"))
    parsed = parse_properties(raw)
    rewritten = parse_properties(parsed.replaced(headers=encode_headers({"x": 1}), expiration=None))
    assert rewritten.values() == {"content_type": "a", "headers": {"x": 1}, "app_id": "z"}
    with pytest.raises(PropertyError):
        encode_shortstr(b"r" * 256)


# --- Hypothesis: the same answers as pamqp on what it encodes, and nothing but PropertyError --

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=20).filter(
    lambda text: len(text.encode()) <= 255
)
table_values = st.one_of(st.integers(-(2**31), 2**31 - 1), texts, st.booleans())
any_properties = st.builds(
    commands.Basic.Properties,
    content_type=st.none() | texts,
    headers=st.none() | st.dictionaries(texts.filter(bool), table_values, max_size=4),
    delivery_mode=st.none() | st.integers(1, 2),
    priority=st.none() | st.integers(0, 255),
    correlation_id=st.none() | texts,
    reply_to=st.none() | texts,
    expiration=st.none() | texts,
    message_id=st.none() | texts,
    timestamp=st.none()
    | st.integers(0, 2**34).map(lambda s: datetime.datetime.fromtimestamp(s, datetime.UTC)),
    message_type=st.none() | texts,  # pamqp's name for 'type'
    user_id=st.none() | texts,
    app_id=st.none() | texts,
)


@settings(max_examples=300, deadline=None)
@given(any_properties)
def test_every_list_pamqp_encodes_parses_to_the_same_values(
    properties: commands.Basic.Properties,
) -> None:
    raw = marshal(properties)
    parsed = parse_properties(raw)
    given_values = {
        name: getattr(properties, "message_type" if name == "type" else name) for name in NAMES
    }
    if properties.timestamp is not None:  # values() gives seconds since the epoch
        given_values["timestamp"] = int(properties.timestamp.timestamp())
    # pamqp leaves out what is None or an empty string
    assert parsed.values() == {n: v for n, v in given_values.items() if v is not None and v != ""}
    assert parsed.replaced() == raw


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_parse_or_raise_property_error_only(raw: bytes) -> None:
    try:
        parsed = parse_properties(raw)
    except PropertyError:
        return
    assert parse_properties(parsed.replaced(headers=encode_headers({"x-delivery-count": 1})))
