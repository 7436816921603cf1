"""Exchanges and their bindings: exchange.declare/delete, exchange.bind/unbind, and the binding
bookkeeping that queue.bind/unbind and queue deletion share."""

from __future__ import annotations

from warrenmq.replication import commands as c
from warrenmq.replication import policies
from warrenmq.replication.arguments import (
    amqp_type_name,
    arguments_key,
    check_arguments_equivalence,
    check_properties_equivalence,
    check_reserved_name,
    integer_argument,
)
from warrenmq.replication.replies import Ok, Reply
from warrenmq.replication.state import Binding, Exchange, Vhost
from warrenmq.replication.step import (
    ReplyCode,
    Step,
    default_exchange_refused,
    not_found,
    refusal,
)

ROUTING_TYPES = ("direct", "fanout", "topic", "headers")
# x-delayed-message: RabbitMQ's delayed-message plugin, spelt the same; routes as x-delayed-type
EXCHANGE_TYPES = (*ROUTING_TYPES, "x-delayed-message")

# Arguments that take part in the equivalence check on redeclare (RabbitMQ compares these and
# ignores the rest).
_EQUIVALENCE_ARGUMENTS = (
    "alternate-exchange",
    "x-delayed-max-length",
    "x-delayed-max-length-bytes",
    "x-delayed-type",
)

BindingKey = tuple[str, str, str, bytes]  # destination kind and name, routing key, arguments


def apply_declare_exchange(step: Step, command: c.DeclareExchange) -> Reply:
    vhost = step.vhost(command.vhost)
    name = command.exchange
    if name == "":  # passive too, as RabbitMQ
        raise default_exchange_refused()
    existing = vhost.exchanges.get(name)
    if command.passive:
        if existing is None:
            raise not_found("exchange", name, command.vhost)
        return Ok()
    if command.type not in EXCHANGE_TYPES:
        raise refusal(ReplyCode.COMMAND_INVALID, f"unknown exchange type '{command.type}'")
    if existing is not None:
        _check_equivalence(existing, command)
        return Ok()
    check_reserved_name("exchange", name)
    if (
        command.type == "x-delayed-message"
        and command.arguments.get("x-delayed-type") not in ROUTING_TYPES
    ):
        raise refusal(
            ReplyCode.PRECONDITION_FAILED,
            "Invalid argument, 'x-delayed-type' must be an existing exchange type",
        )
    for argument in ("x-delayed-max-length", "x-delayed-max-length-bytes"):
        integer_argument(command.arguments, argument, "exchange", name, command.vhost)
    vhost.exchanges[name] = Exchange(
        name,
        command.type,
        command.durable,
        command.auto_delete,
        command.internal,
        command.arguments,
    )
    apply_policy(vhost, vhost.exchanges[name])
    return Ok()


def apply_policy(vhost: Vhost, exchange: Exchange) -> None:
    """What the exchange's policy sets: an alternate exchange, for now the only key."""
    policy = policies.exchange_policy(vhost, exchange)
    exchange.policy = policy.name if policy is not None else None
    alternate = policy.definition.get("alternate-exchange") if policy is not None else None
    exchange.policy_alternate_exchange = alternate if isinstance(alternate, str) else None


def _check_equivalence(existing: Exchange, command: c.DeclareExchange) -> None:
    check_properties_equivalence(
        "exchange",
        existing.name,
        command.vhost,
        [
            ("type", command.type, existing.type),
            ("durable", command.durable, existing.durable),
            ("auto_delete", command.auto_delete, existing.auto_delete),
            ("internal", command.internal, existing.internal),
        ],
    )
    check_arguments_equivalence(
        "exchange",
        existing.name,
        command.vhost,
        _EQUIVALENCE_ARGUMENTS,
        command.arguments,
        existing.arguments,
    )


def apply_delete_exchange(step: Step, command: c.DeleteExchange) -> Reply:
    vhost = step.vhost(command.vhost)
    name = command.exchange
    if name == "":
        raise default_exchange_refused()
    if name.startswith("amq."):
        raise refusal(
            ReplyCode.ACCESS_REFUSED,
            f"deletion of system exchange '{name}' in vhost '{command.vhost}' not allowed",
        )
    exchange = vhost.exchanges.get(name)
    if exchange is None:
        return Ok()  # RabbitMQ: deleting a missing exchange succeeds
    if command.if_unused and exchange.bindings:
        raise refusal(
            ReplyCode.PRECONDITION_FAILED, f"exchange '{name}' in vhost '{command.vhost}' in use"
        )
    _remove_exchange(vhost, exchange)
    return Ok()


def apply_bind_exchange(step: Step, command: c.BindExchange) -> Reply:
    if "" in (command.source, command.destination):
        raise default_exchange_refused()
    step.exchange(command.vhost, command.destination)
    source = step.exchange(command.vhost, command.source)
    add_binding(
        source, Binding("exchange", command.destination, command.routing_key, command.arguments)
    )
    return Ok()


def apply_unbind_exchange(step: Step, command: c.UnbindExchange) -> Reply:
    if "" in (command.source, command.destination):
        raise default_exchange_refused()
    vhost = step.vhost(command.vhost)
    key = ("exchange", command.destination, command.routing_key, arguments_key(command.arguments))
    unbind(vhost, command.source, key)
    return Ok()


X_MATCH_VALUES = ("all", "any", "all-with-x", "any-with-x")


def _check_x_match(source: Exchange, arguments: c.Arguments) -> None:
    """RabbitMQ's headers exchange validates a binding's x-match before it binds."""
    if source.routing_type != "headers" or "x-match" not in arguments:
        return
    x_match = arguments["x-match"]
    if not isinstance(x_match, str):
        raise refusal(
            ReplyCode.PRECONDITION_FAILED,
            f"Invalid x-match field type {amqp_type_name(x_match)} (value {x_match}); "
            "expected longstr",
        )
    if x_match not in X_MATCH_VALUES:
        raise refusal(
            ReplyCode.PRECONDITION_FAILED,
            f'Invalid x-match field value <<"{x_match}">>; expected all, any, all-with-x, or '
            "any-with-x",
        )


def add_binding(source: Exchange, binding: Binding) -> None:
    """Bind, unless the same binding is there already (AMQP: binding twice is binding once)."""
    _check_x_match(source, binding.arguments)
    key = (
        binding.destination_kind,
        binding.destination,
        binding.routing_key,
        arguments_key(binding.arguments),
    )
    if key in source.bindings:
        return
    source.bindings[key] = binding
    if source.routing_type == "direct":
        source.by_routing_key.setdefault(binding.routing_key, []).append(binding)


def unbind(vhost: Vhost, source_name: str, key: BindingKey) -> None:
    """Drop a binding if it exists (AMQP: unbinding what is not bound succeeds)."""
    source = vhost.exchanges.get(source_name)
    if source is not None and key in source.bindings:
        _drop_binding(vhost, source, key)


def remove_bindings_to(vhost: Vhost, kind: str, name: str) -> None:
    for source in list(vhost.exchanges.values()):
        for key, binding in list(source.bindings.items()):
            if binding.destination_kind == kind and binding.destination == name:
                _drop_binding(vhost, source, key)


def _drop_binding(vhost: Vhost, source: Exchange, key: BindingKey) -> None:
    binding = source.bindings.pop(key)
    if source.routing_type == "direct":
        same_key = source.by_routing_key[binding.routing_key]
        same_key.remove(binding)
        if not same_key:
            del source.by_routing_key[binding.routing_key]
    if source.auto_delete and not source.bindings and vhost.exchanges.get(source.name) is source:
        _remove_exchange(vhost, source)


def _remove_exchange(vhost: Vhost, exchange: Exchange) -> None:
    del vhost.exchanges[exchange.name]
    remove_bindings_to(vhost, "exchange", exchange.name)
