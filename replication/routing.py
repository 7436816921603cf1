"""Binding rules of the topic and headers exchange types (RabbitMQ docs: exchanges).

Pure functions over plain values: the proposer has already turned AMQP field tables into plain
Python values, so header values compare as RabbitMQ compares them, by value.
"""

from __future__ import annotations

import functools
import typing

__all__ = ["headers_match", "topic_matches"]


@functools.lru_cache(maxsize=65536)
def _words(key: str) -> tuple[str, ...]:
    # "a..b" has an empty middle word and "" is one empty word, as in RabbitMQ.
    return tuple(key.split("."))


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
        matched = present and (expected is None or headers[key] == expected)
        if wants_all and not matched:
            return False
        if not wants_all and matched:
            return True
    return wants_all
