"""AMQP 1.0 messages and addresses: sections, RabbitMQ's mapping both ways, address v2."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands
from proton import Message, symbol

from warrenmq.amqp.codec import encode_properties
from warrenmq.amqp.properties import parse_properties
from warrenmq.amqp.v1.address import (
    AddressError,
    Target,
    exchange_address,
    parse_source,
    parse_target,
    queue_address,
)
from warrenmq.amqp.v1.message import (
    MessageError,
    consumer_payload,
    from_0_9_1,
    headers_of,
    parse_message,
    to_0_9_1,
)


def encoded(message: Message) -> bytes:
    return bytes(message.encode())


def test_the_bare_message_is_cut_out_byte_for_byte() -> None:
    message = Message(body=b"abc", inferred=True, id="1", properties={"k": 1}, durable=True)
    message.annotations = {symbol("x-a"): "b"}
    payload = encoded(message)
    sections = parse_message(payload)
    bare_only = encoded(Message(body=b"abc", inferred=True, id="1", properties={"k": 1}))
    assert payload.endswith(sections.bare)
    assert bare_only.endswith(sections.bare)  # the same properties, app-properties and body
    assert sections.data_body == b"abc" and sections.durable
    assert sections.annotations == {"x-a": "b"}
    assert headers_of(sections) == {"k": 1}


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00\x53\x70\x45",  # a header alone: no bare message
        b"\x00\x53\x99\x45",  # not a section
        b"\xa1\x03abc",  # not described
        b"\x00\x53\x75\xa0\x05ab",  # truncated
    ],
)
def test_what_is_not_a_message_is_a_message_error(payload: bytes) -> None:
    with pytest.raises(MessageError):
        parse_message(payload)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_no_bytes_raise_anything_but_message_error(payload: bytes) -> None:
    try:
        parse_message(b"\x00\x53\x73\x45" + payload)
    except MessageError:
        pass


def test_1_0_to_0_9_1_follows_rabbitmqs_table() -> None:
    message_uuid = uuid.uuid4()
    message = Message(
        body=b"body",
        inferred=True,
        durable=False,
        priority=2,
        ttl=1.5,
        id=message_uuid,
        correlation_id=7,
        reply_to="/queues/answers%2F1",
        subject="kind",
        group_id="app",
        creation_time=1_000_000.0,
        properties={"p": "v"},
    )
    message.annotations = {symbol("x-cc"): ["other"], symbol("x-own"): 3}
    raw, body = to_0_9_1(parse_message(encoded(message)))
    values = parse_properties(raw).values()
    assert body == b"body"
    assert values["delivery_mode"] == 1 and values["priority"] == 2
    assert values["expiration"] == "1500"
    assert values["message_id"] == f"urn:uuid:{message_uuid}"
    assert values["correlation_id"] == "7"
    assert values["reply_to"] == "answers/1"
    assert values["type"] == "kind" and values["app_id"] == "app"
    assert values["timestamp"] == 1_000_000
    assert values["headers"] == {"p": "v", "CC": ["other"], "x-own": 3}


def test_a_body_that_is_not_one_data_section_goes_to_0_9_1_encoded() -> None:
    payload = encoded(Message(body={"a": 1}))
    raw, body = to_0_9_1(parse_message(payload))
    assert parse_properties(raw).values()["type"] == "amqp-1.0"
    assert payload.endswith(body) and body.startswith(b"\x00\x53\x77")  # the amqp-value


def test_a_long_or_binary_id_goes_to_a_header() -> None:
    long_id = "i" * 300
    raw, _ = to_0_9_1(parse_message(encoded(Message(body=b"", inferred=True, id=long_id))))
    values = parse_properties(raw).values()
    assert "message_id" not in values and values["headers"]["x-message-id"] == long_id


def test_0_9_1_to_1_0_follows_rabbitmqs_table() -> None:
    header_uuid = uuid.uuid4()
    raw = encode_properties(
        commands.Basic.Properties(
            delivery_mode=2,
            priority=9,
            message_id=f"urn:uuid:{header_uuid}",
            reply_to="q",
            message_type="t",
            app_id="a",
            timestamp=None,
            headers={"x-h": "1", "plain": 2, "table": {"dropped": 1}},
        )
    )
    durable, priority, annotations, bare = from_0_9_1(parse_properties(raw), b"data")
    assert (durable, priority) == (True, 9)
    assert annotations == {"x-basic-type": "t", "x-h": "1"}
    decoded = Message()
    decoded.decode(bare)
    assert decoded.id == header_uuid and decoded.reply_to == "/queues/q"
    assert decoded.group_id == "a" and dict(decoded.properties) == {"plain": 2}
    assert bytes(decoded.body) == b"data"


def test_the_consumer_payload_ends_with_the_bare_message() -> None:
    bare = parse_message(encoded(Message(body="value", id="x"))).bare
    payload = consumer_payload(
        durable=True,
        priority=4,
        delivery_count=2,
        first_acquirer=False,
        annotations={"x-exchange": "e", "x-routing-key": "k"},
        bare=bare,
    )
    assert payload.endswith(bare)
    message = Message()
    message.decode(payload)
    assert (message.durable, message.delivery_count, message.first_acquirer) == (True, 2, False)
    assert message.annotations == {symbol("x-exchange"): "e", symbol("x-routing-key"): "k"}
    assert message.body == "value"


@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("/exchanges/amq.topic/a.b", Target("amq.topic", "a.b", None)),
        ("/exchanges/x", Target("x", "", None)),
        ("/exchanges/x/", Target("x", "", None)),
        ("/exchanges/my%2Fx/key%2F123", Target("my/x", "key/123", None)),
        ("/queues/q%20one", Target("", "q one", "q one")),
    ],
)
def test_target_addresses(address: str, target: Target) -> None:
    assert parse_target(address) == target


@pytest.mark.parametrize(
    "address",
    [
        "/exchanges/",
        "/exchanges//k",
        "/exchanges/amq.default/k",
        "/exchanges/x/k/more",
        "/queues/",
        "/topic/x",
        "queue",
        "/queues/%ff",
    ],
)
def test_bad_target_addresses(address: str) -> None:
    with pytest.raises(AddressError):
        parse_target(address)


def test_addresses_round_trip_their_names() -> None:
    assert parse_source(queue_address("a/b c")) == "a/b c"
    assert parse_target(exchange_address("e/1", "k/2")) == Target("e/1", "k/2", None)
    with pytest.raises(AddressError):
        parse_source("/exchanges/x")
