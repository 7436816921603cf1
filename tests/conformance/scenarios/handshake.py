"""Protocol header, connection.start/tune/open, and what frame-level mistakes cost."""

from __future__ import annotations

import struct

from pamqp import body as content_body
from pamqp import commands, frame, header, heartbeat

from ..probe import CLOSE_CHANNEL, CLOSE_CONNECTION, PROTOCOL_HEADER, Broker, Connection, shown
from ..registry import register, scenario


@scenario
def handshake_start(broker: Broker, name: str) -> list[str]:
    connection = broker.socket()
    connection.send_bytes(PROTOCOL_HEADER)
    received = connection.receive()
    assert received is not None
    start = received[1]
    assert isinstance(start, commands.Connection.Start)
    properties = start.server_properties
    return [
        f"version {start.version_major}-{start.version_minor}",
        f"mechanisms {start.mechanisms}",
        f"locales {start.locales}",
        f"capabilities {shown(properties['capabilities'])}",
        f"keys {sorted(key for key in properties if key != 'capabilities')}",
    ]


HEADERS = {
    "header_0_9": b"AMQP\x01\x01\x00\x09",
    "header_0_8": b"AMQP\x01\x01\x08\x00",
    "header_0_9_1_old": b"AMQP\x01\x01\x09\x01",
    "header_1_0_unsupported_major": b"AMQP\x00\x02\x00\x00",
    "header_http": b"GET / HTTP/1.1\r\n\r\n",
    "header_short_then_close": b"AMQ",
}


def _header_scenario(data: bytes):
    def run(broker: Broker, name: str) -> list[str]:
        connection = broker.socket()
        connection.send_bytes(data)
        if data == b"AMQ":
            connection.sock.shutdown(1)
        first = connection.drain(1.0)
        raw = connection.buffer
        return [*(line.split("(")[0] for line in first), f"bytes {raw!r}"]

    return run


for _name, _data in HEADERS.items():
    register(f"handshake_{_name}", _header_scenario(_data))


@scenario
def handshake_wrong_password(broker: Broker, name: str) -> list[str]:
    _, reply = broker.start(password="wrong")
    return reply


@scenario
def handshake_unknown_user(broker: Broker, name: str) -> list[str]:
    _, reply = broker.start(user="nobody-here")
    return reply


@scenario
def handshake_unknown_mechanism(broker: Broker, name: str) -> list[str]:
    _, reply = broker.start(mechanism="CRAM-MD5")
    return reply


@scenario
def handshake_tune(broker: Broker, name: str) -> list[str]:
    _, reply = broker.start()
    return reply


def _tuned(broker: Broker, **fields) -> Connection:
    connection, _ = broker.start()
    connection.send(0, commands.Connection.TuneOk(**fields))
    return connection


@scenario
def handshake_frame_max_too_small(broker: Broker, name: str) -> list[str]:
    connection = _tuned(broker, channel_max=10, frame_max=1024)
    return connection.call(0, commands.Connection.Open(virtual_host="/"))


@scenario
def handshake_frame_max_too_large(broker: Broker, name: str) -> list[str]:
    connection = _tuned(broker, channel_max=10, frame_max=1 << 24)
    return connection.call(0, commands.Connection.Open(virtual_host="/"))


@scenario
def handshake_channel_max_too_large(broker: Broker, name: str) -> list[str]:
    connection = _tuned(broker, channel_max=4096, frame_max=131072)
    return connection.call(0, commands.Connection.Open(virtual_host="/"))


@scenario
def handshake_channel_above_negotiated_max(broker: Broker, name: str) -> list[str]:
    connection = _tuned(broker, channel_max=10, frame_max=131072)
    connection.call(0, commands.Connection.Open(virtual_host="/"))
    return connection.call(11, commands.Channel.Open())


@scenario
def handshake_unknown_vhost(broker: Broker, name: str) -> list[str]:
    connection = _tuned(broker, channel_max=10, frame_max=131072)
    return connection.call(0, commands.Connection.Open(virtual_host="no-such-vhost"))


@scenario
def handshake_open_before_tune_ok(broker: Broker, name: str) -> list[str]:
    connection, _ = broker.start()
    return connection.call(0, commands.Connection.Open(virtual_host="/"))


@scenario
def handshake_close_handshake(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    return connection.call(0, CLOSE_CONNECTION)


@scenario
def handshake_update_secret(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    return connection.call(
        0, commands.Connection.UpdateSecret(new_secret="guest", reason="token refresh")
    )


@scenario
def channel_open_on_channel_zero(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    return connection.call(0, commands.Channel.Open())


@scenario
def channel_open_twice(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    return connection.call(1, commands.Channel.Open())


@scenario
def channel_method_before_open(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    return connection.call(2, commands.Queue.Declare(queue=name))


@scenario
def channel_close_and_reopen(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    closed = connection.call(1, CLOSE_CHANNEL)
    return closed + connection.call(1, commands.Channel.Open())


@scenario
def channel_flow_active(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    return connection.call(1, commands.Channel.Flow(active=True))


@scenario
def channel_flow_inactive(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    return connection.call(1, commands.Channel.Flow(active=False))


@scenario
def frame_heartbeat_on_channel(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send(1, heartbeat.Heartbeat())
    return connection.sync()


@scenario
def frame_body_longer_than_header(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send(1, commands.Basic.Publish(exchange="", routing_key=name))
    connection.send(1, header.ContentHeader(0, 2, commands.Basic.Properties()))
    connection.send(1, content_body.ContentBody(b"abcd"))
    return connection.sync()


@scenario
def frame_body_without_header(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send(1, content_body.ContentBody(b"abcd"))
    return connection.sync()


@scenario
def frame_header_without_publish(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send(1, header.ContentHeader(0, 2, commands.Basic.Properties()))
    return connection.sync()


@scenario
def frame_method_during_content(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send(1, commands.Basic.Publish(exchange="", routing_key=name))
    connection.send(1, header.ContentHeader(0, 2, commands.Basic.Properties()))
    return connection.sync()


@scenario
def frame_server_method_from_client(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send(
        1, commands.Basic.Deliver(consumer_tag="x", delivery_tag=1, exchange="", routing_key="")
    )
    return connection.sync()


@scenario
def frame_connection_start_from_client(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send(0, commands.Connection.Start())
    return connection.sync()


def _raw_method(class_id: int, method_id: int, arguments: bytes = b"") -> bytes:
    payload = struct.pack(">HH", class_id, method_id) + arguments
    return struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce"


@scenario
def frame_unknown_class(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send_bytes(_raw_method(999, 10))
    return connection.sync()


@scenario
def frame_unknown_method(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send_bytes(_raw_method(50, 99))
    return connection.sync()


@scenario
def frame_bad_frame_end(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    data = bytearray(frame.marshal(commands.Basic.Qos(prefetch_count=1), 1))
    data[-1] = 0x00
    connection.send_bytes(bytes(data))
    return connection.sync()


@scenario
def frame_unknown_frame_type(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send_bytes(struct.pack(">BHI", 9, 1, 0) + b"\xce")
    return connection.sync()


@scenario
def frame_larger_than_frame_max(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send(1, commands.Basic.Publish(exchange="", routing_key=name))
    connection.send(1, header.ContentHeader(0, 200_000, commands.Basic.Properties()))
    connection.send(1, content_body.ContentBody(b"x" * 200_000))
    return connection.sync()


@scenario
def frame_truncated_method_arguments(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send_bytes(_raw_method(50, 10, b"\x00\x00\x05ab"))
    return connection.sync()


@scenario
def frame_content_header_wrong_class(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send(1, commands.Basic.Publish(exchange="", routing_key=name))
    payload = struct.pack(">HHQH", 50, 0, 1, 0)
    connection.send_bytes(struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce")
    return connection.sync()
