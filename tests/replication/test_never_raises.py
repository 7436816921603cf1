"""`apply` never raises: client input is checked before it can hurt, and a bug costs one command.

Regression tests for the outage of issue 12 (one crafted direct reply-to publish stopped the log
on all three nodes), and the rules that keep any later bug from doing the same.
"""

from __future__ import annotations

import base64
import typing

import orjson
import pytest

from warrenmq.replication import commands as c
from warrenmq.replication import machine
from warrenmq.replication.replies import GetOk, Ignored, Refused, Routed

from .harness import Harness, channel_ref, publish_command


def reply_to_key(token: bytes) -> str:
    return f"{c.REPLY_TO}.{base64.urlsafe_b64encode(token).decode()}"


NOT_OURS = {
    "a list where the node goes": reply_to_key(orjson.dumps([[1], 1, 1, 1])),
    "a dict where the node goes": reply_to_key(orjson.dumps([{"n": 1}, 1, 1, 1])),
    "a list where a number goes": reply_to_key(orjson.dumps(["n1", 1, [1], 1])),
    "a bool where a number goes": reply_to_key(orjson.dumps(["n1", True, 1, 1])),
    "a float where a number goes": reply_to_key(orjson.dumps(["n1", 1.0, 1, 1])),
    "three fields": reply_to_key(orjson.dumps(["n1", 1, 1])),
    "five fields": reply_to_key(orjson.dumps(["n1", 1, 1, 1, 1])),
    "an object": reply_to_key(orjson.dumps({"node": "n1"})),
    "a string": reply_to_key(orjson.dumps("n1")),
    "not JSON": reply_to_key(b"\xff\xfe"),
    "not base64": f"{c.REPLY_TO}.@@@",
    "not ASCII": f"{c.REPLY_TO}.ñ",
    "nothing after the prefix": f"{c.REPLY_TO}.",
}


@pytest.mark.parametrize("routing_key", NOT_OURS.values(), ids=NOT_OURS.keys())
def test_a_reply_to_address_that_is_not_ours_names_no_channel(routing_key: str) -> None:
    assert c.ChannelRef.from_reply_to(routing_key) is None


def test_our_own_reply_to_address_names_its_channel() -> None:
    ref = channel_ref(7, connection=3)
    assert c.ChannelRef.from_reply_to(ref.reply_to) == ref


@pytest.mark.parametrize("routing_key", NOT_OURS.values(), ids=NOT_OURS.keys())
def test_a_crafted_reply_to_publish_is_unroutable_and_the_broker_goes_on(routing_key: str) -> None:
    """RabbitMQ 3.10.8 returns such a mandatory publish with 312 NO_ROUTE (checked by hand)."""
    harness = Harness()
    publisher = channel_ref(1)
    assert harness.publish(publisher, routing_key, b"attack").reply == Routed(0)
    harness.declare_queue(publisher, "q")
    assert harness.publish(publisher, "q", b"after").reply == Routed(1)
    get = harness.apply(c.Get(channel=publisher, vhost="/", queue="q", no_ack=True)).reply
    assert isinstance(get, GetOk) and get.body == b"after"
    assert harness.replayed() == harness.broker.state


def test_every_command_type_has_a_handler() -> None:
    handled = set(machine.Broker()._handlers)
    assert handled == set(typing.get_args(c.Command))


def test_a_command_without_a_handler_fails_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    class Unhandled:
        pass

    monkeypatch.setattr(c, "Command", c.Command | Unhandled)
    with pytest.raises(ImportError, match="Unhandled"):
        machine._check_handler_table()


def test_a_bug_in_a_handler_refuses_that_command_and_the_log_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A planted bug: queue.purge raises. Its command is refused with 541, its connection
    fails (what it sent after is ignored until it closes), everyone else carries on."""
    harness = Harness()
    victim, bystander = channel_ref(1, connection=1), channel_ref(1, connection=2)
    harness.declare_queue(bystander, "q")

    def broken(self: machine.Broker, command: c.PurgeQueue) -> None:
        raise KeyError("planted")

    monkeypatch.setitem(
        harness.broker._handlers, c.PurgeQueue, broken.__get__(harness.broker, machine.Broker)
    )
    refused = harness.apply(c.PurgeQueue(channel=victim, vhost="/", queue="q")).reply
    assert refused == Refused(541, "")
    assert isinstance(harness.publish(victim, "q", b"ignored").reply, Ignored)
    assert harness.publish(bystander, "q", b"served").reply == Routed(1)
    harness.apply(c.SessionClosed(node="n1", incarnation=1, connection=1))
    assert harness.publish(channel_ref(1, connection=1), "q", b"again").reply == Routed(1)


def test_a_bug_keeps_the_effects_it_emitted(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a handler changed before it failed stays changed on every node, so the deliveries
    it emitted go out too: otherwise the state would record them as unacked, never sent."""
    harness = Harness()
    consumer = channel_ref(1, connection=2)
    harness.declare_queue(consumer, "q")
    harness.consume(consumer, "q", "ctag")
    original = machine.Broker._enqueue

    def enqueue_then_fail(self: machine.Broker, *arguments: typing.Any) -> bool:
        original(self, *arguments)
        raise RuntimeError("planted after the enqueue")

    monkeypatch.setattr(machine.Broker, "_enqueue", enqueue_then_fail)
    applied = harness.apply(publish_command(channel_ref(1), "q", b"m"))
    assert applied.reply == Refused(541, "")
    assert [effect.body for effect in applied.effects] == [b"m"]
