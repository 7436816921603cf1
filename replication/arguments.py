"""Declare arguments and properties: how RabbitMQ checks them and words its 406s."""

from __future__ import annotations

import typing

import orjson

from warrenmq.replication import commands as c
from warrenmq.replication.step import Refusal, ReplyCode, refusal


def amqp_type_name(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "longstr"
    return "table" if isinstance(value, dict) else "array"


def _describe(value: object) -> str:
    if value is None:
        return "none"
    return f"the value '{value}' of type '{amqp_type_name(value)}'"


def arguments_key(arguments: c.Arguments) -> bytes:
    """Arguments as bytes that compare equal when the tables do (a binding's identity)."""
    return orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)


def is_integer(value: object) -> typing.TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_properties_equivalence(
    kind: str, name: str, vhost: str, received_current: list[tuple[str, object, object]]
) -> None:
    for property_name, received, current in received_current:
        if received != current:
            raise refusal(
                ReplyCode.PRECONDITION_FAILED,
                f"inequivalent arg '{property_name}' for {kind} '{name}' in vhost '{vhost}': "
                f"received '{str(received).lower()}' but current is '{str(current).lower()}'",
            )


def check_arguments_equivalence(
    kind: str,
    name: str,
    vhost: str,
    compared: tuple[str, ...],
    received: c.Arguments,
    current: c.Arguments,
) -> None:
    for argument in compared:
        if received.get(argument) != current.get(argument):
            raise refusal(
                ReplyCode.PRECONDITION_FAILED,
                f"inequivalent arg '{argument}' for {kind} '{name}' in vhost '{vhost}': "
                f"received {_describe(received.get(argument))} but current is "
                f"{_describe(current.get(argument))}",
            )


def check_reserved_name(kind: str, name: str) -> None:
    """AMQP 0-9-1: names starting with "amq." are the server's; clients may not create them."""
    if name.startswith("amq."):
        raise refusal(
            ReplyCode.ACCESS_REFUSED, f"{kind} name '{name}' contains reserved prefix 'amq.*'"
        )


def invalid_argument(kind: str, name: str, vhost: str, argument: str, reason: str) -> Refusal:
    """RabbitMQ's 406 for a declare argument it cannot take, with its reason."""
    return refusal(
        ReplyCode.PRECONDITION_FAILED,
        f"invalid arg '{argument}' for {kind} '{name}' in vhost '{vhost}': {reason}",
    )


def integer_argument(
    arguments: c.Arguments,
    argument: str,
    kind: str,
    name: str,
    vhost: str,
    least: int | None = 0,
) -> int | None:
    """An integer argument of a queue or exchange declare, or None when it is absent; `least`
    None takes any integer."""
    value = arguments.get(argument)
    if value is None:
        return None
    if not is_integer(value):
        raise invalid_argument(kind, name, vhost, argument, not_an_integer(value))
    if least is not None and value < least:
        raise invalid_argument(kind, name, vhost, argument, f"{{value_negative,{value}}}")
    return value


def not_an_integer(value: object) -> str:
    """RabbitMQ's reason for a non-integer where an integer argument belongs."""
    return f'"expected integer, got {amqp_type_name(value)}"'
