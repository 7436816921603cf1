"""Asking the other members: connections, channels and node figures are each node's own, so a
listing asks every other member's API for its part, with the caller's credentials."""

from __future__ import annotations

import asyncio
import ssl
import typing

import aiohttp
import orjson
from aiohttp import web

if typing.TYPE_CHECKING:
    from warrenmq.cluster.node import Node

PEER_TIMEOUT_S = 2.0  # how long a member's API gets to answer for its own connections

Json = typing.Any


def peer_ssl(node: Node) -> ssl.SSLContext | bool:
    """How this node reaches the other members' APIs: plain HTTP, or HTTPS trusting the
    configured CA (members are addressed by their cluster host names)."""
    config = node.config
    if not config.management_tls:
        return False
    context = ssl.create_default_context(cafile=config.tls_ca_file or None)
    context.check_hostname = False
    return context


class Members:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._peer_ssl = peer_ssl(node)
        self._client: aiohttp.ClientSession | None = None

    async def ask(self, request: web.Request, method: str, path: str) -> list[tuple[int, Json]]:
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

    async def lists(self, request: web.Request, path: str) -> list[Json]:
        """The lists the other members keep of their own (connections, channels, nodes)."""
        answers = await self.ask(request, "GET", path)
        return [item for status, answer in answers if status == 200 for item in answer]

    async def close(self, _: web.Application) -> None:
        if self._client is not None:
            await self._client.close()
