"""Definitions: export the topology as RabbitMQ's JSON, import one."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from warrenmq.cluster import definitions
from warrenmq.cluster.logs import log_event
from warrenmq.cluster.management.api import (
    ManagementApi,
    bad_request,
    json_response,
    read_body,
)
from warrenmq.replication.replies import Refused

log = logging.getLogger(__name__)


async def export_definitions(api: ManagementApi, request: web.Request) -> web.Response:
    api.require(request, "administrator")
    return json_response(definitions.export(api.broker, api.node.version))


async def import_definitions(api: ManagementApi, request: web.Request) -> web.Response:
    api.require(request, "administrator")
    body = await read_body(request)
    try:
        commands = definitions.import_commands(body, api.node.management_channel)
    except (KeyError, TypeError, ValueError) as error:
        raise bad_request(f"invalid definitions: {error}") from error
    ignored = definitions.ignored_sections(body)
    if ignored:
        log_event(
            log,
            "definitions_ignored",
            f"definitions import: Warren has no {', '.join(ignored)}; they were not imported",
            logging.WARNING,
            sections=ignored,
        )
    replies = await asyncio.gather(*(api.node.submit(command) for command in commands))
    refused = [reply.reply_text for reply in replies if isinstance(reply, Refused)]
    if refused:
        raise bad_request("; ".join(refused))
    return web.Response(status=204)
