"""Policies and operator policies (RabbitMQ docs: Policies; rabbit_policy, rabbit_policies).

Theory of operation: a vhost holds named policies and operator policies, each a regular
expression over queue or exchange names, what it applies to, a priority and a definition. Of
the policies whose pattern matches a queue's (or exchange's) name and that apply to its kind,
the one of the highest priority is the queue's policy, and likewise its operator policy; they
are not merged with the others that match. A definition key sets what the matching
`x-` argument would, combined with the queue's own arguments by RabbitMQ's rules per key (the
smaller of the two for limits, the argument for dead-lettering), and an operator policy caps
the result (the smaller again). Every SetPolicy or ClearPolicy recomputes what applies to every
queue and exchange of the vhost at once, so a policy change takes effect on existing queues.

Patterns are checked before they reach the log (`check_pattern`): a pattern that could take
exponential time on some name is refused, since every node matches it while applying.
"""

from __future__ import annotations

import functools
import re
import typing
from collections.abc import Callable

from warrenmq.replication import commands as c
from warrenmq.replication.arguments import is_integer
from warrenmq.replication.queue import Queue
from warrenmq.replication.state import Exchange, Policy, Vhost

__all__ = [
    "APPLY_TO",
    "check_definition",
    "check_pattern",
    "check_policy",
    "effective_arguments",
    "exchange_policy",
    "merged_definition",
    "queue_policies",
]

APPLY_TO = ("queues", "classic_queues", "quorum_queues", "exchanges", "all", "streams")
PATTERN_BYTES_MAX = 255  # as long as a name

Resolve = Callable[[typing.Any, typing.Any], typing.Any]  # (policy value, argument value)


def _smaller(policy: typing.Any, argument: typing.Any) -> typing.Any:
    return min(policy, argument) if is_integer(policy) and is_integer(argument) else argument


def _argument_wins(_policy: typing.Any, argument: typing.Any) -> typing.Any:
    return argument


def _policy_wins(policy: typing.Any, _argument: typing.Any) -> typing.Any:
    return policy


def _delivery_limit(policy: typing.Any, argument: typing.Any) -> typing.Any:
    """rabbit_quorum_queue: a negative limit (none) on either side gives way to the other."""
    if not (is_integer(policy) and is_integer(argument)):
        return argument
    return max(policy, argument) if policy < 0 or argument < 0 else min(policy, argument)


# definition key -> (the queue argument it stands for, how the two combine)
QUEUE_KEYS: dict[str, tuple[str, Resolve]] = {
    "max-length": ("x-max-length", _smaller),
    "max-length-bytes": ("x-max-length-bytes", _smaller),
    "message-ttl": ("x-message-ttl", _smaller),
    "expires": ("x-expires", _smaller),
    "consumer-timeout": ("x-consumer-timeout", _smaller),
    "overflow": ("x-overflow", _argument_wins),  # quorum queues: the policy wins (below)
    "dead-letter-exchange": ("x-dead-letter-exchange", _argument_wins),
    "dead-letter-routing-key": ("x-dead-letter-routing-key", _argument_wins),
    "dead-letter-strategy": ("x-dead-letter-strategy", _argument_wins),
    "delivery-limit": ("x-delivery-limit", _delivery_limit),
}
# keys RabbitMQ accepts and Warren has no use for: kept in the definition, changing nothing
INERT_KEYS = frozenset(
    {
        "queue-leader-locator",
        "queue-mode",
        "queue-version",
        "max-in-memory-length",
        "max-in-memory-bytes",
        "initial-cluster-size",
        "max-age",
        "consumer-disconnected-timeout",
        "ha-mode",
        "ha-params",
        "ha-sync-mode",
    }
)
EXCHANGE_KEYS = frozenset({"alternate-exchange"})
# what an operator policy may set (rabbit_policies: operator_policy_validator)
OPERATOR_KEYS = frozenset(
    {
        "expires",
        "message-ttl",
        "max-length",
        "max-length-bytes",
        "max-in-memory-length",
        "max-in-memory-bytes",
        "delivery-limit",
        "queue-version",
        "overflow",
    }
)
# what each queue type ignores in a policy (their capabilities' unsupported_policies)
UNSUPPORTED = {
    "quorum": frozenset({"max-priority", "queue-mode", "max-age", "ha-mode", "ha-params"}),
    "classic": frozenset({"delivery-limit", "dead-letter-strategy", "max-age"}),
}

_STRINGS = {
    "alternate-exchange": "alternate exchange name",
    "dead-letter-exchange": "dead letter exchange name",
    "dead-letter-routing-key": "dead letter routing key",
}
_CHOICES = {
    "dead-letter-strategy": (("at-most-once", "at-least-once"), "dead letter strategy"),
    "overflow": (("drop-head", "reject-publish", "reject-publish-dlx"), "overflow value"),
    "queue-mode": (("default", "lazy"), "queue-mode value"),
    "queue-leader-locator": (
        ("client-local", "balanced", "random", "least-leaders"),
        "queue leader locator value",
    ),
}
_NON_NEGATIVE = {
    "message-ttl": "message TTL",
    "max-length": "maximum length",
    "max-length-bytes": "maximum length in bytes",
    "max-in-memory-length": "maximum memory in bytes",
    "max-in-memory-bytes": "maximum memory in bytes",
    "consumer-timeout": "consumer timeout",
    "consumer-disconnected-timeout": "consumer disconnected timeout",
    "initial-cluster-size": "cluster size",
}


def _value_error(key: str, value: object) -> str | None:
    """RabbitMQ's reason a definition value is invalid, or None."""
    if key in _STRINGS:
        return None if isinstance(value, str) else f"{value!r} is not a valid {_STRINGS[key]}"
    if key in _CHOICES:
        choices, what = _CHOICES[key]
        return None if value in choices else f"{value!r} is not a valid {what}"
    if key in _NON_NEGATIVE:
        valid = is_integer(value) and value >= 0
        return None if valid else f"{value!r} is not a valid {_NON_NEGATIVE[key]}"
    if key == "expires":
        valid = is_integer(value) and value >= 1
        return None if valid else f"{value!r} is not a valid queue expiry"
    if key == "delivery-limit":
        return None if is_integer(value) else f"{value!r} is not a valid delivery limit"
    if key == "queue-version":
        return None if value in (1, 2) else f"{value!r} is not a valid queue-version value"
    return None


def check_definition(definition: object, operator: bool) -> str | None:
    """Why a policy's definition cannot be set (RabbitMQ's 400 reasons), or None."""
    if not isinstance(definition, dict) or not definition:
        return "no policy definition given" if not definition else "definition must be a table"
    allowed = OPERATOR_KEYS if operator else {*QUEUE_KEYS, *INERT_KEYS, *EXCHANGE_KEYS}
    unknown = sorted(key for key in definition if key not in allowed)
    if unknown:
        return f"Unrecognised terms {unknown} in policy"
    for key, value in definition.items():
        error = _value_error(key, value)
        if error is not None:
            return error
    return None


# a group or class that repeats and is itself repeated: (a+)+, (a|aa)*, ([a-z]*)*, ...
_NESTED_REPEAT = re.compile(r"\((?:[^()\\]|\\.)*[*+}](?:[^()\\]|\\.)*\)[*+{?]")
_ALTERNATION_REPEAT = re.compile(r"\((?:[^()\\]|\\.)*\|(?:[^()\\]|\\.)*\)[*+{]")


def check_pattern(pattern: object) -> str | None:
    """Why a policy pattern cannot be set, or None. Beyond being a regular expression, it must
    not repeat a group that repeats or alternates: those can take exponential time on a name,
    and every node matches every pattern against every queue it declares (RabbitMQ has no
    such limit; its patterns are PCRE, Warren's Python's `re`, which agree on ordinary ones)."""
    if not isinstance(pattern, str):
        return "pattern must be a string"
    if len(pattern.encode()) > PATTERN_BYTES_MAX:
        return f"pattern is longer than {PATTERN_BYTES_MAX} bytes"
    try:
        re.compile(pattern)
    except re.error as error:
        return f"invalid regular expression {pattern!r}: {error}"
    if _NESTED_REPEAT.search(pattern) or _ALTERNATION_REPEAT.search(pattern):
        return f"pattern {pattern!r} repeats a repeated group: refused, it could take too long"
    return None


def check_policy(
    pattern: object, definition: object, apply_to: object, priority: object, operator: bool
) -> str | None:
    """Why a policy cannot be set (RabbitMQ's 400 reasons, and Warren's pattern rule), or
    None: what the API checks before proposing, and `apply` again for a log written otherwise."""
    whole_number = isinstance(priority, int) and not isinstance(priority, bool)
    return (
        check_pattern(pattern)
        or check_definition(definition, operator)
        or (None if apply_to in APPLY_TO else f"'{apply_to}' is not a valid apply-to value")
        or (None if whole_number else "priority must be an integer")
    )


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _applies(policy: Policy, kind: str, queue_type: str | None) -> bool:
    if policy.apply_to == "all":
        return True
    if kind == "exchange":
        return policy.apply_to == "exchanges"
    return policy.apply_to == "queues" or policy.apply_to == f"{queue_type}_queues"


def _chosen(
    policies: dict[str, Policy], kind: str, name: str, queue_type: str | None = None
) -> Policy | None:
    """The matching policy of the highest priority (ties: the first name, so every node
    chooses the same one)."""
    best: Policy | None = None
    for policy in policies.values():
        if not _applies(policy, kind, queue_type):
            continue
        if _compiled(policy.pattern).search(name) is None:
            continue
        if best is None or (policy.priority, best.name) > (best.priority, policy.name):
            best = policy
    return best


def queue_policies(vhost: Vhost, queue: Queue) -> tuple[Policy | None, Policy | None]:
    """The queue's policy and operator policy."""
    return (
        _chosen(vhost.policies, "queue", queue.name, queue.queue_type),
        _chosen(vhost.operator_policies, "queue", queue.name, queue.queue_type),
    )


def exchange_policy(vhost: Vhost, exchange: Exchange) -> Policy | None:
    return _chosen(vhost.policies, "exchange", exchange.name)


def merged_definition(policy: Policy | None, operator: Policy | None) -> dict[str, typing.Any]:
    """rabbit_policy:merge_operator_definitions: the operator policy caps what both set."""
    definition = dict(policy.definition) if policy is not None else {}
    for key, value in (operator.definition if operator is not None else {}).items():
        if key not in definition:
            definition[key] = value
        elif key == "delivery-limit":
            definition[key] = _delivery_limit(definition[key], value)
        elif is_integer(value) and is_integer(definition[key]):
            definition[key] = min(definition[key], value)
        else:
            definition[key] = value  # overflow: the operator's
    return definition


def effective_arguments(
    arguments: c.Arguments, queue_type: str, definition: dict[str, typing.Any]
) -> c.Arguments:
    """The queue's arguments with what its policies add, by RabbitMQ's rule for each key."""
    effective = dict(arguments)
    for key, value in definition.items():
        if key not in QUEUE_KEYS or key in UNSUPPORTED.get(queue_type, ()):
            continue
        argument, resolve = QUEUE_KEYS[key]
        if key == "overflow" and queue_type == "quorum":
            resolve = _policy_wins  # rabbit_quorum_queue: policy_has_precedence
        effective[argument] = (
            value if argument not in arguments else resolve(value, arguments[argument])
        )
    return effective
