"""What every resource's handlers share: who the caller is and what it may see and do, writes
through the log, and RabbitMQ's error answers."""

from __future__ import annotations

import base64
import binascii
import math
import typing

import orjson
from aiohttp import web

from warrenmq.cluster.auth import check_login
from warrenmq.cluster.management.peers import Members
from warrenmq.replication import commands as c
from warrenmq.replication.queries import VhostView
from warrenmq.replication.replies import Refused, Reply

if typing.TYPE_CHECKING:
    from warrenmq.cluster.node import Node

CLUSTER_STATUS_PATH = "/api/warren/cluster-status"
GET_COUNT_MAX = 10_000  # messages one POST …/get may take
MANAGEMENT_TAGS = frozenset({"administrator", "monitoring", "management", "policymaker"})

Json = typing.Any


class ApiError(Exception):
    """An answer other than success: status, RabbitMQ's `error` and `reason` fields."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason


def not_found() -> ApiError:
    return ApiError(404, "Object Not Found", "Not Found")


def bad_request(reason: str) -> ApiError:
    return ApiError(400, "bad_request", reason)


def api_integer(value: object) -> int:
    """A number in a request body as RabbitMQ's parse_int reads it: an integer, a number
    (truncated) or a string of digits; anything else is a 400, not a 500."""
    if isinstance(value, bool):
        raise bad_request(f"{{not_integer,{value}}}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    try:
        return int(str(value), 10)
    except ValueError:
        raise bad_request(f"{{not_integer,{value}}}") from None


def json_response(data: Json, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def read_body(request: web.Request) -> dict[str, Json]:
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as error:
        raise bad_request(f"body is not JSON: {error}") from error
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    return body


class ManagementApi:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.broker = node.broker
        self.members = Members(node)

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: typing.Callable[[web.Request], typing.Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        try:
            if request.path != CLUSTER_STATUS_PATH:
                await self._authenticate(request)
            return await handler(request)
        except ApiError as error:
            response = json_response({"error": error.error, "reason": error.reason}, error.status)
            if error.status == 401:
                response.headers["WWW-Authenticate"] = 'Basic realm="RabbitMQ Management"'
            return response

    async def _authenticate(self, request: web.Request) -> None:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            username, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            username = password = ""
        if scheme.lower() != "basic" or not username:
            raise ApiError(401, "not_authorized", "Not_Authorized")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        peer = peer or (request.remote or "", 0)
        if not check_login(self.node, username, password, peer, "http", final=False):
            await self.node.caught_up()  # a user just added through another node (client.py)
            if not check_login(self.node, username, password, peer, "http"):
                raise ApiError(401, "not_authorized", "Login failed")
        user = self.broker.query_user(username)
        assert user is not None
        if not MANAGEMENT_TAGS & set(user.tags):
            raise ApiError(401, "not_authorized", "Not management user")
        request["user"] = username
        request["tags"] = set(user.tags)

    @staticmethod
    def require(request: web.Request, tag: str) -> None:
        """administrator may do all; monitoring may read everything."""
        tags = request["tags"]
        if "administrator" in tags or (tag == "monitoring" and "monitoring" in tags):
            return
        raise ApiError(401, "not_authorized", f"Not {tag} user")

    @staticmethod
    def sees_all(request: web.Request) -> bool:
        return bool({"administrator", "monitoring"} & request["tags"])

    def visible_vhosts(self, request: web.Request) -> list[str]:
        names = self.broker.query_vhost_names()
        if self.sees_all(request):
            return names
        return [name for name in names if self.broker.query_permission(request["user"], name)]

    def vhost(self, request: web.Request) -> tuple[str, VhostView]:
        name = request.match_info["vhost"]
        vhost = self.broker.query_vhost(name)
        if vhost is None or name not in self.visible_vhosts(request):
            raise not_found()
        return name, vhost

    def vhosts(self, request: web.Request) -> list[tuple[str, VhostView]]:
        if "vhost" in request.match_info:
            return [self.vhost(request)]
        views = [(name, self.broker.query_vhost(name)) for name in self.visible_vhosts(request)]
        return [(name, view) for name, view in views if view is not None]

    def permit(self, request: web.Request, vhost: str, action: str, name: str) -> None:
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

    async def submit(self, command: c.Command) -> Reply:
        reply = await self.node.submit(command)
        if isinstance(reply, Refused):
            if reply.reply_code in (404, 530):
                raise not_found()
            raise bad_request(reply.reply_text)
        return reply

    async def declare(
        self,
        request: web.Request,
        name: str,
        existing: typing.Container[str],
        command: typing.Callable[[c.ChannelRef, str, dict[str, Json]], c.Command],
    ) -> web.Response:
        """PUT of an exchange or queue: declared like a client's declare; 201 when new."""
        vhost_name, _ = self.vhost(request)
        self.permit(request, vhost_name, "configure", name)
        body = await read_body(request)
        existed = name in existing
        await self.submit(
            command(self.node.management_channel(), vhost_name, {**body, "name": name})
        )
        return web.Response(status=204 if existed else 201)
