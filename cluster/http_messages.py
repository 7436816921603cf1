"""Messages through the management API: RabbitMQ's `POST /api/exchanges/V/E/publish` and
`POST /api/queues/V/Q/get` bodies, to and from the broker's commands and replies.

Properties travel as RabbitMQ's JSON names them (`content_type`, `delivery_mode`, `headers`, …);
payloads as text when they are UTF-8 (`payload_encoding` "string") and base64 otherwise.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import time
import typing

from pamqp import commands

from warrenmq.amqp.codec import encode_properties
from warrenmq.amqp.properties import NAMES, parse_properties
from warrenmq.cluster.plain import plain_table, plain_value
from warrenmq.cluster.rewriting import annotated, as_0_9_1, expiration_error
from warrenmq.replication import commands as broker
from warrenmq.replication.replies import GetOk

__all__ = ["ACK_MODES", "message_json", "publish_command"]

Json = typing.Any

# ackmode of a get: (the message stays unacked until settled, and then it is requeued)
ACK_MODES = {
    "ack_requeue_false": (False, False),
    "ack_requeue_true": (True, True),
    "reject_requeue_true": (True, True),
    "reject_requeue_false": (True, False),
}


def publish_command(
    channel: broker.ChannelRef, vhost: str, exchange: str, body: dict[str, Json]
) -> broker.Publish:
    """Raises ValueError (a 400) for a payload or properties RabbitMQ would not take."""
    encoding = body.get("payload_encoding", "string")
    payload = str(body.get("payload", ""))
    if encoding == "base64":
        try:
            content = base64.b64decode(payload, validate=True)
        except binascii.Error as error:
            raise ValueError(f"payload is not base64: {error}") from error
    elif encoding == "string":
        content = payload.encode()
    else:
        raise ValueError(f"unknown payload_encoding {encoding!r}")
    given = dict(body.get("properties") or {})
    unknown = set(given) - set(NAMES)
    if unknown:
        raise ValueError(f"unknown properties: {', '.join(sorted(unknown))}")
    if isinstance(given.get("timestamp"), int):
        given["timestamp"] = datetime.datetime.fromtimestamp(given["timestamp"], datetime.UTC)
    for name in ("delivery_mode", "priority"):
        if name in given:
            given[name] = int(given[name])
    expiration = given.get("expiration")
    if expiration is not None:
        given["expiration"] = expiration = str(expiration)
        objection = expiration_error(expiration)
        if objection is not None:
            raise ValueError(f"invalid expiration '{expiration}': {objection}")
    try:
        properties = commands.Basic.Properties(**given)
    except (TypeError, ValueError) as error:
        raise ValueError(f"invalid properties: {error}") from error
    return broker.Publish(
        channel=channel,
        vhost=vhost,
        exchange=exchange,
        routing_key=str(body.get("routing_key", "")),
        headers=plain_table(properties.headers) if properties.headers else None,
        properties=encode_properties(properties),
        body=content,
        now_ms=int(time.time() * 1000),
        expiration=expiration,
        priority=properties.priority or 0,
    )


def message_json(reply: GetOk, encoding: str, truncate: int | None) -> dict[str, Json]:
    properties, body = as_0_9_1(reply.properties, reply.body.read())
    present = parse_properties(annotated(properties, reply.annotations)).values()
    shown = {name: plain_value(present[name]) for name in NAMES if name in present}
    content = body if truncate is None else body[:truncate]
    try:
        payload, payload_encoding = (
            (content.decode(), "string") if encoding == "auto" else (None, "base64")
        )
    except UnicodeDecodeError:
        payload, payload_encoding = None, "base64"
    return {
        "payload_bytes": len(body),
        "redelivered": reply.redelivered,
        "exchange": reply.exchange,
        "routing_key": reply.routing_key,
        "message_count": reply.message_count,
        "properties": shown,
        "payload": payload if payload is not None else base64.b64encode(content).decode(),
        "payload_encoding": payload_encoding,
    }
