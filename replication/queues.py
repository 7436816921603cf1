"""Queues as the broker holds them: queue.declare with its arguments' rules, queue.bind/unbind,
queue.purge, queue.delete, and removing a queue for any reason."""

from __future__ import annotations

import typing

from warrenmq.replication import commands as c
from warrenmq.replication import delivery, exchanges, policies
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
# RabbitMQ's words when a deprecated feature is denied by configuration (its phase in 4.2:
# permitted by default), for transient non-exclusive queues
TRANSIENT_NONEXCL_DENIED = (
    "Feature `transient_nonexcl_queues` is deprecated.\n"
    "Its use is not permitted per the configuration (overriding the default, which is "
    "permitted):\n"
    '    "deprecated_features.permit.transient_nonexcl_queues = false"\n'
    "Its use will not be permitted by default in a future minor RabbitMQ version and the "
    "feature will be removed from a future major RabbitMQ version; actual versions to be "
    "determined.\n"
    "To continue using this feature when it is not permitted by default, set the following "
    "parameter in your configuration:\n"
    '    "deprecated_features.permit.transient_nonexcl_queues = true"'
)
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


# Arguments one queue type takes and the other refuses (RabbitMQ's queue type capabilities:
# queue_arguments of rabbit_classic_queue and rabbit_quorum_queue)
QUEUE_TYPE_REFUSES = {
    "classic": frozenset(
        {"x-delivery-limit", "x-dead-letter-strategy", "x-quorum-initial-group-size"}
    ),
    "quorum": frozenset({"x-max-priority", "x-queue-mode", "x-queue-version", "x-max-age"}),
}


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
    limits = limits_of(command.arguments, command.queue, command.vhost, queue_type)
    _check_for_queue_type(command, queue_type)
    if not (command.durable or command.exclusive or command.permit_transient):
        raise refusal(ReplyCode.INTERNAL_ERROR, TRANSIENT_NONEXCL_DENIED)
    vhost.queues[command.queue] = Queue(
        command.vhost,
        command.queue,
        command.durable,
        command.channel.connection_ref if command.exclusive else None,
        command.auto_delete,
        command.arguments,
        queue_type,
        limits=limits,
        last_used_ms=step.state.clock_ms,
        id=new_id(step.state),
    )
    apply_policies(step, vhost, vhost.queues[command.queue])
    return QueueDeclared(command.queue, 0, 0)


def apply_policies(step: Step, vhost: Vhost, queue: Queue) -> None:
    """Give the queue what its policy and operator policy set, over its own arguments (once
    declared, and after every policy change in its vhost); a lower limit trims it at once."""
    policy, operator = policies.queue_policies(vhost, queue)
    queue.policy = policy.name if policy is not None else None
    queue.operator_policy = operator.name if operator is not None else None
    definition = policies.merged_definition(policy, operator)
    if definition == queue.policy_definition:
        return  # what applies is what applied (a new queue without policies: its arguments)
    queue.policy_definition = definition
    effective = policies.effective_arguments(queue.arguments, queue.queue_type, definition)
    try:
        queue.limits = limits_of(effective, queue.name, queue.vhost, queue.queue_type)
    except Refusal:
        # checked one by one, a policy's values can still not go together with the queue's
        # arguments (a routing key and no exchange to dead-letter to): the arguments hold
        queue.limits = limits_of(queue.arguments, queue.name, queue.vhost, queue.queue_type)
    delivery.trim(step, queue)
    delivery.dispatch(step, queue)


def _check_queue_type(command: c.DeclareQueue) -> str:
    queue_type = command.arguments.get("x-queue-type", "classic")
    if queue_type not in QUEUE_TYPES:
        raise refusal(
            ReplyCode.PRECONDITION_FAILED,
            f"invalid arg 'x-queue-type' for queue '{command.queue}' in vhost "
            f"'{command.vhost}': \"unsupported queue type '{queue_type}'\"",
        )
    return typing.cast(str, queue_type)


def _check_for_queue_type(command: c.DeclareQueue, queue_type: str) -> None:
    """What the queue type refuses, once the arguments it takes are checked (RabbitMQ's
    order: x-queue-type, the values, the keys, then the queue type's own declare)."""
    unsupported = QUEUE_TYPE_REFUSES[queue_type].intersection(command.arguments)
    if unsupported:
        raise refusal(
            ReplyCode.PRECONDITION_FAILED,
            f"invalid arg '{min(unsupported)}' for queue '{command.queue}' in vhost "
            f"'{command.vhost}' of queue type rabbit_{queue_type}_queue",
        )
    if queue_type == "quorum" and command.server_named:
        raise refusal(
            ReplyCode.PRECONDITION_FAILED,
            "Cannot declare a server-named queue for type rabbit_quorum_queue",
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
    if command.exclusive != (existing.exclusive_owner is not None):
        raise locked(existing)  # RabbitMQ: a different exclusive flag is 405, not 406
    received_arguments = dict(command.arguments)
    # RabbitMQ 4.x gives a declare without x-queue-type the default type (classic) before it
    # compares (rabbit_amqqueue:augment_declare_args), so redeclaring a quorum queue needs it
    received_arguments.setdefault("x-queue-type", "classic")
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


def limits_of(arguments: c.Arguments, queue: str, vhost: str, queue_type: str) -> Limits:
    """Read and check the limit and dead-letter arguments (406 with RabbitMQ's reasons)."""

    def invalid(argument: str, reason: str) -> Refusal:
        return invalid_argument("queue", queue, vhost, argument, reason)

    def integer(argument: str, least: int | None = 0) -> int | None:
        return integer_argument(arguments, argument, "queue", queue, vhost, least)

    def string(argument: str) -> str | None:
        value = arguments.get(argument)
        if value is not None and not isinstance(value, str):
            raise invalid(argument, f"{{unacceptable_type,{amqp_type_name(value)}}}")
        return value

    dead_letter_exchange = arguments.get("x-dead-letter-exchange")
    if dead_letter_exchange is not None and not isinstance(dead_letter_exchange, str):
        # RabbitMQ's channel checks this one before the queue's arguments, in its own words
        raise refusal(
            ReplyCode.PRECONDITION_FAILED,
            f"invalid type '{amqp_type_name(dead_letter_exchange)}' for arg "
            f"'x-dead-letter-exchange' in queue '{queue}' in vhost '{vhost}'",
        )
    if integer("x-quorum-initial-group-size") == 0:
        raise invalid("x-quorum-initial-group-size", "{value_zero,0}")
    overflow = string("x-overflow") or "drop-head"
    if overflow not in OVERFLOW_MODES:
        raise invalid("x-overflow", "invalid_overflow")
    dead_letter_routing_key = string("x-dead-letter-routing-key")
    single_active_consumer = arguments.get("x-single-active-consumer", False)
    if not isinstance(single_active_consumer, bool):
        raise invalid(
            "x-single-active-consumer",
            f"{{unacceptable_type,{amqp_type_name(single_active_consumer)}}}",
        )
    if dead_letter_routing_key is not None and dead_letter_exchange is None:
        raise invalid("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")
    delivery_limit = integer("x-delivery-limit", least=None)
    if queue_type != "quorum" or (delivery_limit is not None and delivery_limit < 0):
        delivery_limit = None  # classic queues count no deliveries; a negative one: no limit
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
    key = ("queue", command.queue, command.routing_key, arguments_key(command.arguments))
    source = vhost.exchanges.get(command.exchange)
    if queue is not None and source is not None and key in source.bindings:
        check_exclusive_access(command.channel, queue)  # RabbitMQ: only a binding that exists
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
    if command.if_unused and queue.queue_type == "quorum":
        raise refusal(
            ReplyCode.NOT_IMPLEMENTED,
            f"cannot delete {where}. queue.delete operations with if-unused flag set are not "
            "supported by quorum queues",
        )
    if command.if_unused and queue.consumers:
        raise refusal(ReplyCode.PRECONDITION_FAILED, f"{where} in use")
    if command.if_empty and queue.ready_count:
        raise refusal(ReplyCode.PRECONDITION_FAILED, f"{where} not empty")
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
