"""What the broker does for AMQP 1.0 links: consumers on link credit (granted, drained),
requeues that do not count a delivery, and refusals that leave the link working."""

from __future__ import annotations

from warrenmq.replication import commands as c
from warrenmq.replication.replies import Deliver, Refused, Routed

from .harness import VHOST, Harness, channel_ref, consume_command

LINK = channel_ref(c.LINK_CHANNEL_BASE + 1)
QUORUM = {"x-queue-type": "quorum"}


def deliveries(applied: object) -> list[Deliver]:
    return [effect for effect in applied.effects if isinstance(effect, Deliver)]  # type: ignore[attr-defined]


def consume_on_credit(harness: Harness, credit: int) -> list[Deliver]:
    return deliveries(harness.apply(consume_command(LINK, "q", "link", credit=credit)))


def filled(messages: int) -> Harness:
    harness = Harness()
    harness.declare_queue(LINK, "q", arguments=QUORUM)
    for number in range(messages):
        harness.publish(LINK, "q", str(number).encode())
    return harness


def grant(harness: Harness, messages: int) -> list[Deliver]:
    command = c.GrantCredit(channel=LINK, consumer_tag="link", messages=messages, bytes=0)
    return deliveries(harness.apply(command))


def test_a_link_gets_what_its_credit_allows_and_no_more() -> None:
    harness = filled(5)
    assert consume_on_credit(harness, 0) == []
    assert [d.body.read() for d in grant(harness, 2)] == [b"0", b"1"]
    assert grant(harness, 0) == []
    assert [d.body.read() for d in grant(harness, 10)] == [b"2", b"3", b"4"]


def test_drain_uses_up_the_credit_left() -> None:
    harness = filled(1)
    assert len(consume_on_credit(harness, 5)) == 1  # 4 credits left over
    harness.apply(c.DrainCredit(channel=LINK, consumer_tag="link"))
    harness.publish(LINK, "q", b"after the drain")
    assert harness.broker.query_queue(VHOST, "q").ready == 1  # type: ignore[union-attr]
    assert [d.body.read() for d in grant(harness, 1)] == [b"after the drain"]


def test_a_requeue_that_does_not_count_leaves_the_delivery_count() -> None:
    harness = filled(1)
    (first,) = consume_on_credit(harness, 1)
    released = c.Reject(
        channel=LINK,
        delivery_tag=first.delivery_tag,
        multiple=False,
        requeue=True,
        count_delivery=False,
    )
    harness.apply(released)
    (again,) = grant(harness, 1)
    assert again.redelivered and (again.annotations is None or not again.annotations.delivery_count)
    harness.apply(
        c.Reject(channel=LINK, delivery_tag=again.delivery_tag, multiple=False, requeue=True)
    )
    (third,) = grant(harness, 1)
    assert third.annotations is not None and third.annotations.delivery_count == 1


def test_a_refusal_does_not_stop_a_links_next_commands() -> None:
    harness = filled(0)
    missing = c.Publish(
        channel=LINK,
        vhost=VHOST,
        exchange="nope",
        routing_key="",
        headers=None,
        properties=c.AMQP_1_0_PROPERTIES,
        body=b"",
    )
    assert isinstance(harness.apply(missing).reply, Refused)
    again = c.Publish(
        channel=LINK,
        vhost=VHOST,
        exchange="",
        routing_key="q",
        headers=None,
        properties=c.AMQP_1_0_PROPERTIES,
        body=b"1.0",
    )
    assert harness.apply(again).reply == Routed(1)
    assert harness.replayed().vhosts[VHOST].queues["q"].ready_count == 1
