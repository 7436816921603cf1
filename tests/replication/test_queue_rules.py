"""Queue rules as apply calls: delivery limits, dead-lettering's x-death, length limits, TTL at
the head, message and consumer priorities, live prefetch changes. Each was an e2e test over
three nodes; the rule is the state machine's, so it is checked here, command by command, and
e2e keeps one test per feature (tests/e2e/test_quorum_semantics.py)."""

from __future__ import annotations

import dataclasses
import typing

from warrenmq.replication import commands as c
from warrenmq.replication.replies import Deliver, GetEmpty, GetOk, Refused, Routed

from .harness import VHOST, Harness, channel_ref, publish_command

REF = channel_ref(1)
QUORUM = {"x-queue-type": "quorum"}


def get(harness: Harness, queue: str, no_ack: bool = False) -> GetOk | GetEmpty:
    reply = harness.apply(c.Get(channel=REF, vhost=VHOST, queue=queue, no_ack=no_ack)).reply
    assert isinstance(reply, (GetOk, GetEmpty)), reply
    return reply


def reject(harness: Harness, delivery_tag: int, requeue: bool) -> None:
    harness.apply(c.Reject(channel=REF, delivery_tag=delivery_tag, multiple=False, requeue=requeue))


def publish(harness: Harness, queue: str, body: bytes, **fields: typing.Any) -> Routed:
    reply = harness.apply(dataclasses.replace(publish_command(REF, queue, body), **fields)).reply
    assert isinstance(reply, Routed)
    return reply


def ready(harness: Harness, queue: str) -> int:
    view = harness.broker.query_queue(VHOST, queue)
    assert view is not None
    return view.ready


def bodies_got(harness: Harness, queue: str, count: int) -> list[bytes]:
    got = [get(harness, queue, no_ack=True) for _ in range(count)]
    return [reply.body.read() for reply in got if isinstance(reply, GetOk)]


def returned_until_gone(harness: Harness, queue: str, rounds_max: int) -> list[GetOk]:
    """Get the one message and nack it back until the queue lets it go."""
    seen = []
    for _ in range(rounds_max):
        reply = get(harness, queue)
        if isinstance(reply, GetEmpty):
            return seen
        seen.append(reply)
        reject(harness, reply.delivery_tag, requeue=True)
    raise AssertionError(f"still there after {rounds_max} deliveries")


# --- delivery limits ----------------------------------------------------------------------


def test_a_quorum_queue_drops_a_message_after_20_returns_by_default() -> None:
    harness = Harness()
    harness.declare_queue(REF, "q", arguments=QUORUM)
    publish(harness, "q", b"m")
    seen = returned_until_gone(harness, "q", 30)
    assert len(seen) == 21  # the first delivery and 20 redeliveries
    assert [reply.redelivered for reply in seen[:2]] == [False, True]
    assert [reply.annotations and reply.annotations.delivery_count for reply in seen[:2]] == [
        None,
        1,
    ]
    last = seen[-1].annotations
    assert last is not None and last.delivery_count == 20
    assert ready(harness, "q") == 0


def test_a_classic_queue_refuses_the_delivery_limit() -> None:
    """RabbitMQ 4.x: x-delivery-limit is not among a classic queue's arguments."""
    harness = Harness()
    reply = harness.declare_queue(REF, "q", arguments={"x-delivery-limit": 1}).reply
    assert isinstance(reply, Refused) and reply.reply_code == 406
    assert reply.reply_text == (
        "invalid arg 'x-delivery-limit' for queue 'q' in vhost '/' of queue type "
        "rabbit_classic_queue"
    )


# --- dead-lettering ---------------------------------------------------------------------------


def test_x_death_counts_per_queue_and_reason_most_recent_first() -> None:
    """work -> (rejected) -> retry -> (rejected) -> work -> (rejected) -> retry."""
    harness = Harness()
    for queue, other in (("work", "retry"), ("retry", "work")):
        arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": other}
        harness.declare_queue(REF, queue, arguments={**QUORUM, **arguments})
    publish(harness, "work", b"loop")
    for queue in ("work", "retry", "work"):
        reply = get(harness, queue)
        assert isinstance(reply, GetOk)
        reject(harness, reply.delivery_tag, requeue=False)
    reply = get(harness, "retry", no_ack=True)
    assert isinstance(reply, GetOk) and reply.annotations is not None
    annotations = reply.annotations
    deaths = [(death.queue, death.reason, death.count) for death in annotations.deaths]
    assert deaths == [("work", "rejected", 2), ("retry", "rejected", 1)]
    assert annotations.first_death is not None and annotations.last_death is not None
    assert (annotations.first_death.queue, annotations.last_death.queue) == ("work", "work")
    assert annotations.first_death.exchange == annotations.last_death.exchange == ""


def test_a_missing_dead_letter_exchange_drops_the_message() -> None:
    harness = Harness()
    harness.declare_queue(REF, "q", arguments={**QUORUM, "x-dead-letter-exchange": "missing"})
    publish(harness, "q", b"m")
    reply = get(harness, "q")
    assert isinstance(reply, GetOk)
    reject(harness, reply.delivery_tag, requeue=False)
    assert ready(harness, "q") == 0
    assert harness.broker.query_queue(VHOST, "q").unacked == 0


# --- length limits --------------------------------------------------------------------------


def test_max_length_bytes_counts_the_body_bytes_of_ready_messages_only() -> None:
    harness = Harness()
    harness.declare_queue(REF, "q", arguments={**QUORUM, "x-max-length-bytes": 10})
    for body in (b"aaaa", b"bbbb", b"cccc"):  # 12 bytes: the oldest goes
        publish(harness, "q", body)
    assert ready(harness, "q") == 2
    reply = get(harness, "q")  # unacked now: it no longer counts towards the limit
    assert isinstance(reply, GetOk) and reply.body.read() == b"bbbb"
    publish(harness, "q", b"dddddd")  # ready: cccc + dddddd = 10 bytes
    assert ready(harness, "q") == 2


# --- time to live -----------------------------------------------------------------------------


def test_a_message_expires_only_when_it_reaches_the_head() -> None:
    harness = Harness()
    harness.declare_queue(REF, "q", arguments=QUORUM)
    publish(harness, "q", b"long", expiration="60000", now_ms=1_000)
    publish(harness, "q", b"short", expiration="100", now_ms=1_000)
    harness.apply(c.Tick(now_ms=2_500))  # "short" is overdue, but "long" stands before it
    assert ready(harness, "q") == 2
    assert bodies_got(harness, "q", 2) == [b"long"]  # then "short", at the head, is gone
    assert ready(harness, "q") == 0


# --- priorities -------------------------------------------------------------------------------


def test_a_classic_priority_queue_hands_out_higher_priorities_first() -> None:
    harness = Harness()
    harness.declare_queue(REF, "q", arguments={"x-max-priority": 5})
    for body, priority in ((b"low", 1), (b"none", 0), (b"capped", 9), (b"mid", 3)):
        publish(harness, "q", body, priority=priority)
    # 9 counts as the maximum, 5; equal priorities keep their order
    assert bodies_got(harness, "q", 4) == [b"capped", b"mid", b"low", b"none"]


def test_a_quorum_queue_has_a_normal_and_a_high_priority() -> None:
    harness = Harness()
    harness.declare_queue(REF, "q", arguments=QUORUM)
    for body, priority in ((b"n1", 0), (b"n2", 4), (b"h1", 5), (b"h2", 9)):
        publish(harness, "q", body, priority=priority)
    assert bodies_got(harness, "q", 4) == [b"h1", b"h2", b"n1", b"n2"]


def consume(harness: Harness, ref: c.ChannelRef, tag: str, **arguments: typing.Any) -> None:
    command = c.Consume(
        channel=ref,
        vhost=VHOST,
        queue="q",
        consumer_tag=tag,
        no_ack=False,
        exclusive=False,
        arguments=arguments,
    )
    harness.apply(command)


def delivered(harness: Harness, *bodies: bytes) -> list[tuple[str, bytes]]:
    """(consumer tag, body) of what publishing `bodies` delivers."""
    effects = [effect for body in bodies for effect in harness.publish(REF, "q", body).effects]
    return [(e.consumer_tag, e.body.read()) for e in effects if isinstance(e, Deliver)]


def test_a_higher_priority_consumer_is_served_first_while_it_has_credit() -> None:
    harness = Harness()
    harness.declare_queue(REF, "q", arguments=QUORUM)
    low, high = channel_ref(2), channel_ref(3)
    for ref, prefetch in ((low, 10), (high, 2)):
        harness.apply(c.Qos(channel=ref, prefetch_count=prefetch, global_=False))
    consume(harness, low, "low")
    consume(harness, high, "high", **{"x-priority": 10})
    assert delivered(harness, *(b"m%d" % n for n in range(5))) == [
        ("high", b"m0"),
        ("high", b"m1"),  # its prefetch; then it is blocked
        ("low", b"m2"),
        ("low", b"m3"),
        ("low", b"m4"),
    ]


def test_basic_qos_changes_the_prefetch_of_live_consumers() -> None:
    harness = Harness()
    harness.declare_queue(REF, "q", arguments=QUORUM)
    consumer = channel_ref(2)
    harness.apply(c.Qos(channel=consumer, prefetch_count=1, global_=False))
    consume(harness, consumer, "ctag")
    assert delivered(harness, *(b"m%d" % n for n in range(5))) == [("ctag", b"m0")]
    applied = harness.apply(c.Qos(channel=consumer, prefetch_count=3, global_=False))
    assert [e.body.read() for e in applied.effects if isinstance(e, Deliver)] == [b"m1", b"m2"]


def test_a_denied_transient_queue_is_refused_but_an_existing_one_is_not() -> None:
    """deprecated_features.permit.transient_nonexcl_queues = false: RabbitMQ refuses a new
    queue that is neither durable nor exclusive with 541 and its deprecation text."""
    harness = Harness()
    denied = {"durable": False, "permit_transient": False}
    reply = harness.declare_queue(REF, "q", **denied).reply
    assert isinstance(reply, Refused) and reply.reply_code == 541
    assert reply.reply_text.startswith("Feature `transient_nonexcl_queues` is deprecated.")
    for name, flags in (("durable", {"durable": True}), ("exclusive", {"exclusive": True})):
        allowed = harness.declare_queue(REF, name, **{**denied, **flags}).reply
        assert not isinstance(allowed, Refused)
    harness.declare_queue(REF, "old", durable=False)  # declared while permitted
    assert not isinstance(harness.declare_queue(REF, "old", **denied).reply, Refused)
