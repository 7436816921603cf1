"""AMQP field tables (pamqp values) as plain JSON-compatible values for the replicated state.

Routing compares header values with binding arguments; both pass through here, so a value
compares equal exactly when RabbitMQ would find it equal by value.
"""

from __future__ import annotations

import datetime
import decimal
import typing

__all__ = ["plain_table", "plain_value"]


def plain_value(value: typing.Any) -> typing.Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return plain_table(value)
    if isinstance(value, (list, tuple)):
        return [plain_value(item) for item in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    if isinstance(value, datetime.datetime):
        return int(value.timestamp())
    if isinstance(value, decimal.Decimal):
        return str(value)
    return str(value)


def plain_table(table: dict[str, typing.Any] | None) -> dict[str, typing.Any]:
    return {str(key): plain_value(value) for key, value in (table or {}).items()}
