"""Connections, channels and consumers: this node's own, and the other members' asked of them."""

from __future__ import annotations

import logging
import urllib.parse

from aiohttp import web

from warrenmq.amqp.spec import ReplyCode
from warrenmq.cluster.management import shapes
from warrenmq.cluster.management.api import (
    ApiError,
    Json,
    ManagementApi,
    json_response,
    not_found,
)
from warrenmq.cluster.session import Session

log = logging.getLogger(__name__)


async def _with_members(
    api: ManagementApi, request: web.Request, path: str, local: list[Json]
) -> list[Json]:
    """This node's entries and every other member's, as far as the caller may see them
    (a management user sees only its own connections and channels)."""
    found = local + await api.members.lists(request, path)
    if not api.sees_all(request):
        found = [entry for entry in found if entry["user"] == request["user"]]
    return found


async def listed(api: ManagementApi, request: web.Request) -> list[Json]:
    local = [
        shapes.connection_json(api.node, session)
        for session in api.node.sessions.values()
        if session.vhost
    ]
    return await _with_members(api, request, "/api/connections", local)


async def connections(api: ManagementApi, request: web.Request) -> web.Response:
    return json_response(await listed(api, request))


async def close_connection(api: ManagementApi, request: web.Request) -> web.Response:
    """DELETE /api/connections/NAME: whichever node holds it closes it with 320."""
    name = request.match_info["name"]
    for session in list(api.node.sessions.values()):
        if session.vhost and shapes.connection_name(session) == name:
            if not api.sees_all(request) and session.user != request["user"]:
                raise ApiError(401, "not_authorised", "Not administrator user")
            reason = request.headers.get("X-Reason", "Closed via management plugin")
            session.close(ReplyCode.CONNECTION_FORCED, reason)
            return web.Response(status=204)
    path = f"/api/connections/{urllib.parse.quote(name, safe='')}"
    if any(status == 204 for status, _ in await api.members.ask(request, "DELETE", path)):
        return web.Response(status=204)
    raise not_found()


async def channels(api: ManagementApi, request: web.Request) -> web.Response:
    local = [
        channel
        for session in api.node.sessions.values()
        if session.vhost and isinstance(session, Session)  # AMQP 1.0 has sessions, not channels
        for channel in shapes.channel_json(api.node, session)
    ]
    return json_response(await _with_members(api, request, "/api/channels", local))


async def consumers(api: ManagementApi, request: web.Request) -> web.Response:
    local = {
        (session.serial, channel.ref.channel): (session, number)
        for session in api.node.sessions.values()
        for number, channel in session.channels.items()
    }
    found = []
    for vhost_name, vhost in api.vhosts(request):
        for queue in vhost.queues.values():
            for consumer in queue.consumers:
                ref = consumer.channel
                details: Json = {"node": ref.node}
                mine = local.get((ref.connection, ref.channel))
                if ref.node == api.node.config.node_id and mine is not None:
                    session, number = mine
                    details |= {
                        "name": f"{shapes.connection_name(session)} ({number})",
                        "number": number,
                        "connection_name": shapes.connection_name(session),
                        "peer_host": session.protocol.peer[0],
                        "peer_port": session.protocol.peer[1],
                        "user": session.user,
                    }
                single, active = queue.single_active_consumer, consumer.active
                found.append(
                    {
                        "consumer_tag": consumer.consumer_tag,
                        "queue": {"name": queue.name, "vhost": vhost_name},
                        "channel_details": details,
                        "ack_required": not consumer.no_ack,
                        "prefetch_count": consumer.prefetch_count,
                        "exclusive": consumer.exclusive,
                        "active": active,
                        "activity_status": (
                            "waiting" if not active else "single_active" if single else "up"
                        ),
                        "priority": consumer.priority,
                        "arguments": {"x-priority": consumer.priority} if consumer.priority else {},
                    }
                )
    return json_response(found)
