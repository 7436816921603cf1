"""What the broker changes in an AMQP 0-9-1 message's properties on its way through, and the
one property it checks first (expiration). Every property it does not change is copied byte
for byte (amqp/properties.py), so odd-but-valid lists arrive as they were sent."""

from __future__ import annotations

import datetime
import logging
import re

from warrenmq.amqp.properties import (
    EMPTY_PROPERTIES,
    PropertyError,
    PropertyList,
    encode_headers,
    encode_shortstr,
    parse_properties,
)
from warrenmq.amqp.v1.message import MessageError, parse_message, to_0_9_1
from warrenmq.replication import commands as c
from warrenmq.replication.replies import Annotations, Death

__all__ = [
    "REPLY_TO_BYTES",
    "annotated",
    "as_0_9_1",
    "expiration_error",
    "first_and_last_deaths",
    "outgoing_properties",
]

log = logging.getLogger(__name__)

REPLY_TO_BYTES = c.REPLY_TO.encode()


def outgoing_properties(
    properties: PropertyList, sender: c.ChannelRef, replies_to_channel: bool
) -> bytes:
    """The properties as receivers see them: BCC routes the message but no receiver sees it
    (RabbitMQ docs, "Sender-selected distribution"), and a reply-to of amq.rabbitmq.reply-to
    becomes this channel's own address (RabbitMQ docs, "Direct Reply-to")."""
    changes: dict[str, bytes | None] = {}
    if properties.headers is not None and "BCC" in properties.headers:
        changes["headers"] = encode_headers(
            {name: value for name, value in properties.headers.items() if name != "BCC"}
        )
    if replies_to_channel:
        changes["reply_to"] = encode_shortstr(sender.reply_to.encode())
    return properties.replaced(**changes) if changes else properties.raw


def expiration_error(expiration: str) -> str | None:
    """RabbitMQ's objection to an expiration property, as it words it; None if it is valid."""
    digits = re.match(r"[+-]?[0-9]+", expiration)
    if digits is None:
        return "no_integer"
    if digits.end() < len(expiration):
        return f'{{leftover_string,"{expiration[digits.end() :]}"}}'
    if int(expiration) < 0:
        return f"{{value_negative,{int(expiration)}}}"
    return None


def as_0_9_1(properties: bytes, body: bytes) -> tuple[bytes, bytes]:
    """A stored message as a 0-9-1 consumer gets it: an AMQP 1.0 message (its properties are
    AMQP_1_0_PROPERTIES) mapped by RabbitMQ's rules, a 0-9-1 message as it is."""
    if properties != c.AMQP_1_0_PROPERTIES:
        return properties, body
    try:
        return to_0_9_1(parse_message(body))
    except MessageError:
        # it was parsed when it was published: only a defect can bring it here
        log.warning("a stored AMQP 1.0 message does not parse; delivered as an opaque body")
        return EMPTY_PROPERTIES, body


def annotated(properties: bytes, annotations: Annotations | None) -> bytes:
    """The message's properties with the headers the broker adds (RabbitMQ docs: quorum queues,
    "Poison Message Handling"; dead letter exchanges, "Dead-Lettered Effects on Messages").
    Every other property is copied byte for byte."""
    if annotations is None:
        return properties
    try:
        parsed = parse_properties(properties)
    except PropertyError:
        # only a log written before publishes were checked can hold such a list: deliver the
        # annotations without it rather than nothing
        log.warning("a stored message's properties do not parse; delivered without them")
        parsed = parse_properties(EMPTY_PROPERTIES)
    headers = dict(parsed.headers or {})
    if annotations.delivery_count:
        headers["x-delivery-count"] = annotations.delivery_count
    if annotations.deaths:
        headers["x-death"] = [_death_table(death) for death in annotations.deaths]
    headers.update(first_and_last_deaths(annotations))
    changes: dict[str, bytes | None] = {"headers": encode_headers(headers)}
    if annotations.deaths:
        changes["expiration"] = None  # removed on dead-lettering, kept as original-expiration
    return parsed.replaced(**changes)


def first_and_last_deaths(annotations: Annotations) -> dict[str, str]:
    """x-first-death-* and x-last-death-*: 0-9-1 headers, and AMQP 1.0 annotations alike."""
    found = {}
    for which, death in (("first", annotations.first_death), ("last", annotations.last_death)):
        if death is not None:
            found[f"x-{which}-death-queue"] = death.queue
            found[f"x-{which}-death-reason"] = death.reason
            found[f"x-{which}-death-exchange"] = death.exchange
    return found


def _death_table(death: Death) -> dict[str, object]:
    table: dict[str, object] = {
        "count": death.count,
        "reason": death.reason,
        "queue": death.queue,
        "time": datetime.datetime.fromtimestamp(death.time_ms // 1000, datetime.UTC),
        "exchange": death.exchange,
        "routing-keys": list(death.routing_keys),
    }
    if death.original_expiration is not None:
        table["original-expiration"] = death.original_expiration
    return table
