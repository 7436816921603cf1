"""One Warren node process: the log, the broker it feeds, the AMQP listener, effect dispatch."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import typing
from importlib import metadata

from warrenmq.amqp.connection import Settings
from warrenmq.amqp.server import AmqpServerProtocol, serve
from warrenmq.amqp.spec import ReplyCode
from warrenmq.cluster.config import NodeConfig
from warrenmq.cluster.passwords import hash_password
from warrenmq.cluster.session import Session
from warrenmq.replication import commands as c
from warrenmq.replication.locallog import LocalLog
from warrenmq.replication.machine import Broker
from warrenmq.replication.replies import Effect

__all__ = ["Node"]

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 2.0  # how long clients get to answer connection.close on shutdown


def _version() -> str:
    try:
        return metadata.version("warrenmq")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def server_properties(config: NodeConfig) -> dict[str, typing.Any]:
    """What connection.start tells clients: RabbitMQ's keys and the capabilities we honour."""
    return {
        "product": "Warren",
        "version": _version(),
        "platform": f"Python {sys.version.split()[0]}",
        "cluster_name": config.node_id,
        "copyright": "The Warren authors",
        "information": "Licensed under the Apache License 2.0",
        "capabilities": {
            "publisher_confirms": True,
            "exchange_exchange_bindings": True,
            "basic.nack": True,
            "consumer_cancel_notify": True,
            "connection.blocked": True,
            "authentication_failure_close": True,
            "per_consumer_qos": True,
        },
    }


def _next_incarnation(directory: os.PathLike[str]) -> int:
    """A number that grows with every start of this node, kept in its data dir."""
    path = os.path.join(directory, "incarnation")
    try:
        with open(path) as previous:
            incarnation = int(previous.read().strip() or 0) + 1
    except FileNotFoundError:
        incarnation = 1
    temporary = path + ".tmp"
    with open(temporary, "w") as current:
        current.write(str(incarnation))
        current.flush()
        os.fsync(current.fileno())
    os.replace(temporary, path)
    return incarnation


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.broker = Broker()
        self.sessions: dict[int, Session] = {}
        self.incarnation = 0
        self.log: LocalLog
        self._connection_serial = 0
        self._server: asyncio.Server | None = None

    def next_connection_serial(self) -> int:
        self._connection_serial += 1
        return self._connection_serial

    async def start(self) -> None:
        directory = self.config.node_data_dir
        directory.mkdir(parents=True, exist_ok=True)
        self.incarnation = _next_incarnation(directory)
        loop = asyncio.get_running_loop()
        self.log = LocalLog(directory, self.broker, self.dispatch, loop.call_soon)
        self.log.open()
        self._bootstrap()
        self.log.flush()
        settings = Settings(
            channel_max=self.config.channel_max,
            frame_max_bytes=self.config.frame_max_bytes,
            heartbeat_s=self.config.heartbeat_s,
            message_size_max_bytes=self.config.message_size_max_bytes,
            server_properties=server_properties(self.config),
        )
        self._server = await serve(
            self.config.host, self.config.amqp_port, settings, self._new_session
        )
        log.info(
            "node %s (incarnation %s) listening for AMQP on %s:%s, data in %s",
            self.config.node_id,
            self.incarnation,
            self.config.host,
            self.config.amqp_port,
            directory,
        )

    def _bootstrap(self) -> None:
        """First boot creates the default vhost and user (RabbitMQ's RABBITMQ_DEFAULT_*)."""
        if not self.broker.state.vhosts:
            self.log.propose(c.AddVhost(vhost=self.config.default_vhost))
        if not self.broker.state.users:
            self.log.propose(
                c.AddUser(
                    user=self.config.default_user,
                    password_hash=hash_password(self.config.default_pass),
                    tags=("administrator",),
                )
            )
        self.log.propose(c.NodeUp(node=self.config.node_id, incarnation=self.incarnation))

    def _new_session(self, protocol: AmqpServerProtocol) -> Session:
        session = Session(self, protocol)
        self.sessions[session.serial] = session
        return session

    def dispatch(self, effects: list[Effect]) -> None:
        """Carry out the effects this node owns; every other node drops them (DESIGN.md §2.6)."""
        for effect in effects:
            owner = effect.owner
            if owner.node != self.config.node_id or owner.incarnation != self.incarnation:
                continue
            session = self.sessions.get(owner.connection)
            if session is not None:
                session.deliver(effect)

    async def stop(self) -> None:
        """Tell every client why (320, as RabbitMQ does on shutdown), then close the log."""
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions.values()):
            session.close(
                ReplyCode.CONNECTION_FORCED,
                "broker forced connection closure with reason 'shutdown'",
            )
        deadline_s = asyncio.get_running_loop().time() + SHUTDOWN_GRACE_S
        while self.sessions and asyncio.get_running_loop().time() < deadline_s:
            await asyncio.sleep(0.02)  # clients answer close-ok; their sessions end
        for session in list(self.sessions.values()):
            session.protocol.abort()
        await asyncio.sleep(0)
        self.log.close()
        log.info("node %s stopped", self.config.node_id)
