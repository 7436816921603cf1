"""What the node does when something inside it fails: one effect, or the Raft loop itself."""

from __future__ import annotations

import asyncio
import types

import pytest

from warrenmq.amqp.spec import ReplyCode
from warrenmq.cluster import node as node_module
from warrenmq.cluster.definitions import declare_queue_command
from warrenmq.cluster.node import EXIT_RAFT_LOOP_FAILED, Node
from warrenmq.replication import commands
from warrenmq.replication.commands import ChannelRef
from warrenmq.replication.machine import Broker, Meta
from warrenmq.replication.replies import CancelConsumer, Deliver


class FakeSession:
    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.delivered: list[object] = []
        self.closed: list[tuple[ReplyCode, str]] = []

    def deliver(self, effect: object) -> None:
        if self.fails:
            raise ValueError("planted: this delivery cannot be encoded")
        self.delivered.append(effect)

    def close(self, code: ReplyCode, text: str) -> None:
        self.closed.append((code, text))


def test_a_failing_effect_closes_only_its_own_connection() -> None:
    sessions = {1: FakeSession(fails=True), 2: FakeSession(fails=False)}
    fake = types.SimpleNamespace(
        config=types.SimpleNamespace(node_id="n1"), incarnation=1, sessions=sessions
    )
    effects = [
        CancelConsumer(ChannelRef("n1", 1, connection, 1), f"ctag{connection}")
        for connection in (1, 2, 1, 2)
    ]
    Node.dispatch(fake, effects)  # type: ignore[arg-type]
    assert sessions[2].delivered == [effects[1], effects[3]]  # both reached the healthy one
    assert sessions[1].closed == [(ReplyCode.INTERNAL_ERROR, "")] * 2
    assert sessions[2].closed == []


async def test_a_failing_raft_loop_ends_the_process_non_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ticks = []

    def tick() -> None:
        ticks.append(1)
        if len(ticks) == 3:
            raise RuntimeError("planted: pysyncobj raised")

    class Exited(Exception):
        pass

    def exit_process(code: int) -> None:
        raise Exited(code)

    monkeypatch.setattr(node_module.os, "_exit", exit_process)
    fake = types.SimpleNamespace(
        log=types.SimpleNamespace(
            tick=tick, has_work=False, wakeup_fds=(), idle_wait_s=lambda longest_s: 0.0
        ),
        config=types.SimpleNamespace(node_id="n1"),
    )
    with pytest.raises(Exited) as exited:
        await asyncio.wait_for(Node._tick_forever(fake), timeout=5)  # type: ignore[arg-type]
    assert exited.value.args == (EXIT_RAFT_LOOP_FAILED,) and len(ticks) == 3


def test_a_delivery_whose_channel_was_released_meanwhile_is_not_sent() -> None:
    """warren nemesis (seed 13, 40 faults) saw 98-206 second deliveries without the redelivered
    flag: a node resumed from SIGSTOP applied, in one tick, deliveries to its consumers and the
    release of their channels (the cluster had declared it down and redelivered the messages
    elsewhere); it then sent the stale deliveries on connections that were still open."""
    owner, released = ChannelRef("n1", 1, 1, 1), ChannelRef("n1", 1, 2, 1)
    broker = Broker()
    setup: list[commands.Command] = [
        commands.NodeUp(node="n1", incarnation=1, pid=1),
        commands.AddVhost(vhost="/"),
        declare_queue_command(owner, "/", {"name": "q"}),
        commands.SessionClosed(node="n1", incarnation=1, connection=2),
    ]
    for ref in (owner, released):
        setup.insert(
            3,
            commands.Consume(
                channel=ref,
                vhost="/",
                queue="q",
                consumer_tag="ctag",
                no_ack=False,
                exclusive=False,
                arguments={},
            ),
        )
    for index, command in enumerate(setup, start=1):
        broker.apply(Meta(index), command)
    sessions = {1: FakeSession(fails=False), 2: FakeSession(fails=False)}
    fake = types.SimpleNamespace(
        config=types.SimpleNamespace(node_id="n1"), incarnation=1, sessions=sessions, broker=broker
    )
    deliveries = [
        Deliver(ref, "ctag", 1, False, "", "q", b"\x00\x00", b"m") for ref in (owner, released)
    ]
    Node.dispatch(fake, deliveries)  # type: ignore[arg-type]
    assert sessions[1].delivered == [deliveries[0]] and sessions[2].delivered == []
