"""Routing and binding rules as tables of cases (RabbitMQ docs: exchanges; tutorial five)."""

from __future__ import annotations

import pytest

from warrenmq.replication import commands as c
from warrenmq.replication.routing import headers_match, route, sender_keys, topic_matches

from .harness import VHOST, Harness, channel_ref, declare_exchange_command

TOPIC_CASES = [
    # binding key, routing key, matches
    ("a.b.c", "a.b.c", True),
    ("a.b.c", "a.b", False),
    ("*.b.*", "a.b.c", True),
    ("*.b.*", "a.b", False),
    ("*", "", False),  # RabbitMQ: "" has no words, so not the one `*` wants
    ("*.#", "", False),
    ("#.*", "", False),
    ("*", "a.b", False),
    ("#", "", True),
    ("#", "a.b.c", True),
    ("a.#", "a", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b.a", False),
    ("#.c", "c", True),
    ("#.c", "a.b.c", True),
    ("#.c", "a.c.d", False),
    ("a.#.c", "a.c", True),
    ("a.#.c", "a.x.y.c", True),
    ("a.#.#.c", "a.c", True),
    ("#.#", "", True),
    ("a.*.#", "a", False),
    ("a.*.#", "a.b", True),
    ("a..c", "a..c", True),  # an empty word is a word
    ("a.*.c", "a..c", True),
    ("", "", True),
    ("", "a", False),
    ("a", "", False),
    ("lazy.#", "lazy.orange.male.rabbit", True),
    ("*.orange.*", "quick.orange.fox", True),
    ("*.*.rabbit", "quick.orange.male.rabbit", False),
]


@pytest.mark.parametrize(("binding_key", "routing_key", "expected"), TOPIC_CASES)
def test_topic_matches(binding_key: str, routing_key: str, expected: bool) -> None:
    assert topic_matches(binding_key, routing_key) is expected


HEADERS_CASES = [
    # binding arguments, message headers, matches
    ({"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}, True),
    ({"a": 1, "b": 2}, {"a": 1}, False),
    ({"x-match": "all", "a": 1}, {"a": 2}, False),
    ({"x-match": "any", "a": 1, "b": 2}, {"b": 2}, True),
    ({"x-match": "any", "a": 1, "b": 2}, {"c": 3}, False),
    ({"x-match": "any", "a": 1}, None, False),
    ({"a": None}, {"a": "anything"}, True),  # void binding value: presence is enough
    ({"a": None}, {"b": 1}, False),
    ({}, {"a": 1}, True),  # all of nothing
    ({"x-match": "any"}, {"a": 1}, False),  # any of nothing
    ({"x-match": "all", "x-k": "v"}, {"x-k": "other"}, True),  # x- keys ignored
    ({"x-match": "all-with-x", "x-k": "v"}, {"x-k": "other"}, False),
    ({"x-match": "all-with-x", "x-k": "v"}, {"x-k": "v"}, True),
    ({"x-match": "any-with-x", "x-k": "v", "a": 1}, {"x-k": "v"}, True),
    ({"x-match": "any", "x-k": "v", "a": 1}, {"x-k": "v"}, False),
    ({"nested": {"t": [1, 2]}}, {"nested": {"t": [1, 2]}}, True),
    ({"a": "1"}, {"a": 1}, False),
]


@pytest.mark.parametrize(("arguments", "headers", "expected"), HEADERS_CASES)
def test_headers_match(arguments: dict, headers: dict | None, expected: bool) -> None:
    assert headers_match(arguments, headers) is expected


# --- route: which queues one message reaches, as a table -----------------------------------


def topology() -> Harness:
    """Queues q1-q3; direct d -> q1 (key a), q2 (key b); fanout f -> q3 and exchange d (an
    exchange-to-exchange binding); topic t -> f (a.#), with alternate-exchange ae -> q2; and a
    cycle: c1 -> c2 -> c1, c2 -> q1."""
    harness = Harness()
    ref = channel_ref(1)
    for queue in ("q1", "q2", "q3"):
        harness.declare_queue(ref, queue)
    for name, kind, arguments in (
        ("d", "direct", {}),
        ("f", "fanout", {}),
        ("ae", "fanout", {}),
        ("t", "topic", {"alternate-exchange": "ae"}),
        ("c1", "fanout", {}),
        ("c2", "fanout", {}),
    ):
        harness.apply(declare_exchange_command(ref, name, kind, arguments=arguments))
    for queue, exchange, key in (
        ("q1", "d", "a"),
        ("q2", "d", "b"),
        ("q3", "f", ""),
        ("q2", "ae", ""),
        ("q1", "c2", ""),
    ):
        harness.apply(
            c.BindQueue(
                channel=ref,
                vhost=VHOST,
                queue=queue,
                exchange=exchange,
                routing_key=key,
                arguments={},
            )
        )
    for destination, source, key in (
        ("d", "f", ""),
        ("f", "t", "a.#"),
        ("c2", "c1", ""),
        ("c1", "c2", ""),
    ):
        harness.apply(
            c.BindExchange(
                channel=ref,
                vhost=VHOST,
                destination=destination,
                source=source,
                routing_key=key,
                arguments={},
            )
        )
    return harness


ROUTES = [
    # (exchange, routing keys, the queues reached)
    ("", ["q2"], {"q2"}),  # the default exchange: the queue named by the key
    ("", ["nowhere"], set()),
    ("d", ["a"], {"q1"}),
    ("d", ["a", "b"], {"q1", "q2"}),  # CC keys: each walks on its own, each queue once
    ("d", ["c"], set()),
    ("f", ["anything"], {"q3"}),  # fanout, and d behind it does not know "anything"
    ("f", ["a"], {"q3", "q1"}),  # fanout to q3, and through d to q1
    ("t", ["a.b"], {"q3"}),  # topic a.# -> fanout f -> q3, and d has no "a.b"
    ("t", ["x.y"], {"q2"}),  # unroutable in t: its alternate exchange ae -> q2
    ("c1", ["k"], {"q1"}),  # a cycle reaches q1 once and ends
]


@pytest.mark.parametrize(("exchange", "routing_keys", "queues"), ROUTES)
def test_route(exchange: str, routing_keys: list[str], queues: set[str]) -> None:
    vhost = topology().broker.state.vhosts[VHOST]
    reached = route(vhost, vhost.exchanges[exchange], routing_keys, None)
    assert {queue.name for queue in reached} == queues
    assert len(reached) == len(queues)


@pytest.mark.parametrize(
    ("headers", "keys"),
    [
        (None, ["rk"]),
        ({"CC": ["a", "b"]}, ["rk", "a", "b"]),
        ({"CC": ["rk"], "BCC": ["z"]}, ["rk", "z"]),
        ({"CC": "a"}, ["rk"]),  # not an array: ignored, as RabbitMQ does
        ({"CC": [1, ["a"], "b"]}, ["rk", "b"]),  # only strings count
    ],
)
def test_sender_selected_keys(headers: dict | None, keys: list[str]) -> None:
    assert sender_keys("rk", headers, "CC", "BCC") == keys
