"""Binding rules as tables of cases (RabbitMQ docs: exchanges; tutorial five for topics)."""

from __future__ import annotations

import pytest

from warrenmq.replication.routing import headers_match, topic_matches

TOPIC_CASES = [
    # binding key, routing key, matches
    ("a.b.c", "a.b.c", True),
    ("a.b.c", "a.b", False),
    ("*.b.*", "a.b.c", True),
    ("*.b.*", "a.b", False),
    ("*", "", True),
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
