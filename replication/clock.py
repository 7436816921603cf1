"""Time in the log: a Tick carries the leader's clock, and with it messages expire, unused
queues go, delayed messages come due, waiting dead letters try again and deliveries held past
their consumer timeout fail their channel."""

from __future__ import annotations

from warrenmq.replication import commands as c
from warrenmq.replication import dead_letter, delivery, publish, queues
from warrenmq.replication.replies import ChannelTimedOut, Ok, Reply
from warrenmq.replication.state import find_queue
from warrenmq.replication.step import Step


def apply_tick(step: Step, command: c.Tick) -> Reply:
    state = step.state
    now_ms = state.clock_ms = max(state.clock_ms, command.now_ms)
    for vhost in state.vhosts.values():
        for queue in list(vhost.queues.values()):
            if queue.used or queue.consumers:
                queue.used, queue.last_used_ms = False, now_ms
            expires_ms = queue.limits.expires_ms
            if expires_ms is not None and now_ms - queue.last_used_ms >= expires_ms:
                queues.remove_queue(step, vhost, queue)  # its messages are not dead-lettered
            elif delivery.expire(step, queue):
                delivery.dispatch(step, queue)
    publish.release_delayed(step, now_ms)
    dead_letter.retry_dead_letters(step)
    _time_out_deliveries(step, now_ms)
    return Ok()


def _time_out_deliveries(step: Step, now_ms: int) -> None:
    """A channel holding a delivery unacknowledged past its queue's consumer timeout fails
    (what it sends next is ignored); the owning node closes it with 406."""
    state = step.state
    for channel in state.channels.values():
        if channel.ref in state.failed_channels:
            continue
        for unacked in channel.unacked.values():
            queue = find_queue(state, unacked.queue)
            if queue is None:
                continue  # deleted: its deliveries are settled into nothing, never late
            timeout_ms = queue.limits.consumer_timeout_ms
            if now_ms - unacked.delivered_ms > timeout_ms:
                state.failed_channels.add(channel.ref)
                step.effects.append(ChannelTimedOut(channel.ref, timeout_ms))
                break
