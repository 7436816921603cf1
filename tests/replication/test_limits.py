"""What a client can make the broker hold is bounded: each limit, hit (shared/STYLE.md rule 10)."""

from __future__ import annotations

import typing

import pytest

from warrenmq.replication import commands as c
from warrenmq.replication import dead_letter, delivery, publish
from warrenmq.replication import queue as queue_module
from warrenmq.replication.replies import Deliver, Ok, Refused, Routed

from .harness import VHOST, Harness, channel_ref, declare_exchange_command, publish_command

CONSUMER = channel_ref(1, connection=2)
PUBLISHER = channel_ref(1, connection=1)


def bodies(effects: list) -> list[bytes]:
    return [effect.body.read() for effect in effects if isinstance(effect, Deliver)]


# --- delivery credit: what a consumer holds that its node has not written out --------------


def grant(messages: int, size: int = 0, tag: str = "ctag") -> c.GrantCredit:
    return c.GrantCredit(channel=CONSUMER, consumer_tag=tag, messages=messages, bytes=size)


@pytest.mark.parametrize("no_ack", [True, False])
def test_a_consumer_gets_at_most_its_credit_until_its_node_grants_more(
    no_ack: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "DELIVERY_CREDIT_MESSAGES", 2)
    harness = Harness()
    harness.declare_queue(PUBLISHER, "q")
    harness.consume(CONSUMER, "q", "ctag", no_ack=no_ack)
    delivered = [bodies(harness.publish(PUBLISHER, "q", b"m%d" % n).effects) for n in range(4)]
    assert delivered == [[b"m0"], [b"m1"], [], []]
    assert harness.broker.query_queue(VHOST, "q").ready == 2  # they wait in the queue
    assert bodies(harness.apply(grant(1)).effects) == [b"m2"]
    assert bodies(harness.apply(grant(5)).effects) == [b"m3"]  # more than it held: no debt
    assert harness.broker.state.uncredited == {(CONSUMER, "ctag"): [1, 8]}  # 4 × 2 bytes
    assert harness.replayed() == harness.broker.state


def test_credit_counts_bytes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "DELIVERY_CREDIT_BYTES", 10)
    harness = Harness()
    harness.declare_queue(PUBLISHER, "q")
    harness.consume(CONSUMER, "q", "ctag", no_ack=True)
    assert bodies(harness.publish(PUBLISHER, "q", b"x" * 12).effects) == [b"x" * 12]  # one fits
    assert bodies(harness.publish(PUBLISHER, "q", b"y").effects) == []
    assert bodies(harness.apply(grant(1, 12)).effects) == [b"y"]


@pytest.mark.parametrize(
    ("credit_messages", "credit_bytes", "prefetch", "global_", "expected"),
    [
        (2, 1000, 0, False, 2),  # the messages of delivery credit
        (10, 10, 0, False, 3),  # its bytes: the third goes past them
        (10, 1000, 4, False, 4),  # the consumer's prefetch
        (10, 1000, 5, True, 5),  # its channel's
    ],
)
def test_a_waiting_backlog_goes_out_only_as_far_as_the_credit(
    credit_messages: int,
    credit_bytes: int,
    prefetch: int,
    global_: bool,
    expected: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A consumer alone in its queue is handed what its credit allows in one go: each bound
    must stop that run where it would stop one message at a time."""
    monkeypatch.setattr(delivery, "DELIVERY_CREDIT_MESSAGES", credit_messages)
    monkeypatch.setattr(delivery, "DELIVERY_CREDIT_BYTES", credit_bytes)
    harness = Harness()
    harness.declare_queue(PUBLISHER, "q")
    for n in range(8):
        harness.publish(PUBLISHER, "q", b"m%03d" % n)  # 4 bytes each
    harness.apply(c.Qos(channel=CONSUMER, prefetch_count=prefetch, global_=global_))
    delivered = bodies(harness.consume(CONSUMER, "q", "ctag", no_ack=not prefetch).effects)
    assert delivered == [b"m%03d" % n for n in range(expected)]
    assert harness.broker.query_queue(VHOST, "q").ready == 8 - expected
    assert harness.replayed() == harness.broker.state


def test_other_consumers_take_what_one_without_credit_cannot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(delivery, "DELIVERY_CREDIT_MESSAGES", 1)
    harness = Harness()
    harness.declare_queue(PUBLISHER, "q")
    harness.consume(CONSUMER, "q", "slow", no_ack=True)
    harness.consume(channel_ref(1, connection=3), "q", "fast", no_ack=True)
    effects = [e for n in range(4) for e in harness.publish(PUBLISHER, "q", b"%d" % n).effects]
    assert [effect.consumer_tag for effect in effects] == ["slow", "fast"]


def test_a_consumer_that_goes_takes_its_credit_with_it() -> None:
    harness = Harness()
    harness.declare_queue(PUBLISHER, "q")
    harness.consume(CONSUMER, "q", "ctag", no_ack=True)
    harness.publish(PUBLISHER, "q", b"m")
    harness.apply(c.Cancel(channel=CONSUMER, consumer_tag="ctag"))
    assert harness.broker.state.uncredited == {}
    assert harness.apply(grant(1)).reply == Ok()  # a late grant for it changes nothing
    harness.consume(CONSUMER, "q", "ctag", no_ack=True)
    harness.publish(PUBLISHER, "q", b"m")
    harness.apply(c.SessionClosed(node="n1", incarnation=1, connection=2))
    assert harness.broker.state.uncredited == {}


# --- the delayed-message exchange ----------------------------------------------------------


def delayed_exchange(harness: Harness, **arguments: object) -> Refused | Ok:
    command = declare_exchange_command(
        PUBLISHER,
        "later",
        "x-delayed-message",
        arguments={"x-delayed-type": "direct", **arguments},
    )
    return harness.apply(command).reply


def delayed_publish(harness: Harness, body: bytes) -> Routed:
    command = publish_command(PUBLISHER, "q", body, exchange="later", headers={"x-delay": 60_000})
    reply = harness.apply(command).reply
    assert isinstance(reply, Routed)
    return reply


def test_a_delayed_exchange_holds_at_most_its_limit_then_refuses_like_reject_publish() -> None:
    harness = Harness()
    assert delayed_exchange(harness, **{"x-delayed-max-length": 2}) == Ok()
    assert [delayed_publish(harness, b"m").rejected for _ in range(3)] == [False, False, True]


def test_a_delayed_exchange_holds_at_most_its_bytes() -> None:
    harness = Harness()
    delayed_exchange(harness, **{"x-delayed-max-length-bytes": 10})
    assert not delayed_publish(harness, b"x" * 10).rejected
    assert delayed_publish(harness, b"y").rejected
    harness.apply(c.Tick(now_ms=10**12))  # all due: released, room again
    assert not delayed_publish(harness, b"z" * 10).rejected


def test_the_default_delayed_limit_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publish, "DELAYED_MESSAGES_MAX", 1)
    harness = Harness()
    delayed_exchange(harness)
    assert [delayed_publish(harness, b"m").rejected for _ in range(2)] == [False, True]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("10", '"expected integer, got longstr"'),
        (-1, "{value_negative,-1}"),
        (True, '"expected integer, got bool"'),
    ],
)
def test_a_delayed_limit_argument_is_checked(value: object, reason: str) -> None:
    refused = delayed_exchange(Harness(), **{"x-delayed-max-length": value})
    assert refused == Refused(
        406, f"invalid arg 'x-delayed-max-length' for exchange 'later' in vhost '/': {reason}"
    )


# --- at-least-once dead letters waiting for a full target ----------------------------------


def at_least_once_source(harness: Harness, **arguments: object) -> None:
    harness.declare_queue(
        PUBLISHER, "dlq", arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    harness.declare_queue(
        PUBLISHER,
        "src",
        arguments={
            "x-queue-type": "quorum",
            "x-overflow": "reject-publish",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "dlq",
            "x-dead-letter-strategy": "at-least-once",
            **arguments,
        },
    )


def reject_all(harness: Harness, count: int) -> None:
    harness.consume(CONSUMER, "src", "ctag")
    for tag in range(1, count + 1):
        harness.apply(c.Reject(channel=CONSUMER, delivery_tag=tag, multiple=False, requeue=False))
    harness.apply(c.Cancel(channel=CONSUMER, consumer_tag="ctag"))


def test_waiting_dead_letters_count_toward_the_source_queues_length() -> None:
    """RabbitMQ's rabbit_fifo:is_over_limit adds the dead letters it holds to the ready ones."""
    harness = Harness()
    at_least_once_source(harness, **{"x-max-length": 3})
    for number in range(3):
        assert harness.publish(PUBLISHER, "src", b"%d" % number).reply == Routed(1)
    reject_all(harness, 3)  # dlq takes one, two wait
    source = harness.broker.state.vhosts[VHOST].queues[
        "src"
    ]  # its dead letters are not read models
    assert (source.ready_count, len(source.dead_letters)) == (0, 2)
    assert harness.publish(PUBLISHER, "src", b"fits").reply == Routed(1)
    assert harness.publish(PUBLISHER, "src", b"over").reply == Routed(1, rejected=True)


def test_a_source_queue_without_length_limits_holds_a_bounded_number_of_dead_letters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queue_module, "DEAD_LETTERS_WAITING_MAX", 2)
    harness = Harness()
    at_least_once_source(harness)
    for number in range(4):
        harness.publish(PUBLISHER, "src", b"%d" % number)
    reject_all(harness, 4)  # dlq takes one, three wait: past the bound
    assert harness.publish(PUBLISHER, "src", b"refused").reply == Routed(1, rejected=True)


def test_a_tick_retries_a_bounded_number_of_dead_letters_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dead_letter, "DEAD_LETTER_RETRIES_PER_TICK", 2)
    harness = Harness()
    at_least_once_source(harness)
    for number in range(5):
        harness.publish(PUBLISHER, "src", b"%d" % number)
    reject_all(harness, 5)
    source = harness.broker.state.vhosts[VHOST].queues[
        "src"
    ]  # its dead letters are not read models
    assert [p.message.body.read() for p in source.dead_letters] == [b"1", b"2", b"3", b"4"]
    harness.apply(c.Get(channel=PUBLISHER, vhost=VHOST, queue="dlq", no_ack=True))  # room: 1
    calls = []
    forward = dead_letter._forward

    def counted(*arguments: typing.Any) -> bool:
        calls.append(1)
        return forward(*arguments)

    monkeypatch.setattr(dead_letter, "_forward", counted)
    harness.apply(c.Tick(now_ms=1))
    assert len(calls) == 2  # the bound, though four wait
    assert [p.message.body.read() for p in source.dead_letters] == [b"2", b"3", b"4"]
    assert source.dead_letter_bytes == 3
