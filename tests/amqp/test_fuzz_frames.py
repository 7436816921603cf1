"""Fuzzing the connection machine: whatever bytes follow a valid handshake, `receive_data` never
raises; what comes out is events and frames, and every close carries one of RabbitMQ's codes."""

from __future__ import annotations

import struct
import typing

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pamqp import body as content_body
from pamqp import commands, frame, header

from warrenmq.amqp import connection as connection_module
from warrenmq.amqp.connection import Connection, ConnectionState, Settings
from warrenmq.amqp.events import Event
from warrenmq.amqp.spec import ReplyCode

from .test_connection import Gate, client_frame, frames_out, handshake

REPLY_CODES = {int(code) for code in ReplyCode}
FRAME_MAX = 4096

# methods a client may send (and some it may not), built with pamqp's defaults or a few fields
methods = st.sampled_from(
    [
        commands.Channel.Open(),
        commands.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0),
        commands.Channel.CloseOk(),
        commands.Channel.Flow(active=False),
        commands.Queue.Declare(queue="q"),
        commands.Queue.Bind(queue="q", exchange="x"),
        commands.Exchange.Declare(exchange="x", exchange_type="topic"),
        commands.Basic.Qos(prefetch_count=5),
        commands.Basic.Consume(queue="q"),
        commands.Basic.Ack(delivery_tag=1),
        commands.Basic.Publish(exchange="", routing_key="q"),
        commands.Basic.Get(queue="q"),
        commands.Basic.Deliver(
            consumer_tag="c", delivery_tag=1, exchange="", routing_key="q"
        ),  # server-only
        commands.Confirm.Select(),
        commands.Tx.Select(),
        commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0),
        commands.Connection.Open(virtual_host="/"),
        commands.Connection.TuneOk(channel_max=10, frame_max=FRAME_MAX, heartbeat=0),
    ]
)
channels = st.sampled_from([0, 1, 1, 1, 2, 65535])


def method_frame(method: object, channel: int) -> bytes:
    return client_frame(channel, method)


def header_frame(channel: int, body_size: int, properties: bytes, class_id: int = 60) -> bytes:
    payload = struct.pack(">HHQ", class_id, 0, body_size) + properties
    return struct.pack(">BHI", 2, channel, len(payload)) + payload + b"\xce"


valid_properties = st.sampled_from(
    [
        header.ContentHeader(0, 0, commands.Basic.Properties(**fields)).marshal()[12:]
        for fields in (
            {},
            {"delivery_mode": 2},
            {"content_type": "text/plain", "headers": {"k": [1, {"n": None}]}},
            {"expiration": "100", "priority": 3, "reply_to": "amq.rabbitmq.reply-to"},
        )
    ]
)
any_properties = valid_properties | st.binary(max_size=40)


def publish(channel: int, properties: bytes, body: bytes) -> bytes:
    """A whole basic.publish: method, content header with these properties, body."""
    data = method_frame(commands.Basic.Publish(exchange="", routing_key="q"), channel)
    data += header_frame(channel, len(body), properties)
    return data + (frame.marshal(content_body.ContentBody(body), channel) if body else b"")


frames = st.one_of(
    st.builds(publish, st.sampled_from([1, 1, 2]), any_properties, st.binary(max_size=8)),
    st.builds(method_frame, methods, channels),
    st.builds(
        header_frame,
        channels,
        st.sampled_from([0, 1, 5, FRAME_MAX, 2**40]),
        any_properties,
        st.sampled_from([60, 60, 10, 0]),
    ),
    st.builds(
        lambda ch, data: frame.marshal(content_body.ContentBody(data), ch),
        channels,
        st.binary(max_size=16),
    ),
    st.builds(lambda ch: struct.pack(">BHI", 8, ch, 0) + b"\xce", channels),  # heartbeat
    st.binary(min_size=1, max_size=24),  # whatever
)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """Flip, cut or grow a frame somewhere."""
    if not data:
        return data
    position = draw(st.integers(0, len(data) - 1))
    how = draw(st.sampled_from(["flip", "cut", "insert", "keep", "keep"]))
    if how == "flip":
        return (
            data[:position]
            + bytes([data[position] ^ draw(st.integers(1, 255))])
            + data[position + 1 :]
        )
    if how == "cut":
        return data[:position]
    if how == "insert":
        return data[:position] + draw(st.binary(min_size=1, max_size=8)) + data[position:]
    return data


streams = st.lists(frames.flatmap(mutated), max_size=12)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams, st.integers(1, 64))
def test_no_byte_stream_makes_the_machine_raise(stream: list[bytes], chunk_bytes: int) -> None:
    check_stream(stream, chunk_bytes)


def check_stream(stream: list[bytes], chunk_bytes: int) -> None:
    """Channel 1 is open; channel 2 and 65535 are not (until the stream opens them)."""
    connection = Connection(Settings(frame_max_bytes=FRAME_MAX), Gate())
    handshake(connection, frame_max=FRAME_MAX)
    connection.receive_data(client_frame(1, commands.Channel.Open()))
    frames_out(connection)
    data = b"".join(stream)
    events: list[Event] = []
    for start in range(0, len(data), chunk_bytes):  # in pieces, as a socket delivers them
        events += connection.receive_data(data[start : start + chunk_bytes])
    assert all(isinstance(event, typing.get_args(Event)) for event in events)
    for _, value in frames_out(connection):
        if isinstance(value, (commands.Connection.Close, commands.Channel.Close)):
            assert value.reply_code in REPLY_CODES, value
            assert value.reply_text.startswith(ReplyCode(value.reply_code).name)
    if connection.state is not ConnectionState.OPEN:
        assert connection.state in (ConnectionState.CLOSING, ConnectionState.CLOSED)


def test_the_frame_fuzz_finds_a_planted_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    """The property above can fail: make the property-list check raise a bare ValueError
    (not PropertyError) on lists that carry a content type, and the fuzz must find it."""
    original = connection_module.parse_properties

    def planted(raw: bytes) -> object:
        if raw[:1] and raw[0] & 0x80:
            raise ValueError("planted")
        return original(raw)

    monkeypatch.setattr(connection_module, "parse_properties", planted)
    search = settings(  # the same examples every run: a check that can pass by luck proves nothing
        max_examples=600, derandomize=True, database=None, phases=[Phase.generate], deadline=None
    )
    with pytest.raises(ValueError, match="planted"):
        search(given(streams, st.integers(1, 64))(check_stream))()
