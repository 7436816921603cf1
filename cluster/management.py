"""The management HTTP API (port 15672), on aiohttp: RabbitMQ's paths, JSON fields and codes.

Reads come from this node's copy of the replicated state (vhosts, users, permissions, exchanges,
bindings, queues, consumers) or from its own client connections; connections, channels and node
figures of the other members are asked of their APIs with the caller's credentials (`?scope=node`
answers for one node only). Writes become commands through the Raft log, like AMQP methods.

Access follows the management plugin's user tags: `management` sees the vhosts it has
permissions in and its own connections, `monitoring` sees everything, `administrator` may also
manage users, vhosts, permissions and definitions. `guest` may log in over loopback only, as for
AMQP. The one path without credentials is Warren's cluster status, for container health checks.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import math
import ssl
import time
import typing
import urllib.parse

import aiohttp
import orjson
from aiohttp import web

from warrenmq.amqp.spec import ReplyCode
from warrenmq.cluster import definitions, http_messages
from warrenmq.cluster.auth import check_login
from warrenmq.cluster.logs import log_event
from warrenmq.cluster.passwords import HASHING_ALGORITHM
from warrenmq.cluster.plain import plain_table
from warrenmq.replication import commands as c
from warrenmq.replication.queries import ExchangeView, QueueView, VhostView
from warrenmq.replication.replies import GetOk, Refused, Reply, Routed

if typing.TYPE_CHECKING:
    from warrenmq.cluster.node import Node
    from warrenmq.cluster.session import Session

__all__ = ["CLUSTER_STATUS_PATH", "start_management"]

CLUSTER_STATUS_PATH = "/api/warren/cluster-status"
GET_COUNT_MAX = 10_000  # messages one POST …/get may take
PEER_TIMEOUT_S = 2.0  # how long a member's API gets to answer for its own connections
MANAGEMENT_TAGS = frozenset({"administrator", "monitoring", "management", "policymaker"})
# RabbitMQ's health-check protocol names, and the aliases rabbitmq-diagnostics accepts
_PROTOCOLS = {"amqp": "amqp", "amqp091": "amqp", "amqp0.9.1": "amqp", "amqp/ssl": "amqp/ssl"}
_PROTOCOLS |= {"amqps": "amqp/ssl", "http": "http", "https": "https"}
_PROTOCOLS |= {"http/prometheus": "http/prometheus", "prometheus": "http/prometheus"}

Json = typing.Any

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than success: status, RabbitMQ's `error` and `reason` fields."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason


def _not_found() -> ApiError:
    return ApiError(404, "Object Not Found", "Not Found")


def _bad_request(reason: str) -> ApiError:
    return ApiError(400, "bad_request", reason)


def _api_integer(value: object) -> int:
    """A number in a request body as RabbitMQ's parse_int reads it: an integer, a number
    (truncated) or a string of digits; anything else is a 400, not a 500."""
    if isinstance(value, bool):
        raise _bad_request(f"{{not_integer,{value}}}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    try:
        return int(str(value), 10)
    except ValueError:
        raise _bad_request(f"{{not_integer,{value}}}") from None


def json_response(data: Json, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


# --- the shapes RabbitMQ's API returns ---------------------------------------------------


def connection_name(session: Session) -> str:
    peer, local = session.protocol.peer, session.protocol.local
    return f"{peer[0]}:{peer[1]} -> {local[0]}:{local[1]}"


def _connection_json(node: Node, session: Session) -> Json:
    protocol, connection = session.protocol, session.connection
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
        "protocol": "AMQP 0-9-1",
        "ssl": protocol.tls,
        **protocol.tls_details,
        "type": "network",
        "auth_mechanism": connection.mechanism,
        "client_properties": plain_table(connection.client_properties),
        "connected_at": protocol.connected_at_ms,
        "timeout": connection.heartbeat_s,
        "frame_max": connection.frame_max_bytes,
        "channel_max": connection.channel_max,
    }


def _channel_json(node: Node, session: Session) -> list[Json]:
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


def _exchange_json(exchange: ExchangeView) -> Json:
    return {
        **definitions.exchange_definition(exchange),
        "user_who_performed_action": "",
    }


def _placement(node: Node) -> Json:
    """Where every queue lives: the one Raft group's leader and members (the same for all
    queues, so a listing works it out once)."""
    status = node.cluster_status()
    return {
        "node": status["leader"],
        "leader": status["leader"],
        "members": [member["node_id"] for member in status["members"]],
        "online": [member["node_id"] for member in status["members"] if member["alive"]],
    }


def _queue_json(placement: Json, queue: QueueView) -> Json:
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
        "policy": None,
    }


def properties_key(routing_key: str, arguments: c.Arguments) -> str:
    """How RabbitMQ's API names one binding in a path: its key, plus a digest of arguments."""
    if not arguments:
        return routing_key or "~"
    digest = hashlib.sha256(orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)).digest()
    return f"{routing_key}~{base64.urlsafe_b64encode(digest[:8]).decode().rstrip('=')}"


def _bindings_json(vhost_name: str, vhost: VhostView) -> list[Json]:
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


# --- the application ----------------------------------------------------------------------


class ManagementApi:
    def __init__(self, node: Node, peer_ssl: ssl.SSLContext | bool) -> None:
        self.node = node
        self.broker = node.broker
        self._peer_ssl = peer_ssl
        self._client: aiohttp.ClientSession | None = None

    # --- access -------------------------------------------------------------------------

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: typing.Callable[[web.Request], typing.Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        try:
            if request.path != CLUSTER_STATUS_PATH:
                self._authenticate(request)
            return await handler(request)
        except ApiError as error:
            response = json_response({"error": error.error, "reason": error.reason}, error.status)
            if error.status == 401:
                response.headers["WWW-Authenticate"] = 'Basic realm="RabbitMQ Management"'
            return response

    def _authenticate(self, request: web.Request) -> None:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            username, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            username = password = ""
        if scheme.lower() != "basic" or not username:
            raise ApiError(401, "not_authorized", "Not_Authorized")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if not check_login(
            self.node, username, password, peer or (request.remote or "", 0), "http"
        ):
            raise ApiError(401, "not_authorized", "Login failed")
        user = self.broker.query_user(username)
        assert user is not None
        if not MANAGEMENT_TAGS & set(user.tags):
            raise ApiError(401, "not_authorized", "Not management user")
        request["user"] = username
        request["tags"] = set(user.tags)

    @staticmethod
    def _require(request: web.Request, tag: str) -> None:
        """administrator may do all; monitoring may read everything."""
        tags = request["tags"]
        if "administrator" in tags or (tag == "monitoring" and "monitoring" in tags):
            return
        raise ApiError(401, "not_authorized", f"Not {tag} user")

    @staticmethod
    def _sees_all(request: web.Request) -> bool:
        return bool({"administrator", "monitoring"} & request["tags"])

    def _visible_vhosts(self, request: web.Request) -> list[str]:
        names = self.broker.query_vhost_names()
        if self._sees_all(request):
            return names
        return [name for name in names if self.broker.query_permission(request["user"], name)]

    def _vhost(self, request: web.Request) -> tuple[str, VhostView]:
        name = request.match_info["vhost"]
        vhost = self.broker.query_vhost(name)
        if vhost is None or name not in self._visible_vhosts(request):
            raise _not_found()
        return name, vhost

    def _vhosts(self, request: web.Request) -> list[tuple[str, VhostView]]:
        if "vhost" in request.match_info:
            return [self._vhost(request)]
        views = [(name, self.broker.query_vhost(name)) for name in self._visible_vhosts(request)]
        return [(name, view) for name, view in views if view is not None]

    def _permit(self, request: web.Request, vhost: str, action: str, name: str) -> None:
        """A non-administrator acts on a vhost's objects as its AMQP permissions allow."""
        if "administrator" in request["tags"]:
            return
        permission = self.broker.query_permission(request["user"], vhost)
        if permission is None or not permission.permits(action, name):
            raise ApiError(
                401,
                "not_authorised",
                f"access to '{name}' in vhost '{vhost}' refused for user '{request['user']}'",
            )

    # --- writes go through the log ---------------------------------------------------------

    async def _submit(self, command: c.Command) -> Reply:
        reply = await self.node.submit(command)
        if isinstance(reply, Refused):
            if reply.reply_code in (404, 530):
                raise _not_found()
            raise _bad_request(reply.reply_text)
        return reply

    # --- reads from the other members ----------------------------------------------------

    async def _ask_members(
        self, request: web.Request, method: str, path: str
    ) -> list[tuple[int, Json]]:
        """Each other member's (status, JSON) for itself alone; (0, None) if it did not answer.
        A request that is itself such a question (`?scope=node`) asks nobody."""
        if request.query.get("scope") == "node":
            return []
        if self._client is None:
            self._client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
            )
        client = self._client
        scheme = "https" if self._peer_ssl is not False else "http"
        headers = {
            name: request.headers[name]
            for name in ("Authorization", "X-Reason")
            if name in request.headers
        }

        async def ask(host: str, port: int) -> tuple[int, Json]:
            url = f"{scheme}://{host}:{port}{path}?scope=node"
            try:
                async with client.request(
                    method, url, headers=headers, ssl=self._peer_ssl
                ) as answer:
                    content = await answer.read()
                    return answer.status, orjson.loads(content) if content else None
            except (TimeoutError, aiohttp.ClientError, ValueError):
                return 0, None

        peers = self.node.config.peers
        return await asyncio.gather(*(ask(m.host, m.management_port) for m in peers))

    async def _from_members(self, request: web.Request, path: str) -> list[Json]:
        """The lists the other members keep of their own (connections, channels, nodes)."""
        answers = await self._ask_members(request, "GET", path)
        return [item for status, answer in answers if status == 200 for item in answer]

    async def close(self, _: web.Application) -> None:
        if self._client is not None:
            await self._client.close()

    # --- overview, nodes ------------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.Response:
        node = self.node
        counters = node.counters
        vhosts = self._vhosts(request)
        queues = [queue for _, vhost in vhosts for queue in vhost.queues.values()]
        connections = await self._connections(request)
        channel_count = sum(connection["channels"] for connection in connections)
        ready = sum(queue.ready for queue in queues)
        unacked = sum(queue.unacked for queue in queues)
        return json_response(
            {
                "management_version": node.version,
                "rabbitmq_version": node.version,
                "product_name": "Warren",
                "product_version": node.version,
                "cluster_name": "warren",
                "node": node.config.node_id,
                "object_totals": {
                    "connections": len(connections),
                    "channels": channel_count,
                    "exchanges": sum(len(vhost.exchanges) for _, vhost in vhosts),
                    "queues": len(queues),
                    "consumers": sum(len(queue.consumers) for queue in queues),
                },
                "queue_totals": {
                    "messages": ready + unacked,
                    "messages_ready": ready,
                    "messages_unacknowledged": unacked,
                },
                "message_stats": {  # this node's clients, since it started
                    "publish": counters.received,
                    "confirm": counters.confirmed,
                    "return_unroutable": counters.unroutable_returned,
                    "drop_unroutable": counters.unroutable_dropped,
                    "deliver_get": counters.delivered,
                    "redeliver": counters.redelivered,
                    "ack": counters.acknowledged,
                },
                "listeners": self._listeners(),
            }
        )

    def _listeners(self) -> list[Json]:
        config = self.node.config
        listeners = []
        for member in config.cluster:
            listeners.append(
                {
                    "node": member.node_id,
                    "protocol": "amqp",
                    "ip_address": member.host,
                    "port": member.amqp_port,
                }
            )
            listeners.append(
                {
                    "node": member.node_id,
                    "protocol": "https" if config.management_tls else "http",
                    "ip_address": member.host,
                    "port": member.management_port,
                }
            )
        for protocol, port in self.node.local_listeners().items():
            if protocol in ("amqp/ssl", "http/prometheus"):
                listeners.append(
                    {
                        "node": config.node_id,
                        "protocol": protocol,
                        "ip_address": config.host,
                        "port": port,
                    }
                )
        return listeners

    def _node_json(self) -> Json:
        node = self.node
        reading = node.resources.reading
        local = node.resources.local_alarms
        return {
            "name": node.config.node_id,
            "type": "disc",
            "running": True,
            "os_pid": str(node.pid),
            "mem_used": reading.memory_used_bytes,
            "mem_limit": node.resources.memory_limit_bytes,
            "mem_alarm": "memory" in local,
            "disk_free": reading.disk_free_bytes,
            "disk_free_limit": node.resources.disk_free_limit_bytes,
            "disk_free_alarm": "disk" in local,
            "fd_used": reading.open_fds,
            "fd_total": reading.max_fds,
            "uptime": int((time.time() - node.started_at_s) * 1000),
            "being_drained": False,
            "partitions": [],  # one Raft group: a minority stops serving, it never diverges
            "raft_leader": node.log.is_leader,
        }

    async def nodes(self, request: web.Request) -> web.Response:
        self._require(request, "monitoring")
        found = [self._node_json(), *await self._from_members(request, "/api/nodes")]
        named = {entry["name"] for entry in found}
        for member in self.node.config.cluster:
            if member.node_id not in named and request.query.get("scope") != "node":
                found.append({"name": member.node_id, "type": "disc", "running": False})
        return json_response(sorted(found, key=lambda entry: entry["name"]))

    async def one_node(self, request: web.Request) -> web.Response:
        self._require(request, "monitoring")
        name = request.match_info["name"]
        if name == self.node.config.node_id:
            return json_response(self._node_json())
        for entry in await self._from_members(request, "/api/nodes"):
            if entry.get("name") == name:
                return json_response(entry)
        raise _not_found()

    # --- connections, channels, consumers --------------------------------------------------

    async def _with_members(self, request: web.Request, path: str, local: list[Json]) -> list[Json]:
        """This node's entries and every other member's, as far as the caller may see them
        (a management user sees only its own connections and channels)."""
        found = local + await self._from_members(request, path)
        if not self._sees_all(request):
            found = [entry for entry in found if entry["user"] == request["user"]]
        return found

    async def _connections(self, request: web.Request) -> list[Json]:
        local = [
            _connection_json(self.node, session)
            for session in self.node.sessions.values()
            if session.vhost
        ]
        return await self._with_members(request, "/api/connections", local)

    async def connections(self, request: web.Request) -> web.Response:
        return json_response(await self._connections(request))

    async def close_connection(self, request: web.Request) -> web.Response:
        """DELETE /api/connections/NAME: whichever node holds it closes it with 320."""
        name = request.match_info["name"]
        for session in list(self.node.sessions.values()):
            if session.vhost and connection_name(session) == name:
                if not self._sees_all(request) and session.user != request["user"]:
                    raise ApiError(401, "not_authorised", "Not administrator user")
                reason = request.headers.get("X-Reason", "Closed via management plugin")
                session.close(ReplyCode.CONNECTION_FORCED, reason)
                return web.Response(status=204)
        path = f"/api/connections/{urllib.parse.quote(name, safe='')}"
        if any(status == 204 for status, _ in await self._ask_members(request, "DELETE", path)):
            return web.Response(status=204)
        raise _not_found()

    async def channels(self, request: web.Request) -> web.Response:
        local = [
            channel
            for session in self.node.sessions.values()
            if session.vhost
            for channel in _channel_json(self.node, session)
        ]
        return json_response(await self._with_members(request, "/api/channels", local))

    async def consumers(self, request: web.Request) -> web.Response:
        local = {
            (session.serial, channel.ref.channel): (session, number)
            for session in self.node.sessions.values()
            for number, channel in session.channels.items()
        }
        found = []
        for vhost_name, vhost in self._vhosts(request):
            for queue in vhost.queues.values():
                for consumer in queue.consumers:
                    ref = consumer.channel
                    details: Json = {"node": ref.node}
                    mine = local.get((ref.connection, ref.channel))
                    if ref.node == self.node.config.node_id and mine is not None:
                        session, number = mine
                        details |= {
                            "name": f"{connection_name(session)} ({number})",
                            "number": number,
                            "connection_name": connection_name(session),
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
                            "arguments": {"x-priority": consumer.priority}
                            if consumer.priority
                            else {},
                        }
                    )
        return json_response(found)

    # --- vhosts, users, permissions --------------------------------------------------------

    def _vhost_json(self, name: str, vhost: VhostView) -> Json:
        ready = sum(queue.ready for queue in vhost.queues.values())
        unacked = sum(queue.unacked for queue in vhost.queues.values())
        return {
            "name": name,
            "description": "",
            "tags": [],
            "messages": ready + unacked,
            "messages_ready": ready,
            "messages_unacknowledged": unacked,
            "cluster_state": {m.node_id: "running" for m in self.node.config.cluster},
        }

    async def vhosts(self, request: web.Request) -> web.Response:
        return json_response(
            [self._vhost_json(name, vhost) for name, vhost in self._vhosts(request)]
        )

    async def one_vhost(self, request: web.Request) -> web.Response:
        return json_response(self._vhost_json(*self._vhost(request)))

    async def put_vhost(self, request: web.Request) -> web.Response:
        self._require(request, "administrator")
        name = request.match_info["vhost"]
        existed = self.broker.query_vhost_exists(name)
        await self._submit(c.AddVhost(vhost=name))
        if not existed:  # RabbitMQ: whoever creates a vhost gets every permission in it
            await self._submit(
                c.SetPermissions(
                    user=request["user"], vhost=name, configure=".*", write=".*", read=".*"
                )
            )
        return web.Response(status=204 if existed else 201)

    async def delete_vhost(self, request: web.Request) -> web.Response:
        self._require(request, "administrator")
        await self._submit(c.DeleteVhost(vhost=request.match_info["vhost"]))
        return web.Response(status=204)

    def _user_json(self, name: str) -> Json:
        user = self.broker.query_user(name)
        if user is None:
            raise _not_found()
        return {
            "name": name,
            "password_hash": user.password_hash,
            "hashing_algorithm": HASHING_ALGORITHM,
            "tags": list(user.tags),
            "limits": {},
        }

    async def users(self, request: web.Request) -> web.Response:
        self._require(request, "administrator")
        return json_response([self._user_json(name) for name in self.broker.query_users()])

    async def one_user(self, request: web.Request) -> web.Response:
        self._require(request, "administrator")
        return json_response(self._user_json(request.match_info["user"]))

    async def whoami(self, request: web.Request) -> web.Response:
        return json_response({"name": request["user"], "tags": sorted(request["tags"])})

    async def put_user(self, request: web.Request) -> web.Response:
        self._require(request, "administrator")
        name = request.match_info["user"]
        body = await _body(request)
        if "tags" not in body:
            raise _bad_request("tags_not_present")
        existed = self.broker.query_user(name) is not None
        try:
            command = definitions.add_user_command(name, body)
        except ValueError as error:
            raise _bad_request(str(error)) from error
        await self._submit(command)
        return web.Response(status=204 if existed else 201)

    async def delete_user(self, request: web.Request) -> web.Response:
        self._require(request, "administrator")
        await self._submit(c.DeleteUser(user=request.match_info["user"]))
        return web.Response(status=204)

    def _permissions(self, user: str | None = None, vhost: str | None = None) -> list[Json]:
        return [
            {
                "user": each_user,
                "vhost": each_vhost,
                "configure": permission.configure,
                "write": permission.write,
                "read": permission.read,
            }
            for (each_user, each_vhost), permission in self.broker.query_permissions().items()
            if user in (None, each_user) and vhost in (None, each_vhost)
        ]

    async def permissions(self, request: web.Request) -> web.Response:
        self._require(request, "administrator")
        return json_response(
            self._permissions(request.match_info.get("user"), request.match_info.get("vhost"))
        )

    async def one_permission(self, request: web.Request) -> web.Response:
        self._require(request, "administrator")
        found = self._permissions(request.match_info["user"], request.match_info["vhost"])
        if not found:
            raise _not_found()
        return json_response(found[0])

    async def put_permission(self, request: web.Request) -> web.Response:
        self._require(request, "administrator")
        user, vhost = request.match_info["user"], request.match_info["vhost"]
        body = await _body(request)
        try:
            command = definitions.set_permissions_command(user, vhost, body)
        except ValueError as error:
            raise _bad_request(str(error)) from error
        if self.broker.query_user(user) is None or not self.broker.query_vhost_exists(vhost):
            raise _bad_request("vhost_or_user_not_found")
        existed = self.broker.query_permission(user, vhost) is not None
        await self._submit(command)
        return web.Response(status=204 if existed else 201)

    async def delete_permission(self, request: web.Request) -> web.Response:
        self._require(request, "administrator")
        user, vhost = request.match_info["user"], request.match_info["vhost"]
        if self.broker.query_permission(user, vhost) is None:
            raise _not_found()
        await self._submit(c.ClearPermissions(user=user, vhost=vhost))
        return web.Response(status=204)

    # --- exchanges, queues, bindings ---------------------------------------------------

    async def exchanges(self, request: web.Request) -> web.Response:
        return json_response(
            [
                _exchange_json(exchange)
                for _, vhost in self._vhosts(request)
                for exchange in vhost.exchanges.values()
            ]
        )

    @staticmethod
    def _exchange_name(request: web.Request) -> str:
        name = request.match_info["exchange"]
        return "" if name == "amq.default" else name

    async def one_exchange(self, request: web.Request) -> web.Response:
        vhost_name, vhost = self._vhost(request)
        exchange = vhost.exchanges.get(self._exchange_name(request))
        if exchange is None:
            raise _not_found()
        return json_response(_exchange_json(exchange))

    async def _declare(
        self,
        request: web.Request,
        name: str,
        existing: typing.Container[str],
        command: typing.Callable[[c.ChannelRef, str, dict[str, Json]], c.Command],
    ) -> web.Response:
        """PUT of an exchange or queue: declared like a client's declare; 201 when new."""
        vhost_name, _ = self._vhost(request)
        self._permit(request, vhost_name, "configure", name)
        body = await _body(request)
        existed = name in existing
        await self._submit(
            command(self.node.management_channel(), vhost_name, {**body, "name": name})
        )
        return web.Response(status=204 if existed else 201)

    async def put_exchange(self, request: web.Request) -> web.Response:
        _, vhost = self._vhost(request)
        return await self._declare(
            request,
            self._exchange_name(request),
            vhost.exchanges,
            definitions.declare_exchange_command,
        )

    async def delete_exchange(self, request: web.Request) -> web.Response:
        vhost_name, vhost = self._vhost(request)
        name = self._exchange_name(request)
        self._permit(request, vhost_name, "configure", name)
        if name not in vhost.exchanges:
            raise _not_found()
        await self._submit(
            c.DeleteExchange(
                channel=self.node.management_channel(),
                vhost=vhost_name,
                exchange=name,
                if_unused=request.query.get("if-unused") == "true",
            )
        )
        return web.Response(status=204)

    async def queues(self, request: web.Request) -> web.Response:
        placement = _placement(self.node)
        return json_response(
            [
                _queue_json(placement, queue)
                for _, vhost in self._vhosts(request)
                for queue in vhost.queues.values()
            ]
        )

    def _queue(self, request: web.Request) -> QueueView:
        _, vhost = self._vhost(request)
        queue = vhost.queues.get(request.match_info["queue"])
        if queue is None:
            raise _not_found()
        return queue

    async def one_queue(self, request: web.Request) -> web.Response:
        return json_response(_queue_json(_placement(self.node), self._queue(request)))

    async def put_queue(self, request: web.Request) -> web.Response:
        _, vhost = self._vhost(request)
        return await self._declare(
            request, request.match_info["queue"], vhost.queues, definitions.declare_queue_command
        )

    async def delete_queue(self, request: web.Request) -> web.Response:
        queue = self._queue(request)
        self._permit(request, queue.vhost, "configure", queue.name)
        await self._submit(
            c.DeleteQueue(
                channel=self.node.management_channel(),
                vhost=queue.vhost,
                queue=queue.name,
                if_unused=request.query.get("if-unused") == "true",
                if_empty=request.query.get("if-empty") == "true",
            )
        )
        return web.Response(status=204)

    async def publish(self, request: web.Request) -> web.Response:
        """POST /api/exchanges/V/E/publish: RabbitMQ's answer is whether it was routed."""
        vhost_name, vhost = self._vhost(request)
        name = self._exchange_name(request)
        self._permit(request, vhost_name, "write", name or "amq.default")
        if name not in vhost.exchanges:
            raise _not_found()
        body = await _body(request)
        try:
            command = http_messages.publish_command(
                self.node.management_channel(), vhost_name, name, body
            )
        except ValueError as error:
            raise _bad_request(str(error)) from error
        reply = await self._submit(command)
        return json_response({"routed": isinstance(reply, Routed) and reply.queue_count > 0})

    async def get_messages(self, request: web.Request) -> web.Response:
        """POST /api/queues/V/Q/get: up to `count` messages, then settled as `ackmode` says."""
        queue = self._queue(request)
        self._permit(request, queue.vhost, "read", queue.name)
        body = await _body(request)
        ackmode = body.get("ackmode")
        if ackmode not in http_messages.ACK_MODES:
            raise _bad_request(f"ackmode must be one of {', '.join(http_messages.ACK_MODES)}")
        held, requeue = http_messages.ACK_MODES[ackmode]
        count = min(_api_integer(body.get("count", 1)), GET_COUNT_MAX)
        truncate = body.get("truncate")
        if truncate is not None:
            truncate = _api_integer(truncate)
            if truncate < 0:
                raise _bad_request(f"{{value_negative,{truncate}}}")
        encoding = body.get("encoding", "auto")
        if encoding not in ("auto", "base64"):
            raise _bad_request("Unsupported encoding. Please use auto or base64.")
        channel = self.node.management_channel()
        messages: list[Json] = []
        last_tag = 0
        try:
            for _ in range(count):
                reply = await self._submit(
                    c.Get(channel=channel, vhost=queue.vhost, queue=queue.name, no_ack=not held)
                )
                if not isinstance(reply, GetOk):
                    break
                last_tag = reply.delivery_tag
                messages.append(http_messages.message_json(reply, encoding, truncate))
            if held and last_tag:
                await self._submit(
                    c.Reject(channel=channel, delivery_tag=last_tag, multiple=True, requeue=requeue)
                )
        finally:
            await self.node.submit(c.CloseChannel(channel=channel))
        return json_response(messages)

    async def purge_queue(self, request: web.Request) -> web.Response:
        queue = self._queue(request)
        self._permit(request, queue.vhost, "read", queue.name)
        await self._submit(
            c.PurgeQueue(
                channel=self.node.management_channel(), vhost=queue.vhost, queue=queue.name
            )
        )
        return web.Response(status=204)

    async def bindings(self, request: web.Request) -> web.Response:
        return json_response(
            [
                binding
                for name, vhost in self._vhosts(request)
                for binding in _bindings_json(name, vhost)
            ]
        )

    def _binding_ends(
        self, request: web.Request, changing: bool = True
    ) -> tuple[str, str, str, str]:
        """The binding a path names; binding or unbinding needs AMQP's queue.bind permissions
        (write on the destination, read on the source)."""
        vhost_name, _ = self._vhost(request)
        source = request.match_info["source"]
        source = "" if source == "amq.default" else source
        kind = "queue" if request.match_info["kind"] == "q" else "exchange"
        destination = request.match_info["destination"]
        if changing:
            self._permit(request, vhost_name, "write", destination)
            self._permit(request, vhost_name, "read", source or "amq.default")
        return vhost_name, source, kind, destination

    async def binding_list(self, request: web.Request) -> web.Response:
        vhost_name, source, kind, destination = self._binding_ends(request, changing=False)
        _, vhost = self._vhost(request)
        return json_response(
            [
                binding
                for binding in _bindings_json(vhost_name, vhost)
                if (binding["source"], binding["destination_type"], binding["destination"])
                == (source, kind, destination)
            ]
        )

    async def post_binding(self, request: web.Request) -> web.Response:
        vhost_name, source, kind, destination = self._binding_ends(request)
        body = await _body(request)
        binding = {
            "source": source,
            "destination": destination,
            "destination_type": kind,
            "routing_key": body.get("routing_key", ""),
            "arguments": body.get("arguments") or {},
        }
        await self._submit(
            definitions.bind_command(self.node.management_channel(), vhost_name, binding)
        )
        key = properties_key(binding["routing_key"], binding["arguments"])
        location = f"{request.path}/{urllib.parse.quote(key, safe='')}"
        return web.Response(status=201, headers={"Location": location})

    async def delete_binding(self, request: web.Request) -> web.Response:
        vhost_name, source, kind, destination = self._binding_ends(request)
        _, vhost = self._vhost(request)
        wanted = request.match_info["props"]
        for binding in _bindings_json(vhost_name, vhost):
            if (
                binding["source"] == source
                and source
                and binding["destination_type"] == kind
                and binding["destination"] == destination
                and binding["properties_key"] == wanted
            ):
                await self._submit(
                    definitions.bind_command(
                        self.node.management_channel(), vhost_name, binding, unbind=True
                    )
                )
                return web.Response(status=204)
        raise _not_found()

    # --- definitions --------------------------------------------------------------------

    async def export_definitions(self, request: web.Request) -> web.Response:
        self._require(request, "administrator")
        return json_response(definitions.export(self.broker, self.node.version))

    async def import_definitions(self, request: web.Request) -> web.Response:
        self._require(request, "administrator")
        body = await _body(request)
        try:
            commands = definitions.import_commands(body, self.node.management_channel)
        except (KeyError, TypeError, ValueError) as error:
            raise _bad_request(f"invalid definitions: {error}") from error
        ignored = definitions.ignored_sections(body)
        if ignored:
            log_event(
                log,
                "definitions_ignored",
                f"definitions import: Warren has no {', '.join(ignored)}; they were not imported",
                logging.WARNING,
                sections=ignored,
            )
        replies = await asyncio.gather(*(self.node.submit(command) for command in commands))
        refused = [reply.reply_text for reply in replies if isinstance(reply, Refused)]
        if refused:
            raise _bad_request("; ".join(refused))
        return web.Response(status=204)

    # --- health checks (rabbitmq-diagnostics check_* and the API's /health/checks) -----

    async def check_alarms(self, request: web.Request) -> web.Response:
        alarms = sorted(self.broker.query_alarms())
        if alarms:
            return _failed(
                "resource alarm(s) in effect in the cluster",
                alarms=[{"node": node, "resource": resource} for node, resource in alarms],
            )
        return _ok()

    async def check_local_alarms(self, request: web.Request) -> web.Response:
        local = sorted(self.node.resources.local_alarms)
        if local:
            return _failed(
                "resource alarm(s) in effect on the node",
                alarms=[{"node": self.node.config.node_id, "resource": r} for r in local],
            )
        return _ok()

    async def check_virtual_hosts(self, request: web.Request) -> web.Response:
        if not self.node.serving:
            return _failed(
                "Some virtual hosts are down", **{"virtual-hosts": self.broker.query_vhost_names()}
            )
        return _ok()

    async def check_quorum_critical(self, request: web.Request) -> web.Response:
        status = self.node.cluster_status()
        if len(status["members"]) == 1:
            return _ok("single node cluster")
        online = sum(member["alive"] for member in status["members"])
        majority = len(status["members"]) // 2 + 1
        quorum_queues = [
            {"name": queue.name, "virtual_host": queue.vhost}
            for queue in self.broker.query_queues()
            if queue.type == "quorum"
        ]
        if online - 1 < majority and quorum_queues:
            return _failed(
                "There are quorum queues that would lose their quorum if the target node is "
                "shut down",
                queues=quorum_queues,
            )
        return _ok()

    async def check_port(self, request: web.Request) -> web.Response:
        port = int(request.match_info["port"])
        ports = sorted(self.node.local_listeners().values())
        if port not in ports:
            return _failed("No active listener", missing=port, ports=ports)
        return _ok()

    async def check_protocol(self, request: web.Request) -> web.Response:
        asked = request.match_info["protocol"].lower()
        protocols = sorted(self.node.local_listeners())
        if _PROTOCOLS.get(asked) not in protocols:
            return _failed("No active listener", missing=asked, protocols=protocols)
        return _ok()

    async def cluster_status(self, request: web.Request) -> web.Response:
        return json_response(self.node.cluster_status())


def _ok(reason: str | None = None) -> web.Response:
    return json_response({"status": "ok"} | ({"reason": reason} if reason else {}))


def _failed(reason: str, **details: Json) -> web.Response:
    return json_response({"status": "failed", "reason": reason, **details}, 503)


async def _body(request: web.Request) -> dict[str, Json]:
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as error:
        raise _bad_request(f"body is not JSON: {error}") from error
    if not isinstance(body, dict):
        raise _bad_request("body must be a JSON object")
    return body


def _routes(api: ManagementApi) -> list[web.RouteDef]:
    vhost = "/{vhost}"
    binding = vhost + "/e/{source}/{kind:[qe]}/{destination}"
    return [
        web.get(CLUSTER_STATUS_PATH, api.cluster_status),
        web.get("/api/overview", api.overview),
        web.get("/api/whoami", api.whoami),
        web.get("/api/nodes", api.nodes),
        web.get("/api/nodes/{name}", api.one_node),
        web.get("/api/connections", api.connections),
        web.delete("/api/connections/{name}", api.close_connection),
        web.get("/api/channels", api.channels),
        web.get("/api/consumers", api.consumers),
        web.get("/api/consumers" + vhost, api.consumers),
        web.get("/api/vhosts", api.vhosts),
        web.get("/api/vhosts" + vhost, api.one_vhost),
        web.put("/api/vhosts" + vhost, api.put_vhost),
        web.delete("/api/vhosts" + vhost, api.delete_vhost),
        web.get("/api/vhosts" + vhost + "/permissions", api.permissions),
        web.get("/api/users", api.users),
        web.get("/api/users/{user}", api.one_user),
        web.put("/api/users/{user}", api.put_user),
        web.delete("/api/users/{user}", api.delete_user),
        web.get("/api/users/{user}/permissions", api.permissions),
        web.get("/api/permissions", api.permissions),
        web.get("/api/permissions" + vhost + "/{user}", api.one_permission),
        web.put("/api/permissions" + vhost + "/{user}", api.put_permission),
        web.delete("/api/permissions" + vhost + "/{user}", api.delete_permission),
        web.get("/api/exchanges", api.exchanges),
        web.get("/api/exchanges" + vhost, api.exchanges),
        web.get("/api/exchanges" + vhost + "/{exchange}", api.one_exchange),
        web.put("/api/exchanges" + vhost + "/{exchange}", api.put_exchange),
        web.delete("/api/exchanges" + vhost + "/{exchange}", api.delete_exchange),
        web.post("/api/exchanges" + vhost + "/{exchange}/publish", api.publish),
        web.get("/api/queues", api.queues),
        web.get("/api/queues" + vhost, api.queues),
        web.get("/api/queues" + vhost + "/{queue}", api.one_queue),
        web.put("/api/queues" + vhost + "/{queue}", api.put_queue),
        web.delete("/api/queues" + vhost + "/{queue}", api.delete_queue),
        web.delete("/api/queues" + vhost + "/{queue}/contents", api.purge_queue),
        web.post("/api/queues" + vhost + "/{queue}/get", api.get_messages),
        web.get("/api/bindings", api.bindings),
        web.get("/api/bindings" + vhost, api.bindings),
        web.get("/api/bindings" + binding, api.binding_list),
        web.post("/api/bindings" + binding, api.post_binding),
        web.delete("/api/bindings" + binding + "/{props}", api.delete_binding),
        web.get("/api/definitions", api.export_definitions),
        web.post("/api/definitions", api.import_definitions),
        web.get("/api/health/checks/alarms", api.check_alarms),
        web.get("/api/health/checks/local-alarms", api.check_local_alarms),
        web.get("/api/health/checks/virtual-hosts", api.check_virtual_hosts),
        web.get("/api/health/checks/node-is-quorum-critical", api.check_quorum_critical),
        web.get("/api/health/checks/port-listener/{port:[0-9]+}", api.check_port),
        web.get("/api/health/checks/protocol-listener/{protocol}", api.check_protocol),
    ]


def _peer_ssl(node: Node) -> ssl.SSLContext | bool:
    """How this node reaches the other members' APIs: plain HTTP, or HTTPS trusting the
    configured CA (members are addressed by their cluster host names)."""
    config = node.config
    if not config.management_tls:
        return False
    context = ssl.create_default_context(cafile=config.tls_ca_file or None)
    context.check_hostname = False
    return context


async def start_management(node: Node, tls: ssl.SSLContext | None) -> web.AppRunner:
    api = ManagementApi(node, _peer_ssl(node))
    application = web.Application(middlewares=[api.middleware])
    application.add_routes(_routes(api))
    application.on_cleanup.append(api.close)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    await web.TCPSite(
        runner, node.config.listen_host, node.config.management_port, ssl_context=tls
    ).start()
    return runner
