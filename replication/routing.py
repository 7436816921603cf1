"""Routing (RabbitMQ docs: exchanges): which queues a message reaches, and the binding rules of
the topic and headers exchange types.

Pure functions over plain values and the replicated state's exchanges and queues, testable as
tables: the proposer has already turned AMQP field tables into plain Python values, so header
values compare as RabbitMQ compares them, by value.
"""

from __future__ import annotations

import functools
import typing

if typing.TYPE_CHECKING:
    from warrenmq.replication import commands as c
    from warrenmq.replication.queue import Queue
    from warrenmq.replication.state import Binding, Exchange, Vhost

__all__ = ["headers_match", "matching_bindings", "route", "sender_keys", "topic_matches"]


@functools.lru_cache(maxsize=65536)
def _words(key: str) -> tuple[str, ...]:
    # As RabbitMQ splits a topic: "a..b" has an empty middle word, "" has no words at all
    # (so `*` does not match it, `#` does).
    return tuple(key.split(".")) if key else ()


def topic_matches(binding_key: str, routing_key: str) -> bool:
    """`*` stands for exactly one word, `#` for zero or more words."""
    pattern = _words(binding_key)
    words = _words(routing_key)
    # positions[i] is true when pattern[:p] can match words[:i]; one row per pattern word.
    positions = [True] + [False] * len(words)
    for part in pattern:
        if part == "#":
            reachable = False
            for i in range(len(positions)):
                reachable = reachable or positions[i]
                positions[i] = reachable
        else:
            for i in range(len(words), 0, -1):
                positions[i] = positions[i - 1] and (part == "*" or part == words[i - 1])
            positions[0] = False
    return positions[len(words)]


def same_value(left: object, right: object) -> bool:
    """Equal as RabbitMQ compares table values: same type and value, so true is not 1 and
    1 is not 1.0."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        assert isinstance(right, dict)
        return left.keys() == right.keys() and all(same_value(left[k], right[k]) for k in left)
    if isinstance(left, list):
        assert isinstance(right, list)
        return len(left) == len(right) and all(map(same_value, left, right))
    return left == right


def headers_match(
    binding_arguments: dict[str, typing.Any], headers: dict[str, typing.Any] | None
) -> bool:
    """x-match all (default) / any, and all-with-x / any-with-x that also compare x- keys.

    A binding value of None (AMQP void) only asks for the header to be present.
    """
    x_match = binding_arguments.get("x-match", "all")
    with_x = x_match in ("all-with-x", "any-with-x")
    wants_all = x_match in ("all", "all-with-x")
    headers = headers or {}
    for key, expected in binding_arguments.items():
        if key == "x-match" or (key.startswith("x-") and not with_x):
            continue
        present = key in headers
        matched = present and (expected is None or same_value(headers[key], expected))
        if wants_all and not matched:
            return False
        if not wants_all and matched:
            return True
    return wants_all


def route(
    vhost: Vhost,
    exchange: Exchange,
    routing_keys: typing.Sequence[str],
    headers: c.Arguments | None,
) -> list[Queue]:
    """The queues one message reaches: each routing key walks the exchanges on its own."""
    if exchange.name == "" and len(routing_keys) == 1:
        # the default exchange has no bindings (it takes none), and its alternate applies
        # only to what it cannot route: the queue named, if there is one, is the answer
        queue = vhost.queues.get(routing_keys[0])
        if queue is not None:
            return [queue]
    found: dict[str, Queue] = {}
    visited: set[str] = set()

    def walk(source: Exchange, routing_key: str) -> bool:
        if source.name in visited:
            return False
        visited.add(source.name)
        routed = False
        if source.name == "":
            queue = vhost.queues.get(routing_key)
            if queue is not None:
                found[queue.name] = queue
                routed = True
        for binding in matching_bindings(source, routing_key, headers):
            if binding.destination_kind == "queue":
                queue = vhost.queues.get(binding.destination)
                if queue is not None:
                    found[queue.name] = queue
                    routed = True
            else:
                destination = vhost.exchanges.get(binding.destination)
                if destination is not None:
                    routed = walk(destination, routing_key) or routed
        # its own argument first, then its policy's (rabbit_policy:get_arg)
        alternate = source.arguments.get("alternate-exchange", source.policy_alternate_exchange)
        if not routed and isinstance(alternate, str) and alternate in vhost.exchanges:
            routed = walk(vhost.exchanges[alternate], routing_key)
        return routed

    for routing_key in routing_keys:
        visited.clear()
        walk(exchange, routing_key)
    return list(found.values())


def matching_bindings(
    exchange: Exchange, routing_key: str, headers: c.Arguments | None
) -> typing.Iterable[Binding]:
    """The bindings of `exchange` that a message with this routing key and headers matches."""
    routing_type = exchange.routing_type
    if routing_type == "direct":
        return exchange.by_routing_key.get(routing_key, ())
    if routing_type == "fanout":
        return exchange.bindings.values()
    if routing_type == "topic":
        return [
            binding
            for binding in exchange.bindings.values()
            if topic_matches(binding.routing_key, routing_key)
        ]
    return [
        binding
        for binding in exchange.bindings.values()
        if headers_match(binding.arguments, headers)
    ]


def sender_keys(routing_key: str, headers: c.Arguments | None, *names: str) -> list[str]:
    """The routing key and those of the sender-selected headers (CC, BCC) named, in order."""
    keys = [routing_key]
    for name in names:
        values = headers.get(name) if headers else None
        if isinstance(values, list):
            keys += [value for value in values if isinstance(value, str) and value not in keys]
    return keys
