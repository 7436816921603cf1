"""Settling deliveries: basic.ack, basic.nack/reject (requeue or dead-letter), basic.recover,
and giving back what a closing channel held."""

from __future__ import annotations

from collections.abc import Iterable

from warrenmq.replication import commands as c
from warrenmq.replication import dead_letter, delivery
from warrenmq.replication.queue import Entry, Queue, QueueRef
from warrenmq.replication.replies import MessageCount, Ok, Reply
from warrenmq.replication.state import Channel, Unacked, find_consumer, find_queue
from warrenmq.replication.step import Refusal, ReplyCode, Step, refusal


def apply_settle(step: Step, command: c.Settle) -> Reply:
    settled, unknown = _take_unacked(step, command, command.more)
    redispatch(step, [(command.channel, unacked) for unacked in settled])
    if unknown is not None:  # refused as its own Settle would be: the acks before it stand
        raise _unknown_tag(unknown)
    return MessageCount(len(settled))


def apply_reject(step: Step, command: c.Reject) -> Reply:
    settled, _ = _take_unacked(step, command)
    step.state.clock_ms = max(step.state.clock_ms, command.now_ms)
    for unacked in settled:
        queue = find_queue(step.state, unacked.queue)
        if queue is None:
            continue  # deleted meanwhile: settled into nothing
        if command.requeue:
            _return(step, queue, unacked.entry, command.count_delivery)
        else:
            dead_letter.dead_letter(step, queue, unacked.entry.message, "rejected")
    redispatch(step, [(command.channel, unacked) for unacked in settled])
    return Ok()


def apply_recover(step: Step, command: c.Recover) -> Reply:
    channel = step.state.channels.get(command.channel)
    if channel is not None:
        redispatch(step, give_back_unacked(step, channel))
    return Ok()


Settled = list[tuple[c.ChannelRef, Unacked]]  # what was settled, with its channel


def give_back_unacked(step: Step, channel: Channel) -> Settled:
    """Return everything `channel` holds to its queues, as redelivered."""
    settled = [(channel.ref, unacked) for unacked in channel.unacked.values()]
    _settle_counts(step, channel.unacked.values())
    channel.unacked.clear()
    for _, unacked in settled:
        queue = find_queue(step.state, unacked.queue)
        if queue is not None:
            _return(step, queue, unacked.entry)
    return settled


def redispatch(step: Step, settled: Settled) -> None:
    """Settling frees credit: dispatch every queue it may unblock, each once, in order."""
    unblocked: dict[QueueRef, None] = {}
    looked_up: c.ChannelRef | None = None  # a multiple ack settles many of one channel
    for ref, unacked in settled:
        unblocked.setdefault(unacked.queue)
        if unacked.consumer is not None and ref is not looked_up:
            looked_up = ref
            channel = step.state.channels.get(ref)
            for queue_ref in channel.consumers.values() if channel is not None else ():
                unblocked.setdefault(queue_ref)
    for queue_ref in unblocked:
        queue = find_queue(step.state, queue_ref)
        if queue is not None:
            delivery.dispatch(step, queue)


def _take_unacked(
    step: Step, command: c.Settle | c.Reject, more: tuple[int, ...] = ()
) -> tuple[list[Unacked], int | None]:
    """What `command` settles, then the single acks of `more` in order up to the first tag the
    channel does not hold: (taken, that tag or None). An unknown `delivery_tag` refuses."""
    channel = step.state.channels.get(command.channel)
    unacked = channel.unacked if channel is not None else {}
    last = command.delivery_tag
    if command.multiple:
        if last == 0:
            tags = list(unacked)
        else:  # the tags ascend: those up to `last` come first
            tags = []
            for tag in unacked:
                if tag > last:
                    break
                tags.append(tag)
            if not tags:
                raise _unknown_tag(last)
    elif last in unacked:
        tags = [last]
    else:
        raise _unknown_tag(last)
    taken = [unacked.pop(tag) for tag in tags]
    unknown = None
    for tag in more:
        entry = unacked.pop(tag, None)
        if entry is None:
            unknown = tag
            break
        taken.append(entry)
    _settle_counts(step, taken)
    return taken, unknown


def _unknown_tag(delivery_tag: int) -> Refusal:
    return refusal(ReplyCode.PRECONDITION_FAILED, f"unknown delivery tag {delivery_tag}")


def _settle_counts(step: Step, settled: Iterable[Unacked]) -> None:
    """The deliveries no longer count as unacknowledged for their queues and consumers
    (counted first, so a multiple ack looks each queue and consumer up once)."""
    counts: dict[tuple[QueueRef, int | None], int] = {}
    for unacked in settled:
        key = (unacked.queue, unacked.consumer)
        counts[key] = counts.get(key, 0) + 1
    for (ref, consumer_id), count in counts.items():
        queue = find_queue(step.state, ref)
        if queue is not None:
            queue.unacked_count -= count
            consumer = find_consumer(queue, consumer_id)
            if consumer is not None:
                consumer.unacked_count -= count


def _return(step: Step, queue: Queue, entry: Entry, count_delivery: bool = True) -> None:
    """Back to its place in the queue, or dead-lettered once past the delivery limit."""
    entry.redelivered = True
    entry.delivery_count += count_delivery
    limit = queue.limits.delivery_limit
    if limit is not None and entry.delivery_count > limit:
        dead_letter.dead_letter(step, queue, entry.message, "delivery_limit")
    else:
        queue.give_back(entry)
