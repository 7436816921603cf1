"""A node for session tests: the real connection machine and the real broker, with the Raft log
replaced by a list that the test commits when it chooses. No sockets, no clock."""

from __future__ import annotations

import typing

from pamqp import base, commands, frame
from pamqp import body as content_body
from pamqp import header as content_header

from warrenmq.amqp.connection import Connection, Settings
from warrenmq.amqp.spec import PROTOCOL_HEADER
from warrenmq.cluster.config import load_config
from warrenmq.cluster.metrics import ClientCounters, MessageCounters
from warrenmq.cluster.passwords import hash_password
from warrenmq.cluster.session import Session
from warrenmq.replication import commands as broker
from warrenmq.replication.machine import Broker, Meta
from warrenmq.replication.replies import Reply


class FakeLog:
    """Proposals wait here until `commit`, which applies them in order to a real Broker."""

    def __init__(self, node: FakeNode) -> None:
        self.node = node
        self.pending: list[tuple[broker.Command, typing.Callable[[Reply], None] | None]] = []
        self.proposed: list[broker.Command] = []  # everything ever proposed, in order

    def propose(
        self, command: broker.Command, on_reply: typing.Callable[[Reply], None] | None = None
    ) -> None:
        self.pending.append((command, on_reply))
        self.proposed.append(command)

    def commit(self, count: int | None = None) -> None:
        """Apply the oldest `count` proposals (all by default): replies, then effects."""
        taken = self.pending[:count] if count is not None else self.pending
        self.pending = self.pending[len(taken) :]
        for command, on_reply in taken:
            self.node.apply(command, on_reply)


class FakeNode:
    def __init__(self, **config: typing.Any) -> None:
        self.config = load_config(overrides=config, environment={})
        self.incarnation = 1
        self.serving = True
        self.blocked_reason: str | None = None
        self.counters = MessageCounters()
        self.client_counters = ClientCounters()
        self.sessions: dict[int, Session] = {}
        self.broker = Broker()
        self.log = FakeLog(self)
        self._serial = 0
        self._index = 0
        self.apply(broker.NodeUp(node=self.config.node_id, incarnation=1, pid=1), None)
        self.apply(
            broker.BootstrapDefaults(
                vhost="/", user="guest", password_hash=hash_password("guest"), tags=()
            ),
            None,
        )

    def catch_up(self, then: typing.Callable[[], None]) -> None:
        """As Node's: `then` runs when the barrier is committed, after what was pending."""
        self.log.propose(broker.Barrier(), lambda _: then())

    def next_connection_serial(self) -> int:
        self._serial += 1
        return self._serial

    def apply(
        self, command: broker.Command, on_reply: typing.Callable[[Reply], None] | None
    ) -> None:
        self._index += 1
        applied = self.broker.apply(Meta(self._index), command)
        if on_reply is not None:
            on_reply(applied.reply)
        for effect in applied.effects:
            session = self.sessions.get(effect.owner.connection)
            if session is not None:
                session.deliver(effect)


class FakeTransport:
    """What the session asks of the socket side; it records reading pauses."""

    peer = ("127.0.0.1", 40000)
    local = ("127.0.0.1", 5672)
    tls = False

    def __init__(self) -> None:
        self.connection: Connection | None = None
        self.session: Session | None = None
        self.reading = True
        self.pauses = 0

    def pause_reading(self) -> None:
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True

    def flush_soon(self) -> None:
        pass

    def recheck(self) -> None:
        assert self.connection is not None and self.session is not None
        self.session.events_received(self.connection.recheck())


class Client:
    """One client connection through the real machine into a Session, frames both ways."""

    def __init__(
        self,
        node: FakeNode,
        channel_max: int = 100,
        user: str = "guest",
        password: str = "guest",
        vhost: str = "/",
    ) -> None:
        self.node = node
        self.transport = FakeTransport()
        self.session = Session(node, self.transport)  # type: ignore[arg-type]
        node.sessions[self.session.serial] = self.session
        self.connection = Connection(Settings(), self.session)
        self.transport.connection, self.transport.session = self.connection, self.session
        self.send(PROTOCOL_HEADER)
        self.send_method(
            0, commands.Connection.StartOk(mechanism="PLAIN", response=f"\0{user}\0{password}")
        )
        self.send_method(
            0, commands.Connection.TuneOk(channel_max=channel_max, frame_max=131072, heartbeat=0)
        )
        self.send_method(0, commands.Connection.Open(virtual_host=vhost))
        self.received()

    def send(self, data: bytes) -> None:
        self.session.events_received(self.connection.receive_data(data))

    def send_method(self, channel: int, method: typing.Any) -> None:
        self.send(frame.marshal(method, channel))

    def publish(
        self,
        channel: int,
        routing_key: str,
        body: bytes,
        exchange: str = "",
        **properties: typing.Any,
    ) -> None:
        method = commands.Basic.Publish(exchange="", routing_key=routing_key)
        header = content_header.ContentHeader(
            body_size=len(body), properties=commands.Basic.Properties(**properties)
        )
        self.send(
            frame.marshal(method, channel)
            + frame.marshal(header, channel)
            + frame.marshal(content_body.ContentBody(body), channel)
        )

    def received(self) -> list[tuple[int, typing.Any]]:
        """Every frame the server sent since the last call (content as its frames)."""
        data = self.connection.data_to_send()
        frames = []
        while data:
            consumed, channel, value = frame.unmarshal(data)
            frames.append((channel, value))
            data = data[consumed:]
        return frames

    def methods(self) -> list[typing.Any]:
        return [value for _, value in self.received() if isinstance(value, base.Frame)]

    def sent(self) -> list[tuple[str, dict[str, typing.Any]]]:
        """The methods sent since the last call, as (name, fields): pamqp frames have no ==."""
        return [(value.name, dict(value)) for value in self.methods()]
