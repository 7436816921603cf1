"""The connection machine with no sockets: bytes in, events and frames out."""

from __future__ import annotations

import struct
import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import body as content_body
from pamqp import commands, frame, header

from warrenmq.amqp import codec
from warrenmq.amqp.codec import content_frames, encode_deliver, encode_method, unchecked
from warrenmq.amqp.connection import Connection, ConnectionState, Settings
from warrenmq.amqp.events import (
    ChannelCloseReceived,
    ChannelOpened,
    ConnectionClosed,
    ConnectionOpened,
    ContentReceived,
    MethodReceived,
)
from warrenmq.amqp.spec import PROTOCOL_HEADER, ReplyCode

from .wire import Gate, client_frame, frames_out, handshake


@pytest.fixture
def connection() -> Connection:
    connection = Connection(Settings(), Gate())
    events = handshake(connection)
    assert events == [ConnectionOpened("guest", "/", {})]
    sent = [type(value) for _, value in frames_out(connection)]
    assert sent == [commands.Connection.Start, commands.Connection.Tune, commands.Connection.OpenOk]
    assert connection.state is ConnectionState.OPEN
    return connection


@pytest.fixture
def with_channel(connection: Connection) -> Connection:
    assert connection.receive_data(client_frame(1, commands.Channel.Open())) == [ChannelOpened(1)]
    assert [type(value) for _, value in frames_out(connection)] == [commands.Channel.OpenOk]
    return connection


def test_start_offers_rabbitmq_mechanisms_and_tune_values() -> None:
    connection = Connection(Settings(server_properties={"product": "Warren"}), Gate())
    connection.receive_data(PROTOCOL_HEADER[:3])
    assert connection.data_to_send() == b""  # a partial header waits
    connection.receive_data(PROTOCOL_HEADER[3:])
    ((_, start),) = frames_out(connection)
    assert (start.version_major, start.version_minor) == (0, 9)
    assert start.mechanisms == "PLAIN AMQPLAIN" and start.locales == "en_US"
    assert start.server_properties["product"] == "Warren"


def test_negotiated_limits_come_from_tune_ok() -> None:
    connection = Connection(Settings(), Gate())
    handshake(connection, frame_max=8192)
    assert (connection.channel_max, connection.frame_max_bytes, connection.heartbeat_s) == (
        100,
        8192,
        0,
    )


def test_wrong_header_is_answered_with_ours_and_closed() -> None:
    connection = Connection(Settings(), Gate())
    events = connection.receive_data(b"AMQP\x01\x01\x00\x0a")
    assert connection.data_to_send() == PROTOCOL_HEADER
    assert events == [ConnectionClosed("unsupported protocol header")]
    assert connection.state is ConnectionState.CLOSED
    assert connection.receive_data(b"more") == []


def test_an_illegal_transition_raises_and_leaves_the_state_unchanged(
    connection: Connection,
) -> None:
    with pytest.raises(RuntimeError, match="cannot go from open to awaiting connection.tune-ok"):
        connection._move(ConnectionState.AWAITING_TUNE_OK)
    assert connection.state is ConnectionState.OPEN


def _start_ok(password: str, capabilities: dict[str, bool]) -> commands.Connection.StartOk:
    return commands.Connection.StartOk(
        client_properties={"capabilities": capabilities},
        mechanism="PLAIN",
        response=f"\0guest\0{password}",
    )


def test_bad_password_closes_with_403_for_a_client_that_asked() -> None:
    """RabbitMQ's authentication_failure_close: a 403 close (class and method 0, as RabbitMQ
    sends it) for a client with the capability."""
    connection = Connection(Settings(), Gate())
    connection.receive_data(PROTOCOL_HEADER)
    connection.data_to_send()
    connection.receive_data(
        client_frame(0, _start_ok("bad", {"authentication_failure_close": True}))
    )
    ((_, close),) = frames_out(connection)
    assert (close.reply_code, close.class_id, close.method_id) == (403, 0, 0)
    assert connection.state is ConnectionState.CLOSING
    events = connection.receive_data(client_frame(0, commands.Connection.CloseOk()))
    assert isinstance(events[0], ConnectionClosed) and connection.state is ConnectionState.CLOSED


def test_handshake_failures_close_the_socket_without_a_close() -> None:
    """RabbitMQ's reader sends no connection.close for a failed handshake unless the client
    asked for one (bad login) or the tune was not allowed."""
    for start_ok in (
        _start_ok("bad", {}),
        commands.Connection.StartOk(mechanism="CRAM-MD5", response="x"),
    ):
        connection = Connection(Settings(), Gate())
        connection.receive_data(PROTOCOL_HEADER)
        connection.data_to_send()
        events = connection.receive_data(client_frame(0, start_ok))
        assert frames_out(connection) == []
        assert isinstance(events[0], ConnectionClosed)
        assert connection.state is ConnectionState.CLOSED


def test_content_arriving_one_byte_at_a_time(with_channel: Connection) -> None:
    connection = Connection(Settings(), Gate())
    handshake(connection, frame_max=4096)
    connection.receive_data(client_frame(1, commands.Channel.Open()))
    body = bytes(range(256)) * 40  # 10 KiB: three body frames at frame_max 4096
    properties = commands.Basic.Properties(content_type="text/plain", headers={"k": "v"})
    data = client_frame(1, commands.Basic.Publish(exchange="x", routing_key="rk"))
    data += client_frame(1, header.ContentHeader(0, len(body), properties))
    for start in range(0, len(body), 4088):
        data += client_frame(1, content_body.ContentBody(body[start : start + 4088]))
    events = []
    for index in range(len(data)):
        events += connection.receive_data(data[index : index + 1])
    (event,) = [event for event in events if isinstance(event, ContentReceived)]
    assert event.body == body and event.properties.headers == {"k": "v"}
    assert event.method.exchange == "x" and event.method.routing_key == "rk"
    assert event.properties.raw == properties.marshal()  # kept exactly as the client encoded it


def test_methods_pass_up_in_order(with_channel: Connection) -> None:
    events = with_channel.receive_data(
        client_frame(1, commands.Queue.Declare(queue="a"))
        + client_frame(1, commands.Basic.Qos(prefetch_count=5))
    )
    assert [type(event.method) for event in events if isinstance(event, MethodReceived)] == [
        commands.Queue.Declare,
        commands.Basic.Qos,
    ]


def test_client_channel_close(with_channel: Connection) -> None:
    events = with_channel.receive_data(
        client_frame(
            1, commands.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0)
        )
    )
    assert events == [ChannelCloseReceived(1)]
    assert frames_out(with_channel) == []  # close-ok waits for the session
    # what the client sends before close-ok does not count
    assert with_channel.receive_data(client_frame(1, commands.Basic.Qos(prefetch_count=1))) == []
    with_channel.answer_channel_close(1)
    assert [type(value) for _, value in frames_out(with_channel)] == [commands.Channel.CloseOk]
    assert not with_channel.is_channel_open(1)


def test_a_closed_channel_ignores_everything_until_close_ok(with_channel: Connection) -> None:
    with_channel.close_channel(
        1, ReplyCode.NOT_FOUND, "no queue 'q' in vhost '/'", commands.Queue.Declare(queue="q")
    )
    ((_, close),) = frames_out(with_channel)
    assert close.reply_text == "NOT_FOUND - no queue 'q' in vhost '/'"
    assert (close.class_id, close.method_id) == (50, 10)
    assert with_channel.receive_data(client_frame(1, commands.Queue.Declare(queue="q"))) == []
    with_channel.receive_data(client_frame(1, commands.Channel.CloseOk()))
    assert with_channel.receive_data(client_frame(1, commands.Channel.Open())) == [ChannelOpened(1)]


def test_oversize_frame_is_refused_before_its_payload_is_buffered(with_channel: Connection) -> None:
    with_channel.receive_data(struct.pack(">BHI", 3, 1, 10_000_000))
    ((_, close),) = frames_out(with_channel)
    assert close.reply_text == (
        "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,10000000,131064}"
    )
    assert with_channel.state is ConnectionState.CLOSING
    assert with_channel.receive_data(b"\x00" * 1000) == []  # ignored while closing


def test_encode_method_accepts_any_utf8_name() -> None:
    data = encode_method(
        3, unchecked(commands.Queue.DeclareOk, queue="queue é ✓", message_count=2, consumer_count=1)
    )
    _, channel, value = frame.unmarshal(data)
    assert (channel, value.queue, value.message_count, value.consumer_count) == (
        3,
        "queue é ✓",
        2,
        1,
    )


def test_encode_method_packs_bits_as_pamqp_reads_them() -> None:
    method = commands.Queue.Declare(
        queue="q",
        passive=False,
        durable=True,
        exclusive=False,
        auto_delete=True,
        nowait=True,
        arguments={"x": 1},
    )
    assert encode_method(1, method) == frame.marshal(method, 1)


SHORT_NAMES = st.text(max_size=80).filter(lambda text: len(text.encode()) <= 255)


@given(
    channel=st.integers(1, 65535),
    fields=st.fixed_dictionaries(
        {
            "consumer_tag": SHORT_NAMES,
            "delivery_tag": st.integers(0, 2**63 - 1),  # what pamqp encodes (signed)
            "redelivered": st.booleans(),
            "exchange": SHORT_NAMES,
            "routing_key": SHORT_NAMES,
        }
    ),
)
def test_the_fast_deliver_frame_is_pamqps_byte_for_byte(
    channel: int, fields: dict[str, typing.Any]
) -> None:
    # as the session built it: names the broker admitted, not validated again
    deliver = unchecked(commands.Basic.Deliver, **fields)
    assert encode_deliver(channel, **fields) == encode_method(channel, deliver)


@pytest.mark.parametrize("kept", [3, codec.DELIVER_PARTS_KEPT])
def test_kept_deliver_frames_fit_each_channel_and_tag(
    monkeypatch: pytest.MonkeyPatch, kept: int
) -> None:
    """The same names on another channel, another tag or bit: pamqp's bytes each time, and
    no more kept than DELIVER_PARTS_KEPT."""
    monkeypatch.setattr(codec, "DELIVER_PARTS_KEPT", kept)
    monkeypatch.setattr(codec, "_DELIVER_PARTS", {})
    for number in range(24):
        fields = {
            "consumer_tag": f"c{number % 2}",
            "delivery_tag": number * 2**40,
            "redelivered": number % 3 == 0,
            "exchange": "x",
            "routing_key": f"k{number % 3}",
        }
        channel = 7 + number % 4
        deliver = unchecked(commands.Basic.Deliver, **fields)
        assert encode_deliver(channel, **fields) == encode_method(channel, deliver)
    assert len(codec._DELIVER_PARTS) <= kept


def _publish_payload(
    ticket: int, exchange: bytes, routing_key: bytes, bits: int, cut: int, extra: bytes
) -> bytes:
    """basic.publish's method payload, well-formed unless `cut` drops bytes or `extra` adds."""
    payload = b"".join(
        (
            struct.pack(">IH", commands.Basic.Publish.index, ticket),
            bytes((len(exchange),)),
            exchange,
            bytes((len(routing_key),)),
            routing_key,
            bytes((bits,)),
        )
    )
    return payload[: max(4, len(payload) - cut)] + extra  # the method index stays whole


NAME_BYTES = st.one_of(st.text(max_size=40).map(str.encode), st.binary(max_size=40))


@given(
    ticket=st.integers(0, 65535),
    exchange=NAME_BYTES,
    routing_key=NAME_BYTES,
    bits=st.integers(0, 255),
    cut=st.one_of(st.just(0), st.integers(0, 60)),
    extra=st.one_of(st.just(b""), st.binary(max_size=3)),
)
def test_the_fast_publish_decoding_is_pamqps_in_every_field_and_error(
    ticket: int, exchange: bytes, routing_key: bytes, bits: int, cut: int, extra: bytes
) -> None:
    payload = _publish_payload(ticket, exchange, routing_key, bits, cut, extra)

    def outcome(decode: typing.Callable[[], object]) -> object:
        try:
            method = decode()
        except codec.FrameError as error:
            return ("error", str(error))
        return {name: getattr(method, name) for name in commands.Basic.Publish.__slots__}

    generic = outcome(lambda: codec._unmarshal(commands.Basic.Publish, payload[4:]))
    assert outcome(lambda: codec._decode_method(payload)) == generic


def test_content_frames_split_the_body_by_frame_max() -> None:
    deliver = commands.Basic.Deliver(consumer_tag="t", delivery_tag=1, exchange="", routing_key="q")
    data = b"".join(content_frames(1, encode_method(1, deliver), b"\x00\x00", b"x" * 10_000, 4096))
    kinds = []
    while data:
        consumed, _, value = frame.unmarshal(data)
        kinds.append((type(value).__name__, len(value.value) if hasattr(value, "value") else 0))
        data = data[consumed:]
    assert kinds == [
        ("Deliver", 0),
        ("ContentHeader", 0),
        ("ContentBody", 4088),
        ("ContentBody", 4088),
        ("ContentBody", 1824),
    ]


@pytest.mark.parametrize(
    "method",
    [
        commands.Connection.Open(virtual_host="/"),
        commands.Connection.TuneOk(channel_max=10, frame_max=131072, heartbeat=0),
        commands.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest"),
        commands.Connection.CloseOk(),
    ],
    ids=lambda method: method.name,
)
def test_a_handshake_method_after_the_handshake_is_504_as_in_rabbitmq(method) -> None:
    """Found by the frame fuzzer: a second connection.open raised out of receive_data.
    RabbitMQ 3.10.8 answers each of these as below (checked with a raw client)."""
    connection = Connection(Settings(), Gate())
    handshake(connection)
    frames_out(connection)
    connection.receive_data(client_frame(0, method))
    ((channel, close),) = frames_out(connection)
    assert channel == 0 and isinstance(close, commands.Connection.Close)
    assert (close.reply_code, close.reply_text) == (
        504,
        "CHANNEL_ERROR - unexpected method in connection state running",
    )
    assert (close.class_id, close.method_id) == (method.index >> 16, method.index & 0xFFFF)
