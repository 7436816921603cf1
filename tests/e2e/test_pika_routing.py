"""Routing, confirms, returns, get and the message format, with pika against a real node."""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Iterator

import pika
import pika.exceptions
import pytest

from .conftest import RunningNode


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def channel(node: RunningNode) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(node.url))
    yield connection.channel()
    if connection.is_open:
        connection.close()


def drain(channel, queue: str) -> list[bytes]:
    bodies = []
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)


def declare_bound(channel, exchange: str, bindings: list[tuple[str, dict | None]]) -> list[str]:
    queues = []
    for routing_key, arguments in bindings:
        queue = channel.queue_declare(unique("q"), exclusive=True).method.queue
        channel.queue_bind(queue, exchange, routing_key, arguments=arguments)
        queues.append(queue)
    return queues


def test_default_exchange_routes_by_queue_name(channel) -> None:
    queue = channel.queue_declare(unique("q")).method.queue
    channel.basic_publish("", queue, b"one")
    channel.basic_publish("", "no-such-queue", b"lost")
    assert drain(channel, queue) == [b"one"]
    channel.queue_delete(queue)


def test_direct_exchange(channel) -> None:
    exchange = unique("direct")
    channel.exchange_declare(exchange, "direct")
    red, green = declare_bound(channel, exchange, [("red", None), ("green", None)])
    channel.queue_bind(green, exchange, "red")  # one queue, two keys
    for key in ("red", "green", "blue"):
        channel.basic_publish(exchange, key, key.encode())
    assert drain(channel, red) == [b"red"]
    assert drain(channel, green) == [b"red", b"green"]


def test_fanout_exchange_ignores_routing_key(channel) -> None:
    exchange = unique("fanout")
    channel.exchange_declare(exchange, "fanout")
    queues = declare_bound(channel, exchange, [("a", None), ("", None), ("zzz", None)])
    channel.basic_publish(exchange, "anything", b"m")
    assert [drain(channel, queue) for queue in queues] == [[b"m"]] * 3


@pytest.mark.parametrize(
    ("binding_key", "routed", "not_routed"),
    [
        ("a.*.c", ["a.b.c", "a..c"], ["a.c", "a.b.b.c", "a.b.c.d"]),
        ("a.#", ["a", "a.b", "a.b.c"], ["b.a", "ab"]),
        ("#", ["", "a", "a.b.c"], []),
        ("*", ["a"], ["a.b", ""]),  # "" has no words (RabbitMQ), so not the one `*` wants
        ("#.c", ["c", "a.c", "a.b.c"], ["c.a"]),
        ("a.#.c", ["a.c", "a.b.c", "a.b.b.c"], ["a.b"]),
        ("", [""], ["a"]),
    ],
)
def test_topic_exchange(
    channel, binding_key: str, routed: list[str], not_routed: list[str]
) -> None:
    exchange = unique("topic")
    channel.exchange_declare(exchange, "topic")
    (queue,) = declare_bound(channel, exchange, [(binding_key, None)])
    for routing_key in routed + not_routed:
        channel.basic_publish(exchange, routing_key, routing_key.encode())
    assert drain(channel, queue) == [key.encode() for key in routed]


def test_headers_exchange_all_and_any(channel) -> None:
    exchange = unique("headers")
    channel.exchange_declare(exchange, "headers")
    all_queue, any_queue, present_queue = declare_bound(
        channel,
        exchange,
        [
            ("", {"x-match": "all", "format": "pdf", "type": "report"}),
            ("", {"x-match": "any", "format": "pdf", "type": "report"}),
            ("", {"format": None}),
        ],
    )
    cases = {
        b"both": {"format": "pdf", "type": "report"},
        b"format-only": {"format": "pdf"},
        b"wrong-type": {"format": "zip", "type": "log"},
        b"none": None,
    }
    for body, headers in cases.items():
        channel.basic_publish(exchange, "", body, pika.BasicProperties(headers=headers))
    assert drain(channel, all_queue) == [b"both"]
    assert drain(channel, any_queue) == [b"both", b"format-only"]
    assert drain(channel, present_queue) == [b"both", b"format-only", b"wrong-type"]


def test_headers_exchange_with_x_variants(channel) -> None:
    exchange = unique("headers")
    channel.exchange_declare(exchange, "headers")
    plain_all, with_x = declare_bound(
        channel,
        exchange,
        [
            ("", {"x-match": "all", "x-tenant": "blue"}),
            ("", {"x-match": "all-with-x", "x-tenant": "blue"}),
        ],
    )
    channel.basic_publish(exchange, "", b"red", pika.BasicProperties(headers={"x-tenant": "red"}))
    channel.basic_publish(exchange, "", b"blue", pika.BasicProperties(headers={"x-tenant": "blue"}))
    assert drain(channel, plain_all) == [b"red", b"blue"]  # x- keys are not compared
    assert drain(channel, with_x) == [b"blue"]


def test_exchange_to_exchange_bindings(channel) -> None:
    upstream, downstream = unique("up"), unique("down")
    channel.exchange_declare(upstream, "topic")
    channel.exchange_declare(downstream, "fanout")
    channel.exchange_bind(downstream, upstream, "orders.#")
    (queue,) = declare_bound(channel, downstream, [("", None)])
    channel.basic_publish(upstream, "orders.new", b"order")
    channel.basic_publish(upstream, "invoices.new", b"invoice")
    assert drain(channel, queue) == [b"order"]
    channel.exchange_unbind(downstream, upstream, "orders.#")
    channel.basic_publish(upstream, "orders.new", b"after-unbind")
    assert drain(channel, queue) == []


def test_exchange_binding_cycle_delivers_once(channel) -> None:
    first, second = unique("e1"), unique("e2")
    channel.exchange_declare(first, "fanout")
    channel.exchange_declare(second, "fanout")
    channel.exchange_bind(second, first)
    channel.exchange_bind(first, second)
    (queue,) = declare_bound(channel, second, [("", None)])
    channel.basic_publish(first, "", b"once")
    assert drain(channel, queue) == [b"once"]


def test_alternate_exchange_takes_unroutable_messages(channel) -> None:
    alternate, main = unique("ae"), unique("main")
    channel.exchange_declare(alternate, "fanout")
    channel.exchange_declare(main, "direct", arguments={"alternate-exchange": alternate})
    (routed,) = declare_bound(channel, main, [("known", None)])
    (unrouted,) = declare_bound(channel, alternate, [("", None)])
    channel.basic_publish(main, "known", b"routed")
    channel.basic_publish(main, "unknown", b"unrouted")
    assert drain(channel, routed) == [b"routed"]
    assert drain(channel, unrouted) == [b"unrouted"]


def test_publisher_confirms_and_mandatory_returns(node: RunningNode) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(node.url))
    channel = connection.channel()
    channel.confirm_delivery()
    queue = channel.queue_declare(unique("q"), exclusive=True).method.queue
    for number in range(50):
        channel.basic_publish("", queue, str(number).encode(), mandatory=True)
    assert channel.queue_declare(queue, passive=True).method.message_count == 50
    with pytest.raises(pika.exceptions.UnroutableError) as returned:
        channel.basic_publish("", unique("nowhere"), b"back", mandatory=True)
    (message,) = returned.value.messages
    assert message.method.reply_code == 312
    assert message.method.reply_text == "NO_ROUTE"
    assert message.body == b"back"
    connection.close()


def test_basic_get_reports_remaining_count_and_redelivery(channel) -> None:
    queue = channel.queue_declare(unique("q"), exclusive=True).method.queue
    for body in (b"1", b"2", b"3"):
        channel.basic_publish("", queue, body)
    method, _, body = channel.basic_get(queue)
    assert (body, method.message_count, method.redelivered) == (b"1", 2, False)
    channel.basic_nack(method.delivery_tag, requeue=True)
    method, _, body = channel.basic_get(queue)
    assert (body, method.redelivered) == (b"1", True)  # back in its place, at the head
    channel.basic_ack(method.delivery_tag)
    assert channel.basic_get(queue)[2] == b"2"
    assert channel.basic_get(queue, auto_ack=True)[2] == b"3"
    assert channel.basic_get(queue) == (None, None, None)


def test_properties_and_headers_round_trip(channel) -> None:
    queue = channel.queue_declare(unique("q"), exclusive=True).method.queue
    stamp = 1_700_000_000
    properties = pika.BasicProperties(
        content_type="application/json",
        content_encoding="gzip",
        delivery_mode=2,
        priority=5,
        correlation_id="corr",
        reply_to="replies",
        expiration="60000",
        message_id="id-1",
        timestamp=stamp,
        type="kind",
        user_id="guest",
        app_id="tests",
        headers={
            "string": "text",
            "int": 42,
            "negative": -7,
            "big": 2**40,
            "bool": True,
            "none": None,
            "decimal": decimal.Decimal("3.14"),
            "time": datetime.datetime.fromtimestamp(stamp, tz=datetime.UTC),
            "array": [1, "two", [3, {"four": 4}]],
            "table": {"nested": {"deep": "value"}},
            "bytes": b"\x00\x01\xff",
        },
    )
    channel.basic_publish("", queue, b"payload", properties)
    _, received, body = channel.basic_get(queue, auto_ack=True)
    assert body == b"payload"
    for name in (
        "content_type",
        "content_encoding",
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
    ):
        assert getattr(received, name) == getattr(properties, name), name
    headers = received.headers
    assert headers["string"] == "text" and headers["int"] == 42 and headers["negative"] == -7
    assert headers["big"] == 2**40 and headers["bool"] is True
    assert headers["none"] is None and headers["decimal"] == decimal.Decimal("3.14")
    assert headers["time"] == datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.UTC)
    assert headers["array"] == [1, "two", [3, {"four": 4}]]
    assert headers["table"] == {"nested": {"deep": "value"}}
    assert headers["bytes"] == b"\x00\x01\xff"


@pytest.mark.parametrize("size", [0, 1, 131_064, 131_065, 1024 * 1024])
def test_bodies_of_any_size_cross_frames_intact(channel, size: int) -> None:
    queue = channel.queue_declare(unique("q"), exclusive=True).method.queue
    body = bytes(index % 251 for index in range(size))
    channel.basic_publish("", queue, body)
    assert channel.basic_get(queue, auto_ack=True)[2] == body


def test_names_beyond_ascii_work_everywhere(channel) -> None:
    """RabbitMQ accepts any UTF-8 name; declare-ok, deliver, get-ok and return echo it back."""
    exchange, queue = unique("échange ✓"), unique("file d'attente ✓")
    channel.exchange_declare(exchange, "direct")
    assert channel.queue_declare(queue, exclusive=True).method.queue == queue
    channel.queue_bind(queue, exchange, "clé")
    channel.basic_publish(exchange, "clé", b"m")
    method, _, body = channel.basic_get(queue, auto_ack=True)
    assert (method.exchange, method.routing_key, body) == (exchange, "clé", b"m")
    returned = []
    channel.add_on_return_callback(
        lambda _channel, method, _props, body: returned.append((method.exchange, body))
    )
    channel.basic_publish(exchange, "nowhere", b"back", mandatory=True)
    channel.connection.process_data_events(time_limit=1)
    assert returned == [(exchange, b"back")]
