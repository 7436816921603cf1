"""Every protocol mistake a client can make on the wire, against the connection machine alone:
bytes in, RabbitMQ's close out (reply code, and the class and method ids it names). These were
e2e tests over a socket; the rules are the machine's, so they live here now, and e2e keeps one
raw-socket case per kind to prove the server writes the close and hangs up."""

from __future__ import annotations

import os
import struct
import typing

import pytest
from pamqp import commands

from warrenmq.amqp.connection import Connection, ConnectionState, Settings
from warrenmq.amqp.events import ConnectionClosed, MethodReceived
from warrenmq.amqp.spec import PROTOCOL_HEADER

from .wire import Gate, client_frame, frames_out, handshake


def opened(channel_max: int = 100) -> Connection:
    connection = Connection(Settings(), Gate())
    handshake(connection, channel_max=channel_max)
    frames_out(connection)
    return connection


def with_channel() -> Connection:
    connection = opened()
    connection.receive_data(client_frame(1, commands.Channel.Open()))
    frames_out(connection)
    return connection


def connection_close(connection: Connection, in_sync: bool = True) -> commands.Connection.Close:
    """The connection.close sent; the client's close-ok then ends the connection, unless the
    stream lost its framing (then nothing more is read: the server's close timeout ends it)."""
    ((channel, close),) = frames_out(connection)
    assert channel == 0 and isinstance(close, commands.Connection.Close), close
    assert connection.state is ConnectionState.CLOSING
    events = connection.receive_data(client_frame(0, commands.Connection.CloseOk()))
    if in_sync:
        assert isinstance(events[-1], ConnectionClosed)
        assert connection.state is ConnectionState.CLOSED
    else:
        assert events == [] and connection.state is ConnectionState.CLOSING
    return close


def closed_with(connection: Connection, data: bytes, in_sync: bool = True) -> tuple[int, int, int]:
    connection.receive_data(data)
    close = connection_close(connection, in_sync)
    return close.reply_code, close.class_id, close.method_id


def started() -> Connection:
    connection = Connection(Settings(), Gate())
    connection.receive_data(PROTOCOL_HEADER)
    frames_out(connection)
    return connection


# --- before the handshake -------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [b"AMQP\x01\x01\x00\x0a", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"AMQP\x00\x00\x09\x00"],
    ids=["amqp 0-10", "http", "amqp 0-9"],
)
def test_a_wrong_protocol_header_gets_ours_back_and_a_close(header: bytes) -> None:
    connection = Connection(Settings(), Gate())
    events = connection.receive_data(header)
    assert connection.data_to_send() == PROTOCOL_HEADER
    assert isinstance(events[-1], ConnectionClosed) and connection.state is ConnectionState.CLOSED


def test_amqplain_logs_in_with_rabbitmqs_tune_values() -> None:
    connection = started()
    table = b"".join(
        bytes([len(key)]) + key + b"S" + struct.pack(">I", len(value)) + value
        for key, value in ((b"LOGIN", b"guest"), (b"PASSWORD", b"guest"))
    )
    start_ok = commands.Connection.StartOk(mechanism="AMQPLAIN", response=table.decode())
    connection.receive_data(client_frame(0, start_ok))
    ((_, tune),) = frames_out(connection)
    assert isinstance(tune, commands.Connection.Tune)
    assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (2047, 131072, 60)


def closed_silently(connection: Connection, data: bytes) -> bool:
    """RabbitMQ's reader closes the socket with no connection.close for these."""
    events = connection.receive_data(data)
    return frames_out(connection) == [] and isinstance(events[-1], ConnectionClosed)


def test_an_unknown_mechanism_closes_the_socket() -> None:
    start_ok = commands.Connection.StartOk(mechanism="EXTERNAL", response="")
    assert closed_silently(started(), client_frame(0, start_ok))


def test_a_wrong_password_closes_the_socket_unless_the_client_asked_for_a_close() -> None:
    start_ok = commands.Connection.StartOk(mechanism="PLAIN", response="\0guest\0wrong")
    assert closed_silently(started(), client_frame(0, start_ok))


def test_the_0_9_header_is_spoken_as_0_9_1() -> None:
    """RabbitMQ treats the AMQP 0-9 protocol header as 0-9-1."""
    connection = Connection(Settings(), Gate())
    connection.receive_data(b"AMQP\x01\x01\x00\x09")
    ((_, start),) = frames_out(connection)
    assert isinstance(start, commands.Connection.Start)
    assert (start.version_major, start.version_minor) == (0, 9)


def test_an_unknown_vhost_is_530_naming_connection_open() -> None:
    connection = started()
    connection.receive_data(
        client_frame(0, commands.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest"))
        + client_frame(0, commands.Connection.TuneOk(channel_max=0, frame_max=0, heartbeat=0))
        + client_frame(0, commands.Connection.Open(virtual_host="no-such-vhost"))
    )
    ((_, _tune), (_, close)) = frames_out(connection)
    assert isinstance(close, commands.Connection.Close)
    assert (close.reply_code, close.class_id, close.method_id) == (530, 10, 40)
    assert close.reply_text == "NOT_ALLOWED - vhost no-such-vhost not found"


# --- frames ---------------------------------------------------------------------------------

# a frame's bytes, and whether the stream keeps its framing after it
FRAME_ERRORS = {
    "a frame over frame_max": (struct.pack(">BHI", 3, 1, 200_000), False),
    "a wrong frame-end octet": (bytes([1, 0, 1, 0, 0, 0, 4]) + os.urandom(4) + b"\x00", False),
    "an unknown frame type": (struct.pack(">BHI", 9, 1, 1) + b"x\xce", True),
    # queue.declare whose short string claims more bytes than the frame holds
    "garbage method arguments": (struct.pack(">BHIHHHB", 1, 1, 7, 50, 10, 0, 200) + b"\xce", True),
}


@pytest.mark.parametrize(("data", "in_sync"), FRAME_ERRORS.values(), ids=FRAME_ERRORS.keys())
def test_a_broken_frame_is_501_and_closes_the_connection(data: bytes, in_sync: bool) -> None:
    code, class_id, method_id = closed_with(with_channel(), data, in_sync)
    assert code == 501
    # RabbitMQ names the method whose arguments did not decode, and no method otherwise
    assert (class_id, method_id) == ((50, 10) if data[7:11] == b"\x00\x32\x00\x0a" else (0, 0))


def test_an_unknown_method_closes_the_socket() -> None:
    assert closed_silently(with_channel(), struct.pack(">BHIHH", 1, 1, 4, 60, 999) + b"\xce")


# --- channels and content -------------------------------------------------------------------

CHANNEL_ERRORS: dict[str, tuple[int, typing.Any, tuple[int, int, int]]] = {
    "a method on a channel never opened": (7, commands.Queue.Declare(queue="q"), (504, 50, 10)),
    "a second channel.open": (1, commands.Channel.Open(), (504, 20, 10)),
    "channel.flow active=false": (1, commands.Channel.Flow(active=False), (540, 20, 20)),
}


@pytest.mark.parametrize(
    ("number", "method", "expected"), CHANNEL_ERRORS.values(), ids=CHANNEL_ERRORS.keys()
)
def test_a_channel_mistake_closes_the_connection(
    number: int, method: typing.Any, expected: tuple[int, int, int]
) -> None:
    assert closed_with(with_channel(), client_frame(number, method)) == expected


def test_more_channels_than_channel_max_is_530() -> None:
    """RabbitMQ counts the open channels; their numbers may be anything."""
    connection = opened(channel_max=2)
    connection.receive_data(
        client_frame(7, commands.Channel.Open()) + client_frame(300, commands.Channel.Open())
    )
    assert len(frames_out(connection)) == 2
    assert closed_with(connection, client_frame(1, commands.Channel.Open())) == (530, 20, 10)


def test_a_body_frame_without_a_publish_is_505() -> None:
    assert closed_with(with_channel(), struct.pack(">BHI", 3, 1, 2) + b"hi\xce") == (505, 0, 0)


def test_a_method_where_the_content_header_belongs_is_505_naming_the_publish() -> None:
    connection = with_channel()
    publish = client_frame(1, commands.Basic.Publish(exchange="", routing_key="q"))
    qos = client_frame(1, commands.Basic.Qos(prefetch_count=1))
    assert closed_with(connection, publish + qos) == (505, 60, 40)


def test_methods_pipelined_after_a_connection_error_are_not_passed_up() -> None:
    connection = with_channel()
    events = connection.receive_data(
        client_frame(7, commands.Queue.Declare(queue="q"))
        + client_frame(1, commands.Queue.Declare(queue="after"))
    )
    assert not any(isinstance(event, MethodReceived) for event in events)
    assert connection_close(connection).reply_code == 504


@pytest.mark.parametrize("secret", ["wrong", "", "g" * 100_000, "\x00guest"])
def test_update_secret_that_does_not_log_the_user_in_is_530(secret: str) -> None:
    """connection.update-secret (RabbitMQ: OAuth token refresh) must authenticate the same
    user; anything else closes the connection as RabbitMQ's reader does."""
    connection = opened()
    update = commands.Connection.UpdateSecret(new_secret=secret, reason="refresh")
    assert closed_with(connection, client_frame(0, update)) == (530, 10, 70)


def test_update_secret_that_logs_the_user_in_is_answered() -> None:
    connection = opened()
    connection.receive_data(
        client_frame(0, commands.Connection.UpdateSecret(new_secret="guest", reason="refresh"))
    )
    ((channel, answer),) = frames_out(connection)
    assert channel == 0 and isinstance(answer, commands.Connection.UpdateSecretOk)
    assert connection.state is ConnectionState.OPEN
