"""Consumers and the channel's part in delivery: basic.consume (and the direct reply-to
consumer), basic.cancel, basic.qos, basic.get, and the credit a consumer's node grants back."""

from __future__ import annotations

from warrenmq.replication import commands as c
from warrenmq.replication import delivery, queues
from warrenmq.replication.arguments import invalid_argument, is_integer, not_an_integer
from warrenmq.replication.replies import GetEmpty, GetOk, Ok, Reply
from warrenmq.replication.state import Channel, Consumer, find_queue, new_id
from warrenmq.replication.step import ReplyCode, Step, refusal


def apply_consume(step: Step, command: c.Consume) -> Reply:
    if command.queue == c.REPLY_TO:
        return _consume_replies(step, command)
    queue = step.queue(command.channel, command.vhost, command.queue)
    channel = step.channel(command.channel)
    if command.consumer_tag in channel.consumers:
        raise refusal(
            ReplyCode.NOT_ALLOWED, f"attempt to reuse consumer tag '{command.consumer_tag}'"
        )
    if queue.queue_type == "quorum" and channel.global_prefetch_count:
        # RabbitMQ's quorum queues refuse a consumer on a channel with a global prefetch
        raise refusal(
            ReplyCode.NOT_IMPLEMENTED,
            f"queue '{queue.name}' in vhost '{queue.vhost}' does not support global qos",
        )
    if queue.consumers and (command.exclusive or queue.consumers[0].exclusive):
        raise refusal(
            ReplyCode.ACCESS_REFUSED,
            f"queue '{queue.name}' in vhost '{queue.vhost}' in exclusive use",
        )
    consumer = Consumer(
        command.channel,
        command.consumer_tag,
        command.no_ack,
        command.exclusive,
        channel.prefetch_count,
        priority=_priority(command),
        id=new_id(step.state),
    )
    queue.consumers.append(consumer)
    queue.top_priority = max(consumer.priority for consumer in queue.consumers)
    queue.had_consumer = queue.used = True
    channel.consumers[command.consumer_tag] = queue.ref
    if command.credit is not None:
        allowance = delivery.DELIVERY_CREDIT_MESSAGES
        step.state.uncredited[(command.channel, command.consumer_tag)] = [
            max(0, allowance - command.credit),
            0,
        ]
    if queue.limits.single_active_consumer:
        delivery.active_consumer(queue)  # active from the start, as RabbitMQ shows it
    delivery.dispatch(step, queue)
    return Ok()


def _consume_replies(step: Step, command: c.Consume) -> Reply:
    if not command.no_ack:
        raise refusal(ReplyCode.PRECONDITION_FAILED, "reply consumer cannot acknowledge")
    channel = step.channel(command.channel)
    if channel.reply_consumer is not None:
        raise refusal(ReplyCode.PRECONDITION_FAILED, "reply consumer already set")
    channel.reply_consumer = command.consumer_tag
    return Ok()


def _priority(command: c.Consume) -> int:
    priority = command.arguments.get("x-priority", 0)
    if not is_integer(priority):  # any integer: negative priorities are allowed
        raise invalid_argument(
            "queue", command.queue, command.vhost, "x-priority", not_an_integer(priority)
        )
    return priority


def apply_cancel(step: Step, command: c.Cancel) -> Reply:
    channel = step.state.channels.get(command.channel)
    if channel is not None and channel.reply_consumer == command.consumer_tag:
        channel.reply_consumer = None
    if channel is not None and command.consumer_tag in channel.consumers:
        remove_consumer(step, channel, command.consumer_tag)
    return Ok()  # AMQP 0-9-1: cancelling an unknown consumer is not an error


def remove_consumer(step: Step, channel: Channel, consumer_tag: str) -> None:
    queue = find_queue(step.state, channel.consumers.pop(consumer_tag))
    step.state.uncredited.pop((channel.ref, consumer_tag), None)
    if queue is None:
        return  # the queue went first, and its consumers with it
    queue.consumers = [
        consumer
        for consumer in queue.consumers
        if not (consumer.channel == channel.ref and consumer.consumer_tag == consumer_tag)
    ]
    queue.next_consumer = 0
    queue.top_priority = max((consumer.priority for consumer in queue.consumers), default=0)
    queue.used = True  # x-expires counts from the last consumer's going
    if queue.limits.single_active_consumer:
        delivery.active_consumer(queue)  # the next one takes over at once
    if queue.auto_delete and not queue.consumers and queue.had_consumer:
        queues.remove_queue(step, step.state.vhosts[queue.vhost], queue)


def apply_qos(step: Step, command: c.Qos) -> Reply:
    channel = step.channel(command.channel)
    consumed = [
        queue
        for ref in dict.fromkeys(channel.consumers.values())
        if (queue := find_queue(step.state, ref)) is not None
    ]
    if command.global_:
        channel.global_prefetch_count = command.prefetch_count
    else:
        # Beyond RabbitMQ (which applies it to later consumers only): the channel's live
        # consumers take the new prefetch too.
        channel.prefetch_count = command.prefetch_count
        for queue in consumed:
            for consumer in queue.consumers:
                if consumer.channel == channel.ref:
                    consumer.prefetch_count = command.prefetch_count
    for queue in consumed:
        delivery.dispatch(step, queue)
    return Ok()


def apply_get(step: Step, command: c.Get) -> Reply:
    queue = step.queue(command.channel, command.vhost, command.queue)
    queue.used = True
    delivery.expire(step, queue)
    if not queue.ready_count:
        return GetEmpty()
    channel = step.channel(command.channel)
    entry = queue.take()
    delivery_tag = delivery.hand_out(step, channel, queue, queue.ref, entry, None, command.no_ack)
    message = entry.message
    return GetOk(
        delivery_tag,
        entry.redelivered,
        message.exchange,
        message.routing_key,
        queue.ready_count,
        message.properties,
        message.body,
        delivery.annotations_of(queue, entry),
    )


def apply_grant_credit(step: Step, command: c.GrantCredit) -> Reply:
    key = (command.channel, command.consumer_tag)
    uncredited = step.state.uncredited.get(key)
    if uncredited is None:
        return Ok()  # the consumer went meanwhile (or a direct reply-to consumer)
    uncredited[0] = max(0, uncredited[0] - command.messages)
    uncredited[1] = max(0, uncredited[1] - command.bytes)
    channel = step.state.channels.get(command.channel)
    ref = channel.consumers.get(command.consumer_tag) if channel is not None else None
    queue = find_queue(step.state, ref) if ref is not None else None
    if queue is not None:
        delivery.dispatch(step, queue)
    return Ok()


def apply_drain_credit(step: Step, command: c.DrainCredit) -> Reply:
    uncredited = step.state.uncredited.get((command.channel, command.consumer_tag))
    if uncredited is not None:
        uncredited[0] = max(uncredited[0], delivery.DELIVERY_CREDIT_MESSAGES)
    return Ok()
