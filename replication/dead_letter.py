"""Dead-lettering: a message that expires, overflows, is rejected or passes its delivery limit
is republished to its queue's dead-letter exchange with an x-death record, or dropped.

At most once (the default), what cannot be routed or is refused is gone. At least once
(x-dead-letter-strategy), the message stays with its source queue until every queue it routes
to has taken it, and each Tick tries again. Either way each move happens within one log entry,
so it is never done twice.
"""

from __future__ import annotations

import dataclasses

from warrenmq.replication import delivery
from warrenmq.replication.queue import Queue
from warrenmq.replication.replies import Death
from warrenmq.replication.routing import route, sender_keys
from warrenmq.replication.state import DeadLetter, Message
from warrenmq.replication.step import Step

DEAD_LETTER_RETRIES_PER_TICK = 1_000  # per queue: a Tick's work stays bounded


def dead_letter(step: Step, queue: Queue, message: Message, reason: str) -> None:
    """Republish to the queue's dead-letter exchange, or drop it."""
    limits = queue.limits
    if limits.dead_letter_exchange is None:
        return
    event = Death(
        queue.name,
        reason,
        1,
        step.state.clock_ms,
        message.exchange,
        tuple(sender_keys(message.routing_key, message.headers, "CC")),
        message.expiration,
    )
    earlier = next(
        (d for d in message.deaths if d.queue == queue.name and d.reason == reason), None
    )
    death = event if earlier is None else dataclasses.replace(earlier, count=earlier.count + 1)
    deaths = (death, *(d for d in message.deaths if d is not earlier))
    if limits.dead_letter_routing_key is None:  # all the keys it was published with
        routing_key = message.routing_key
        routing_keys = sender_keys(routing_key, message.headers, "CC", "BCC")
        dropped: tuple[str, ...] = ("BCC",)
    else:  # only the queue's; then CC goes too (RabbitMQ docs, "Dead-Lettered Effects")
        routing_key = limits.dead_letter_routing_key
        routing_keys = [routing_key]
        dropped = ("CC", "BCC")
    headers = message.headers
    if headers is not None and any(name in headers for name in dropped):
        headers = {name: value for name, value in headers.items() if name not in dropped}
    dead = Message(
        limits.dead_letter_exchange,
        routing_key,
        message.properties,
        message.body,
        headers,
        deaths,
        message.first_death or event,
        event,
        priority=message.priority,
    )
    pending = DeadLetter(dead, tuple(routing_keys))
    if not _forward(step, queue, pending) and limits.at_least_once:
        queue.hold_dead_letter(pending)


def retry_dead_letters(step: Step) -> None:
    """The oldest waiting dead letters of each queue try their targets again, a bounded number
    per Tick; those that still cannot go keep their place."""
    for vhost in step.state.vhosts.values():
        for queue in list(vhost.queues.values()):
            if not queue.dead_letters:
                continue
            tried = queue.dead_letters[:DEAD_LETTER_RETRIES_PER_TICK]
            kept = []
            for pending in tried:
                if _forward(step, queue, pending):
                    queue.dead_letter_bytes -= len(pending.message.body)
                else:
                    kept.append(pending)
            queue.dead_letters[: len(tried)] = kept


def _forward(step: Step, queue: Queue, pending: DeadLetter) -> bool:
    """Route a dead letter to the queues that have not taken it yet; True once all have."""
    vhost = step.state.vhosts.get(queue.vhost)
    message = pending.message
    exchange = vhost.exchanges.get(message.exchange) if vhost is not None else None
    if vhost is None or exchange is None:
        return False  # RabbitMQ cannot dead-letter to a missing exchange
    # a cycle (the message was dead-lettered from a queue before) ends here, unless a consumer
    # rejected it somewhere on the way (RabbitMQ docs, "Dead-letter cycle")
    rejected = any(d.reason == "rejected" for d in message.deaths)
    targets = [
        target
        for target in route(vhost, exchange, pending.routing_keys, message.headers)
        if (rejected or all(d.queue != target.name for d in message.deaths))
        and target.name not in pending.taken
    ]
    if not targets:
        return bool(pending.taken)  # unroutable unless it reached some queue before
    for target in targets:
        if delivery.enqueue(step, target, message, step.state.clock_ms):
            pending.taken.add(target.name)
    return all(target.name in pending.taken for target in targets)
