"""Queues as the broker holds them: queue.declare with its arguments' rules, queue.bind/unbind,
queue.purge, queue.delete, and removing a queue for any reason."""

from __future__ import annotations

import typing

from warrenmq.replication import commands as c
from warrenmq.replication import exchanges
from warrenmq.replication.arguments import (
    amqp_type_name,
    arguments_key,
    check_arguments_equivalence,
    check_properties_equivalence,
    check_reserved_name,
    integer_argument,
    invalid_argument,
)
from warrenmq.replication.queue import Limits, Queue
from warrenmq.replication.replies import CancelConsumer, MessageCount, Ok, QueueDeclared, Reply
from warrenmq.replication.state import Binding, Vhost, new_id
from warrenmq.replication.step import (
    Refusal,
    ReplyCode,
    Step,
    check_exclusive_access,
    default_exchange_refused,
    locked,
    not_found,
    refusal,
)

QUEUE_TYPES = ("classic", "quorum")
# RabbitMQ 4.x: a quorum queue dead-letters (or drops) a message returned more than 20 times
QUORUM_DELIVERY_LIMIT = 20
CONSUMER_TIMEOUT_MS = 30 * 60 * 1000  # RabbitMQ's default consumer_timeout
MAX_PRIORITY = 255
OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")

# Arguments that take part in the equivalence check on redeclare (RabbitMQ compares these and
# ignores the rest).
_EQUIVALENCE_ARGUMENTS = (
    "x-consumer-timeout",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-delivery-limit",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-message-ttl",
    "x-overflow",
    "x-queue-type",
    "x-single-active-consumer",
)


def apply_declare_queue(step: Step, command: c.DeclareQueue) -> Reply:
    vhost = step.vhost(command.vhost)
    existing = vhost.queues.get(command.queue)
    if command.passive:
        if existing is None:
            raise not_found("queue", command.queue, command.vhost)
        check_exclusive_access(command.channel, existing)
        return QueueDeclared(existing.name, existing.ready_count, len(existing.consumers))
    if existing is not None:
        check_exclusive_access(command.channel, existing)
        _check_equivalence(existing, command)
        existing.used = True
        return QueueDeclared(existing.name, existing.ready_count, len(existing.consumers))
    if not command.server_named:
        check_reserved_name("queue", command.queue)
    queue_type = _check_queue_type(command)
    vhost.queues[command.queue] = Queue(
        command.vhost,
        command.queue,
        command.durable,
        command.channel.connection_ref if command.exclusive else None,
        command.auto_delete,
        command.arguments,
        queue_type,
        limits=_limits(command, queue_type),
        last_used_ms=step.state.clock_ms,
        id=new_id(step.state),
    )
    return QueueDeclared(command.queue, 0, 0)


def _check_queue_type(command: c.DeclareQueue) -> str:
    queue_type = command.arguments.get("x-queue-type", "classic")
    if queue_type not in QUEUE_TYPES:
        raise refusal(
            ReplyCode.PRECONDITION_FAILED,
            f"invalid arg 'x-queue-type' for queue '{command.queue}' in vhost "
            f"'{command.vhost}': unsupported queue type '{queue_type}'",
        )
    if queue_type == "quorum":
        # RabbitMQ docs: quorum queues are always durable, never exclusive or auto-delete.
        for wrong, name in (
            (not command.durable, "non-durable"),
            (command.exclusive, "exclusive-owner"),
            (command.auto_delete, "auto-delete"),
        ):
            if wrong:
                raise refusal(
                    ReplyCode.PRECONDITION_FAILED,
                    f"invalid property '{name}' for queue '{command.queue}' in vhost "
                    f"'{command.vhost}'",
                )
    return typing.cast(str, queue_type)


def _check_equivalence(existing: Queue, command: c.DeclareQueue) -> None:
    check_properties_equivalence(
        "queue",
        existing.name,
        command.vhost,
        [
            ("durable", command.durable, existing.durable),
            ("auto_delete", command.auto_delete, existing.auto_delete),
        ],
    )
    if command.exclusive and existing.exclusive_owner is None:
        raise locked(existing)
    received_arguments = dict(command.arguments)
    # RabbitMQ 3.13+: a redeclare that leaves out x-queue-type matches any type.
    received_arguments.setdefault("x-queue-type", existing.queue_type)
    current_arguments = dict(existing.arguments)
    current_arguments.setdefault("x-queue-type", existing.queue_type)
    check_arguments_equivalence(
        "queue",
        existing.name,
        command.vhost,
        _EQUIVALENCE_ARGUMENTS,
        received_arguments,
        current_arguments,
    )


def _limits(command: c.DeclareQueue, queue_type: str) -> Limits:
    """Read and check the limit and dead-letter arguments (406 with RabbitMQ's reasons)."""
    arguments = command.arguments

    def invalid(argument: str, reason: str) -> Refusal:
        return invalid_argument("queue", command.queue, command.vhost, argument, reason)

    def integer(argument: str, least: int = 0) -> int | None:
        return integer_argument(arguments, argument, "queue", command.queue, command.vhost, least)

    def string(argument: str) -> str | None:
        value = arguments.get(argument)
        if value is not None and not isinstance(value, str):
            raise invalid(argument, f"{{unacceptable_type,{amqp_type_name(value)}}}")
        return value

    overflow = string("x-overflow") or "drop-head"
    if overflow not in OVERFLOW_MODES:
        raise invalid("x-overflow", "invalid_overflow")
    dead_letter_exchange = string("x-dead-letter-exchange")
    dead_letter_routing_key = string("x-dead-letter-routing-key")
    single_active_consumer = arguments.get("x-single-active-consumer", False)
    if not isinstance(single_active_consumer, bool):
        raise invalid(
            "x-single-active-consumer",
            f"{{unacceptable_type,{amqp_type_name(single_active_consumer)}}}",
        )
    if dead_letter_routing_key is not None and dead_letter_exchange is None:
        raise invalid("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")
    delivery_limit = integer("x-delivery-limit", least=-1)
    if queue_type != "quorum" or delivery_limit == -1:
        delivery_limit = None  # classic queues count no deliveries; -1 means no limit
    elif delivery_limit is None:
        delivery_limit = QUORUM_DELIVERY_LIMIT
    strategy = string("x-dead-letter-strategy") or "at-most-once"
    if strategy not in ("at-most-once", "at-least-once"):
        raise invalid("x-dead-letter-strategy", "invalid_dlx_strategy")
    max_priority = integer("x-max-priority")
    if max_priority is not None and max_priority > MAX_PRIORITY:
        raise invalid("x-max-priority", f"{{max_value_exceeded,{max_priority}}}")
    expires_ms = integer("x-expires")
    if expires_ms == 0:
        raise invalid("x-expires", "{value_zero,0}")
    return Limits(
        message_ttl_ms=integer("x-message-ttl"),
        single_active_consumer=single_active_consumer,
        consumer_timeout_ms=integer("x-consumer-timeout", least=1) or CONSUMER_TIMEOUT_MS,
        max_priority=max_priority,
        quorum=queue_type == "quorum",
        at_least_once=strategy == "at-least-once"
        and queue_type == "quorum"
        and overflow == "reject-publish",
        expires_ms=expires_ms,
        max_length=integer("x-max-length"),
        max_length_bytes=integer("x-max-length-bytes"),
        overflow=overflow,
        delivery_limit=delivery_limit,
        dead_letter_exchange=dead_letter_exchange,
        dead_letter_routing_key=dead_letter_routing_key,
    )


def apply_bind_queue(step: Step, command: c.BindQueue) -> Reply:
    if command.exchange == "":
        raise default_exchange_refused()
    step.queue(command.channel, command.vhost, command.queue)
    source = step.exchange(command.vhost, command.exchange)
    exchanges.add_binding(
        source, Binding("queue", command.queue, command.routing_key, command.arguments)
    )
    return Ok()


def apply_unbind_queue(step: Step, command: c.UnbindQueue) -> Reply:
    if command.exchange == "":
        raise default_exchange_refused()
    vhost = step.vhost(command.vhost)
    queue = vhost.queues.get(command.queue)
    if queue is not None:
        check_exclusive_access(command.channel, queue)
    key = ("queue", command.queue, command.routing_key, arguments_key(command.arguments))
    exchanges.unbind(vhost, command.exchange, key)
    return Ok()


def apply_purge_queue(step: Step, command: c.PurgeQueue) -> Reply:
    queue = step.queue(command.channel, command.vhost, command.queue)
    count = queue.ready_count
    queue.clear()
    return MessageCount(count)


def apply_delete_queue(step: Step, command: c.DeleteQueue) -> Reply:
    vhost = step.vhost(command.vhost)
    queue = vhost.queues.get(command.queue)
    if queue is None:
        return MessageCount(0)  # RabbitMQ: deleting a missing queue succeeds
    check_exclusive_access(command.channel, queue)
    where = f"queue '{queue.name}' in vhost '{queue.vhost}'"
    if command.if_unused and queue.consumers:
        raise refusal(ReplyCode.PRECONDITION_FAILED, f"{where} in use")
    if command.if_empty and queue.ready_count:
        raise refusal(ReplyCode.PRECONDITION_FAILED, f"{where} is not empty")
    count = queue.ready_count
    remove_queue(step, vhost, queue)
    return MessageCount(count)


def remove_queue(step: Step, vhost: Vhost, queue: Queue) -> None:
    """The queue goes with its messages (not dead-lettered), consumers (told so) and bindings."""
    del vhost.queues[queue.name]  # what refers to it by QueueRef finds nothing now
    queue.clear()
    for consumer in queue.consumers:
        channel = step.state.channels.get(consumer.channel)
        if channel is not None:
            channel.consumers.pop(consumer.consumer_tag, None)
        step.effects.append(CancelConsumer(consumer.channel, consumer.consumer_tag))
    queue.consumers.clear()
    exchanges.remove_bindings_to(vhost, "queue", queue.name)
