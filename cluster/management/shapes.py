"""The JSON shapes RabbitMQ's management API returns, as pure functions of the read models
(replication/queries.py) and of this node's sessions: unit-tested without aiohttp."""

from __future__ import annotations

import base64
import hashlib
import typing

import orjson

from warrenmq.cluster import definitions
from warrenmq.replication import commands as c
from warrenmq.replication.queries import ExchangeView, QueueView, VhostView

if typing.TYPE_CHECKING:
    from warrenmq.cluster.amqp10.session import V1Session
    from warrenmq.cluster.node import Node
    from warrenmq.cluster.session import Session

Json = typing.Any


def connection_name(session: Session | V1Session) -> str:
    peer, local = session.protocol.peer, session.protocol.local
    return f"{peer[0]}:{peer[1]} -> {local[0]}:{local[1]}"


def connection_json(node: Node, session: Session | V1Session) -> Json:
    protocol = session.protocol
    return {
        "name": connection_name(session),
        "node": node.config.node_id,
        "user": session.user,
        "vhost": session.vhost,
        "peer_host": protocol.peer[0],
        "peer_port": protocol.peer[1],
        "host": protocol.local[0],
        "port": protocol.local[1],
        "state": "blocked" if session.blocked_reason else "running",
        "channels": len(session.channels),
        "ssl": protocol.tls,
        **protocol.tls_details,
        "type": "network",
        "connected_at": protocol.connected_at_ms,
        **session.connection_details(),
    }


def channel_json(node: Node, session: Session) -> list[Json]:
    name = connection_name(session)
    channels = []
    for number, channel in session.channels.items():
        state = node.broker.query_channel(channel.ref)
        channels.append(
            {
                "name": f"{name} ({number})",
                "number": number,
                "node": node.config.node_id,
                "user": session.user,
                "vhost": session.vhost,
                "connection_details": {
                    "name": name,
                    "peer_host": session.protocol.peer[0],
                    "peer_port": session.protocol.peer[1],
                },
                "confirm": channel.confirm,
                "transactional": channel.tx is not None,
                "consumer_count": state.consumers if state else 0,
                "messages_unacknowledged": state.unacked if state else 0,
                "prefetch_count": state.prefetch_count if state else 0,
                "global_prefetch_count": state.global_prefetch_count if state else 0,
                "state": "running",
            }
        )
    return channels


def exchange_json(exchange: ExchangeView) -> Json:
    return {
        **definitions.exchange_definition(exchange),
        "user_who_performed_action": "",
    }


def placement(node: Node) -> Json:
    """Where every queue lives: the one Raft group's leader and members (the same for all
    queues, so a listing works it out once)."""
    status = node.cluster_status()
    return {
        "node": status["leader"],
        "leader": status["leader"],
        "members": [member["node_id"] for member in status["members"]],
        "online": [member["node_id"] for member in status["members"] if member["alive"]],
    }


def queue_json(placement: Json, queue: QueueView) -> Json:
    ready, unacked = queue.ready, queue.unacked
    return {
        "name": queue.name,
        "vhost": queue.vhost,
        "durable": queue.durable,
        "auto_delete": queue.auto_delete,
        "exclusive": queue.exclusive,
        "arguments": queue.arguments,
        "type": queue.type,
        "state": "running",
        **placement,
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "message_bytes_ready": queue.ready_bytes,
        "consumers": len(queue.consumers),
        "single_active_consumer_ctag": queue.active_consumer_tag,
        "policy": queue.policy,
        "operator_policy": queue.operator_policy,
        "effective_policy_definition": queue.policy_definition or {},
    }


def properties_key(routing_key: str, arguments: c.Arguments) -> str:
    """How RabbitMQ's API names one binding in a path: its key, plus a digest of arguments."""
    if not arguments:
        return routing_key or "~"
    digest = hashlib.sha256(orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)).digest()
    return f"{routing_key}~{base64.urlsafe_b64encode(digest[:8]).decode().rstrip('=')}"


def bindings_json(vhost_name: str, vhost: VhostView) -> list[Json]:
    bindings = [
        {  # the default exchange's implicit binding of every queue (RabbitMQ lists them)
            "source": "",
            "vhost": vhost_name,
            "destination": name,
            "destination_type": "queue",
            "routing_key": name,
            "arguments": {},
            "properties_key": name,
        }
        for name in vhost.queues
    ]
    for exchange in vhost.exchanges.values():
        for binding in exchange.bindings:
            bindings.append(
                {
                    **definitions.binding_definition(vhost_name, binding),
                    "properties_key": properties_key(binding.routing_key, binding.arguments),
                }
            )
    return bindings
