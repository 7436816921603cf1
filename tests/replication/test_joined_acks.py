"""A Settle that carries more tags (the single acks a session joined from one read) does what
those acks would do one Settle each, in order: the same messages settled, the same refusal
at the first unknown tag, the same deliveries after.

One difference, for a client that guesses: a tag delivered only because an ack before it in
the same Settle freed the credit is unknown when it is read (the deliveries come after the
whole Settle). No client can have received it yet. (RabbitMQ's channel learns of a
delivery once its queue has sent it, after the ack that freed the credit: an ack read in
the meantime is refused there too, unless the delivery wins the race.)"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from warrenmq.replication import commands as c
from warrenmq.replication.replies import Deliver, Ignored, MessageCount, Refused

from .harness import Harness, channel_ref

CONSUMER = channel_ref(1, connection=2)
PUBLISHER = channel_ref(1, connection=1)


def consuming(prefetch: int, published: int) -> tuple[Harness, list[tuple[int, bytes]]]:
    """A quorum queue with one consumer of this prefetch, `published` messages in; the
    deliveries as (tag, body)."""
    harness = Harness()
    harness.declare_queue(PUBLISHER, "q", arguments={"x-queue-type": "quorum"})
    harness.apply(c.Qos(channel=CONSUMER, prefetch_count=prefetch, global_=False))
    delivered = deliveries(harness.consume(CONSUMER, "q", "ctag"))
    for number in range(published):
        delivered += deliveries(harness.publish(PUBLISHER, "q", b"%d" % number))
    return harness, delivered


def deliveries(applied) -> list[tuple[int, bytes]]:
    return [
        (effect.delivery_tag, effect.body.read())
        for effect in applied.effects
        if isinstance(effect, Deliver)
    ]


def outcome(harness: Harness) -> tuple:
    state = harness.broker.state
    channel = state.channels[CONSUMER]
    queue = state.vhosts["/"].queues["q"]
    return sorted(channel.unacked), queue.ready_count, queue.unacked_count


acks = st.tuples(
    st.integers(0, 12),  # the first tag
    st.booleans(),  # ... acked with multiple
    st.lists(st.integers(1, 14), max_size=10),  # the single acks after it, some unknown
)


@settings(max_examples=300, deadline=None)
@given(prefetch=st.integers(0, 6), published=st.integers(0, 12), acked=acks)
def test_a_settle_with_more_tags_is_the_acks_one_by_one(
    prefetch: int, published: int, acked: tuple[int, bool, list[int]]
) -> None:
    first, multiple, more = acked
    alone, delivered_before = consuming(prefetch, published)
    joined, _ = consuming(prefetch, published)
    # a client acks what it has received; a tag it has not is unknown to both (one it could
    # only guess, delivered once an ack before it in the same read is applied, is refused)
    received = {tag for tag, _ in delivered_before}
    more = [tag if tag in received else 100 + tag for tag in more]
    replies, delivered_alone = [], list(delivered_before)
    for tag, many in [(first, multiple), *((tag, False) for tag in more)]:
        applied = alone.apply(c.Settle(channel=CONSUMER, delivery_tag=tag, multiple=many))
        replies.append(applied.reply)
        delivered_alone += deliveries(applied)
    applied = joined.apply(
        c.Settle(channel=CONSUMER, delivery_tag=first, multiple=multiple, more=tuple(more))
    )
    refusals = [reply for reply in replies if isinstance(reply, Refused)]
    if refusals:
        assert applied.reply == refusals[0]
        assert all(reply == Ignored() for reply in replies[replies.index(refusals[0]) + 1 :])
    else:
        assert applied.reply == MessageCount(sum(reply.message_count for reply in replies))
    assert delivered_before + deliveries(applied) == delivered_alone
    assert outcome(joined) == outcome(alone)


def test_the_tags_after_an_unknown_one_stay_unacknowledged() -> None:
    harness, delivered = consuming(prefetch=0, published=4)
    assert [tag for tag, _ in delivered] == [1, 2, 3, 4]
    applied = harness.apply(
        c.Settle(channel=CONSUMER, delivery_tag=1, multiple=False, more=(3, 9, 2))
    )
    assert applied.reply == Refused(406, "unknown delivery tag 9")
    assert outcome(harness) == ([2, 4], 0, 2)
