"""A message's way through a queue: in (`enqueue`, within the queue's length limits) and out
(`dispatch` to consumers with credit, or `hand_out` to basic.get), with expiry at the head.

Messages that leave sideways go through dead_letter.py, which enqueues them elsewhere: the two
modules call each other, by module name, as a message can go round between queues.
"""

from __future__ import annotations

from warrenmq.replication import dead_letter
from warrenmq.replication.queue import Entry, Queue, QueueRef
from warrenmq.replication.replies import Annotations, Deliver
from warrenmq.replication.state import Channel, Consumer, Message, Unacked, find_consumer
from warrenmq.replication.step import Step

# Delivery credit (RabbitMQ's credit flow between queue and channel, in the log): a consumer
# holds at most this many deliveries, or bytes of them, that its node has not yet written out
# to the client and credited back with GrantCredit. Acknowledged or not, so a consumer whose
# socket is backed up leaves its messages in the queue, not in its node's write buffer. A
# consumer's node grants credit back in quarters of these, so a grant has three quarters of
# the credit's worth of deliveries to travel the log before the consumer waits on it (with
# halves of 8 MiB, 64 KiB messages ran 15-20 % slower: measured).
DELIVERY_CREDIT_MESSAGES = 4_000
DELIVERY_CREDIT_BYTES = 16 * 1024 * 1024


def enqueue(step: Step, queue: Queue, message: Message, now_ms: int) -> bool:
    """Add a message, within the queue's length limits; False if the queue refuses it."""
    overflow = queue.limits.overflow
    if overflow != "drop-head" and queue.over_limit(adding=message):
        if overflow == "reject-publish-dlx":
            dead_letter.dead_letter(step, queue, message, "maxlen")
        return False
    seq = queue.append(message, now_ms)
    trim(step, queue)
    dispatch(step, queue)
    head = queue.head() if not queue.limits.quorum else None
    if head is not None and head.seq == seq and head.expires_at_ms == now_ms:
        # a TTL of 0 in a classic queue: RabbitMQ docs, TTL: such a message expires at once
        # unless a consumer takes it at once (quorum queues expire it by the clock only)
        dead_letter.dead_letter(step, queue, queue.take().message, "expired")
    return True


def trim(step: Step, queue: Queue) -> None:
    """drop-head: dead-letter the oldest ready messages while the queue is over its limits."""
    while queue.limits.overflow == "drop-head" and queue.ready_count and queue.over_limit():
        dead_letter.dead_letter(step, queue, queue.take().message, "maxlen")


def expire(step: Step, queue: Queue) -> bool:
    """Dead-letter the expired messages at the head of the queue (as RabbitMQ does, a message
    expires when it reaches the head); True if any did."""
    expired = False
    while (head := queue.head()) is not None and (
        head.expires_at_ms is not None and head.expires_at_ms < step.state.clock_ms
    ):
        dead_letter.dead_letter(step, queue, queue.take().message, "expired")
        expired = True
    return expired


def dispatch(step: Step, queue: Queue) -> None:
    """Hand the ready messages to the consumers with credit: the highest x-priority first,
    round-robin among equals; with x-single-active-consumer only to the active one."""
    state = step.state
    expire(step, queue)
    seats: dict[int, _Seat] = {}
    # one for every delivery's unacked record, made once a consumer has credit: a publish to
    # a queue whose consumers have none (a backlog) dispatches and hands nothing out
    queue_ref: QueueRef | None = None
    while queue.ready_count:
        consumer = _next_consumer(step, queue, seats)
        if consumer is None:
            return
        if queue_ref is None:
            queue_ref = queue.ref
        seat = seats[consumer.id]
        # a consumer alone in its queue takes what its credit allows in one go, without the
        # round-robin per message; the byte credit is counted per message below
        batch = _credit(step, consumer, seats) if len(queue.consumers) == 1 else 1
        carried_out = step.carries_out(consumer.channel)
        for _ in range(min(batch, queue.ready_count)):
            entry = queue.take()
            delivery_tag = hand_out(
                step, seat.channel, queue, queue_ref, entry, consumer, consumer.no_ack
            )
            message = entry.message
            uncredited = seat.uncredited
            if uncredited is None:
                key = (consumer.channel, consumer.consumer_tag)
                uncredited = seat.uncredited = state.uncredited.setdefault(key, [0, 0])
            uncredited[0] += 1
            uncredited[1] += message.body.size
            if carried_out:
                step.effects.append(
                    Deliver(
                        consumer.channel,
                        consumer.consumer_tag,
                        delivery_tag,
                        entry.redelivered,
                        message.exchange,
                        message.routing_key,
                        message.properties,
                        message.body,
                        annotations_of(queue, entry),
                    )
                )
            if uncredited[1] >= DELIVERY_CREDIT_BYTES:
                break


def hand_out(
    step: Step,
    channel: Channel,
    queue: Queue,
    queue_ref: QueueRef,
    entry: Entry,
    consumer: Consumer | None,
    no_ack: bool,
) -> int:
    """Give `entry` of `queue` (`queue_ref`) a delivery tag on `channel`, held unacknowledged
    unless `no_ack`."""
    delivery_tag = channel.next_delivery_tag
    channel.next_delivery_tag += 1
    if not no_ack:
        consumer_id = consumer.id if consumer is not None else None
        channel.unacked[delivery_tag] = Unacked(queue_ref, entry, consumer_id, step.state.clock_ms)
        queue.unacked_count += 1
        if consumer is not None:
            consumer.unacked_count += 1
    return delivery_tag


def annotations_of(queue: Queue, entry: Entry) -> Annotations | None:
    """The headers the broker adds on delivery, or None when it adds none."""
    delivery_count = entry.delivery_count if queue.queue_type == "quorum" else 0
    message = entry.message
    if not delivery_count and not message.deaths:
        return None
    return Annotations(delivery_count, message.deaths, message.first_death, message.last_death)


class _Seat:
    """A consumer's channel and undelivered credit, looked up once per `dispatch` (hashing
    its ChannelRef twice a message cost more than the rest of the credit check)."""

    __slots__ = ("channel", "uncredited")

    def __init__(self, step: Step, consumer: Consumer) -> None:
        state = step.state
        self.channel = state.channels[consumer.channel]
        self.uncredited = state.uncredited.get((consumer.channel, consumer.consumer_tag))


def _next_consumer(step: Step, queue: Queue, seats: dict[int, _Seat]) -> Consumer | None:
    if queue.limits.single_active_consumer:
        active = active_consumer(queue)
        return active if active is not None and _credit(step, active, seats) > 0 else None
    count = len(queue.consumers)
    level = queue.top_priority
    while True:  # round-robin within a level, from where it stopped; lower levels after
        for offset in range(count):
            position = (queue.next_consumer + offset) % count
            consumer = queue.consumers[position]
            if consumer.priority == level and _credit(step, consumer, seats) > 0:
                queue.next_consumer = (position + 1) % count
                return consumer
        lower = [consumer.priority for consumer in queue.consumers if consumer.priority < level]
        if not lower:
            return None
        level = max(lower)


def active_consumer(queue: Queue) -> Consumer | None:
    """The single active consumer: the first of the highest priority. A consumer of higher
    priority takes over only once the active one has no unacknowledged messages (RabbitMQ
    docs, "Single Active Consumer"); a consumer that goes hands over at once."""
    active = find_consumer(queue, queue.active)  # None if it went: cancelled, its channel
    if active is not None and active.unacked_count:  # closed or its node lost
        return active
    best = max(queue.consumers, key=lambda consumer: consumer.priority, default=None)
    if active is not None and best is not None and active.priority >= best.priority:
        best = active
    queue.active = best.id if best is not None else None
    return best


def _credit(step: Step, consumer: Consumer, seats: dict[int, _Seat]) -> int:
    """How many messages `consumer` may be handed now by their count (its node's delivery
    credit, its prefetch and its channel's); 0 too once its node's byte credit is used up."""
    if (
        consumer.prefetch_count
        and consumer.unacked_count >= consumer.prefetch_count
        and not consumer.no_ack
    ):
        return 0  # the usual answer while a backlog waits, found without a lookup
    seat = seats.get(consumer.id)
    if seat is None:
        seat = seats[consumer.id] = _Seat(step, consumer)
    credit = DELIVERY_CREDIT_MESSAGES
    uncredited = seat.uncredited
    if uncredited is not None:
        if uncredited[1] >= DELIVERY_CREDIT_BYTES:
            return 0  # its node has not written out what it has: the message waits here
        credit -= uncredited[0]
    if consumer.no_ack:
        return credit if credit > 0 else 0
    # no min() or max() here: this runs for every publish to a consumed queue, and they are
    # slow to call (a tenth of this function)
    if consumer.prefetch_count:
        room = consumer.prefetch_count - consumer.unacked_count
        if room < credit:
            credit = room
    channel = seat.channel
    if channel.global_prefetch_count:
        room = channel.global_prefetch_count - len(channel.unacked)
        if room < credit:
            credit = room
    return credit if credit > 0 else 0
