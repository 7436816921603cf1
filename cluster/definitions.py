"""Definitions: RabbitMQ's JSON export of a broker's topology, and commands that import one.

The export has RabbitMQ's keys (users with salted hashes in rabbit_password_hashing_sha256 form,
vhosts, permissions, policies and operator policies, exchanges, queues, bindings), so a file
exported from RabbitMQ imports into Warren and one exported here imports into RabbitMQ. What
clients create and the broker removes by itself is left out, as RabbitMQ leaves it out:
exclusive queues, the default exchange and the amq.* exchanges every vhost has, and the default
exchange's implicit bindings.
"""

from __future__ import annotations

import re
import typing

from warrenmq.cluster.passwords import HASHING_ALGORITHM, hash_password, is_password_hash
from warrenmq.replication import commands as c
from warrenmq.replication import policies
from warrenmq.replication.queries import BindingView, ExchangeView, PolicyView, Queries

__all__ = [
    "add_user_command",
    "bind_command",
    "binding_definition",
    "declare_exchange_command",
    "declare_queue_command",
    "exchange_definition",
    "ignored_sections",
    "export",
    "import_commands",
    "policy_definition",
    "set_permissions_command",
    "set_policy_command",
]

Json = typing.Any


def export(broker: Queries, version: str) -> dict[str, Json]:
    queues, exchanges, bindings = [], [], []
    for vhost_name in broker.query_vhost_names():
        vhost = broker.query_vhost(vhost_name)
        assert vhost is not None
        exclusive = {name for name, queue in vhost.queues.items() if queue.exclusive}
        queues += [
            {
                "name": queue.name,
                "vhost": vhost_name,
                "durable": queue.durable,
                "auto_delete": queue.auto_delete,
                "arguments": queue.arguments,
            }
            for queue in vhost.queues.values()
            if queue.name not in exclusive
        ]
        for exchange in vhost.exchanges.values():
            if exchange.name and not exchange.name.startswith("amq."):
                exchanges.append(exchange_definition(exchange))
            bindings += [
                binding_definition(vhost_name, binding)
                for binding in exchange.bindings
                if not (binding.destination_kind == "queue" and binding.destination in exclusive)
            ]
    return {
        "rabbit_version": version,
        "rabbitmq_version": version,
        "product_name": "Warren",
        "product_version": version,
        "users": [
            {
                "name": name,
                "password_hash": user.password_hash,
                "hashing_algorithm": HASHING_ALGORITHM,
                "tags": list(user.tags),
                "limits": {},
            }
            for name, user in broker.query_users().items()
        ],
        "vhosts": [
            {"name": name, "limits": [], "metadata": {}} for name in broker.query_vhost_names()
        ],
        "permissions": [
            {
                "user": user,
                "vhost": vhost,
                "configure": permission.configure,
                "write": permission.write,
                "read": permission.read,
            }
            for (user, vhost), permission in broker.query_permissions().items()
        ],
        "topic_permissions": [],
        # RabbitMQ exports operator policies as runtime parameters of this component
        "parameters": [
            {
                "value": {
                    key: value
                    for key, value in policy_definition(each).items()
                    if key not in ("vhost", "name")
                },
                "vhost": each.vhost,
                "component": OPERATOR_POLICY,
                "name": each.name,
            }
            for each in broker.query_policies(operator=True)
        ],
        "global_parameters": [],
        "policies": [policy_definition(each) for each in broker.query_policies()],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    }


def policy_definition(policy: PolicyView) -> dict[str, Json]:
    """A policy as RabbitMQ's API and definitions files show it."""
    return {
        "vhost": policy.vhost,
        "name": policy.name,
        "pattern": policy.pattern,
        "apply-to": policy.apply_to,
        "definition": policy.definition,
        "priority": policy.priority,
    }


def set_policy_command(
    vhost: str, name: str, body: dict[str, Json], operator: bool = False
) -> c.SetPolicy:
    """From the API's PUT body or a definitions entry; ValueError with RabbitMQ's reason."""
    if not isinstance(body, dict):
        raise ValueError("policy must be a JSON object")
    pattern = body.get("pattern")
    definition = body.get("definition")
    apply_to = body.get("apply-to", "all")
    priority = body.get("priority", 0)
    if isinstance(priority, str) and priority.lstrip("-").isdigit():
        priority = int(priority)  # rabbitmqadmin and older UIs send it as text
    reason = policies.check_policy(pattern, definition, apply_to, priority, operator)
    if reason is not None:
        raise ValueError(reason)
    return c.SetPolicy(
        vhost=vhost,
        name=name,
        pattern=typing.cast(str, pattern),
        apply_to=str(apply_to),
        priority=typing.cast(int, priority),
        definition=dict(typing.cast(dict[str, Json], definition)),
        operator=operator,
    )


def exchange_definition(exchange: ExchangeView) -> dict[str, Json]:
    return {
        "name": exchange.name,
        "vhost": exchange.vhost,
        "type": exchange.type,
        "durable": exchange.durable,
        "auto_delete": exchange.auto_delete,
        "internal": exchange.internal,
        "arguments": exchange.arguments,
    }


def binding_definition(vhost_name: str, binding: BindingView) -> dict[str, Json]:
    return {
        "source": binding.source,
        "vhost": vhost_name,
        "destination": binding.destination,
        "destination_type": binding.destination_kind,
        "routing_key": binding.routing_key,
        "arguments": binding.arguments,
    }


def _flag(body: dict[str, Json], name: str, default: bool) -> bool:
    """A boolean field; RabbitMQ's API and rabbitmqadmin also send "true" and "false"."""
    value = body.get(name, default)
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _tags(value: Json) -> tuple[str, ...]:
    """RabbitMQ writes tags as a list (3.9 on) or a comma-separated string (before)."""
    if isinstance(value, str):
        return tuple(tag.strip() for tag in value.split(",") if tag.strip())
    return tuple(str(tag) for tag in value or ())


def add_user_command(name: str, body: dict[str, Json]) -> c.AddUser:
    """From a definitions entry or the API's PUT body: `password` is hashed here, a
    `password_hash` must be RabbitMQ's sha256 form; neither makes a user that cannot log in."""
    if "password" in body:
        password_hash = hash_password(str(body["password"]))
    else:
        password_hash = str(body.get("password_hash") or "")
        algorithm = body.get("hashing_algorithm", HASHING_ALGORITHM)
        if algorithm != HASHING_ALGORITHM:
            raise ValueError(f"unsupported hashing_algorithm {algorithm!r} for user {name!r}")
        if password_hash and not is_password_hash(password_hash):
            raise ValueError(f"password_hash of user {name!r} is not {HASHING_ALGORITHM}")
    return c.AddUser(user=name, password_hash=password_hash, tags=_tags(body.get("tags")))


def set_permissions_command(user: str, vhost: str, body: dict[str, Json]) -> c.SetPermissions:
    patterns = {action: str(body.get(action, "")) for action in ("configure", "write", "read")}
    for action, pattern in patterns.items():
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"invalid_regexp for {action}: {pattern!r}: {error}") from error
    return c.SetPermissions(user=user, vhost=vhost, **patterns)


def declare_exchange_command(
    channel: c.ChannelRef, vhost: str, body: dict[str, Json]
) -> c.DeclareExchange:
    return c.DeclareExchange(
        channel=channel,
        vhost=vhost,
        exchange=str(body["name"]),
        type=str(body.get("type", "direct")),
        passive=False,
        durable=_flag(body, "durable", True),
        auto_delete=_flag(body, "auto_delete", False),
        internal=_flag(body, "internal", False),
        arguments=dict(body.get("arguments") or {}),
    )


def declare_queue_command(
    channel: c.ChannelRef, vhost: str, body: dict[str, Json]
) -> c.DeclareQueue:
    return c.DeclareQueue(
        channel=channel,
        vhost=vhost,
        queue=str(body["name"]),
        server_named=False,
        passive=False,
        durable=_flag(body, "durable", True),
        exclusive=False,
        auto_delete=_flag(body, "auto_delete", False),
        arguments=dict(body.get("arguments") or {}),
    )


def bind_command(
    channel: c.ChannelRef, vhost: str, body: dict[str, Json], unbind: bool = False
) -> c.Command:
    routing_key = str(body.get("routing_key", ""))
    arguments = dict(body.get("arguments") or {})
    if body.get("destination_type", "queue") == "queue":
        return (c.UnbindQueue if unbind else c.BindQueue)(
            channel=channel,
            vhost=vhost,
            queue=str(body["destination"]),
            exchange=str(body["source"]),
            routing_key=routing_key,
            arguments=arguments,
        )
    return (c.UnbindExchange if unbind else c.BindExchange)(
        channel=channel,
        vhost=vhost,
        destination=str(body["destination"]),
        source=str(body["source"]),
        routing_key=routing_key,
        arguments=arguments,
    )


OPERATOR_POLICY = "operator_policy"  # the runtime parameter component of operator policies
# sections of RabbitMQ's definitions that Warren does not have (yet): an import skips them
_UNSUPPORTED = ("parameters", "global_parameters", "topic_permissions")


def _operator_policies(definitions: dict[str, Json]) -> list[Json]:
    return [
        entry
        for entry in definitions.get("parameters", [])
        if isinstance(entry, dict) and entry.get("component") == OPERATOR_POLICY
    ]


def ignored_sections(definitions: dict[str, Json]) -> list[str]:
    """The non-empty sections an import leaves out, to say so rather than drop them quietly
    (parameters other than operator policies)."""
    kept = {"parameters": len(_operator_policies(definitions))}
    return [name for name in _UNSUPPORTED if len(definitions.get(name) or ()) > kept.get(name, 0)]


def import_commands(
    definitions: dict[str, Json], next_channel: typing.Callable[[], c.ChannelRef]
) -> list[c.Command]:
    """In dependency order: vhosts and users before permissions, exchanges and queues before
    the bindings between them. Raises ValueError (or KeyError, TypeError) on a bad file."""
    commands: list[c.Command] = [
        c.AddVhost(vhost=str(vhost["name"])) for vhost in definitions.get("vhosts", [])
    ]
    commands += [add_user_command(str(user["name"]), user) for user in definitions.get("users", [])]
    commands += [
        set_permissions_command(str(entry["user"]), str(entry["vhost"]), entry)
        for entry in definitions.get("permissions", [])
    ]
    commands += [
        set_policy_command(str(entry["vhost"]), str(entry["name"]), entry)
        for entry in definitions.get("policies", [])
    ]
    commands += [
        set_policy_command(str(entry["vhost"]), str(entry["name"]), entry["value"], True)
        for entry in _operator_policies(definitions)
    ]
    commands += [
        declare_exchange_command(next_channel(), str(exchange["vhost"]), exchange)
        for exchange in definitions.get("exchanges", [])
    ]
    commands += [
        declare_queue_command(next_channel(), str(queue["vhost"]), queue)
        for queue in definitions.get("queues", [])
    ]
    commands += [
        bind_command(next_channel(), str(binding["vhost"]), binding)
        for binding in definitions.get("bindings", [])
    ]
    return commands
