"""RabbitMQ 4.x's AMQP 1.0 addresses, version 2 (rabbitmq.com/docs/amqp, "Address v2").

Targets: `/exchanges/:exchange/:routing-key`, `/exchanges/:exchange` (empty routing key),
`/queues/:queue` (through the default exchange), or none (the anonymous terminus: each
message's `to` holds one of the others). The one source is `/queues/:queue`. Names and keys
are percent-encoded (RFC 3986); the default exchange has no /exchanges/ form.
"""

from __future__ import annotations

import typing
import urllib.parse

__all__ = [
    "AddressError",
    "Target",
    "exchange_address",
    "parse_source",
    "parse_target",
    "queue_address",
    "unquote_queue_address",
]


class AddressError(ValueError):
    """Not a version 2 address."""


class Target(typing.NamedTuple):
    exchange: str
    routing_key: str
    queue: str | None  # /queues/:queue names a queue that must exist


def _unquote(segment: str) -> str:
    try:
        return urllib.parse.unquote(segment, errors="strict")
    except UnicodeDecodeError as error:
        raise AddressError("a percent-encoded segment is not UTF-8") from error


def parse_target(address: str) -> Target:
    if address.startswith("/exchanges/"):
        segments = address[len("/exchanges/") :].split("/")
        if segments[0] in ("", "amq.default") or len(segments) > 2:
            raise AddressError(f"bad address {address!r}")
        routing_key = _unquote(segments[1]) if len(segments) == 2 else ""
        return Target(_unquote(segments[0]), routing_key, None)
    if address.startswith("/queues/"):
        queue = _unquote(address[len("/queues/") :])
        if not queue:
            raise AddressError(f"bad address {address!r}")
        return Target("", queue, queue)
    raise AddressError(f"bad address {address!r}")


def parse_source(address: str) -> str:
    """The queue a source address names."""
    queue = unquote_queue_address(address)
    if not queue:
        raise AddressError(f"bad address {address!r}")
    return queue


def unquote_queue_address(address: str) -> str | None:
    if not address.startswith("/queues/"):
        return None
    try:
        return _unquote(address[len("/queues/") :])
    except AddressError:
        return None


def queue_address(queue: str) -> str:
    return "/queues/" + urllib.parse.quote(queue, safe="")


def exchange_address(exchange: str, routing_key: str | None = None) -> str:
    address = "/exchanges/" + urllib.parse.quote(exchange, safe="")
    if routing_key is not None:
        address += "/" + urllib.parse.quote(routing_key, safe="")
    return address
