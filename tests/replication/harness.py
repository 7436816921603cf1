"""Drive a Broker with commands, numbering log entries, and keep the log for replays."""

from __future__ import annotations

import pickle
import typing

from warrenmq.replication import commands as c
from warrenmq.replication.machine import Broker, BrokerState, Meta
from warrenmq.replication.replies import Applied

VHOST = "/"


def channel_ref(
    channel: int, connection: int = 1, node: str = "n1", incarnation: int = 1
) -> c.ChannelRef:
    return c.ChannelRef(node, incarnation, connection, channel)


def declare_queue_command(channel: c.ChannelRef, queue: str, **flags: typing.Any) -> c.DeclareQueue:
    options = {
        "server_named": False,
        "passive": False,
        "durable": True,
        "exclusive": False,
        "auto_delete": False,
        "arguments": {},
        **flags,
    }
    return c.DeclareQueue(channel=channel, vhost=VHOST, queue=queue, **options)


def declare_exchange_command(
    channel: c.ChannelRef, exchange: str, type: str, **fields: typing.Any
) -> c.DeclareExchange:
    options = {
        "passive": False,
        "durable": True,
        "auto_delete": False,
        "internal": False,
        "arguments": {},
        **fields,
    }
    return c.DeclareExchange(channel=channel, vhost=VHOST, exchange=exchange, type=type, **options)


def publish_command(
    channel: c.ChannelRef,
    routing_key: str,
    body: bytes,
    exchange: str = "",
    headers: dict | None = None,
) -> c.Publish:
    return c.Publish(
        channel=channel,
        vhost=VHOST,
        exchange=exchange,
        routing_key=routing_key,
        headers=headers,
        properties=b"\x00\x00",
        body=body,
    )


def consume_command(
    channel: c.ChannelRef, queue: str, consumer_tag: str, **fields: typing.Any
) -> c.Consume:
    options = {"no_ack": False, "exclusive": False, "arguments": {}, **fields}
    return c.Consume(
        channel=channel, vhost=VHOST, queue=queue, consumer_tag=consumer_tag, **options
    )


class Harness:
    def __init__(self) -> None:
        self.broker = Broker()
        self.log: list[c.Command] = []
        self.apply(c.AddVhost(vhost=VHOST))
        for node in ("n1", "n2"):
            self.apply(c.NodeUp(node=node, incarnation=1, pid=100))

    def apply(self, command: c.Command) -> Applied:
        self.log.append(command)
        return self.broker.apply(Meta(len(self.log)), command)

    def replayed(self) -> BrokerState:
        """The state a fresh broker reaches from the encoded log."""
        fresh = Broker()
        commands = c.decode_entry(c.encode_entry(self.log))
        for index, command in enumerate(commands, start=1):
            fresh.apply(Meta(index), command)
        return fresh.state

    def snapshot_restored(self) -> BrokerState:
        return pickle.loads(pickle.dumps(self.broker.state, protocol=5))

    # --- shorthands -------------------------------------------------------------------

    def declare_queue(self, channel: c.ChannelRef, queue: str, **flags: typing.Any) -> Applied:
        return self.apply(declare_queue_command(channel, queue, **flags))

    def publish(
        self,
        channel: c.ChannelRef,
        routing_key: str,
        body: bytes,
        exchange: str = "",
        headers: dict | None = None,
    ) -> Applied:
        return self.apply(publish_command(channel, routing_key, body, exchange, headers))

    def consume(
        self,
        channel: c.ChannelRef,
        queue: str,
        consumer_tag: str,
        no_ack: bool = False,
        exclusive: bool = False,
    ) -> Applied:
        return self.apply(
            consume_command(channel, queue, consumer_tag, no_ack=no_ack, exclusive=exclusive)
        )
