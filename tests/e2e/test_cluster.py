"""Node-kill resilience: three real nodes, real clients, SIGKILL and SIGSTOP, every id counted.

Each test runs a bounded confirmed publish load (`warrenmq.cluster.load`) and checks at the end
that every confirmed message was delivered (lost = 0); duplicates are allowed and reported.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from warrenmq.cluster.config import Member
from warrenmq.cluster.load import Load, wait_until
from warrenmq.cluster.local import LocalCluster
from warrenmq.replication.body_store import BodyStore
from warrenmq.replication.raft_snapshot import load_snapshot
from warrenmq.replication.state import bodies_held, messages_of

from .operations import READY_S, running_cluster


def url(member: Member) -> str:
    return f"amqp://guest:guest@{member.host}:{member.amqp_port}/"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path) as cluster:
        yield cluster


def split(cluster: LocalCluster, leader: str) -> tuple[Member, list[Member]]:
    followers = [member for member in cluster.members if member.node_id != leader]
    return cluster.member(leader), followers


async def test_sigkill_the_leader_under_load(cluster: LocalCluster) -> None:
    leader, followers = split(cluster, cluster.wait_healthy(timeout_s=READY_S))
    load = Load(
        [url(leader)] + [url(f) for f in followers],
        [url(f) for f in followers],
        "orders",
        message_count=3000,
    )
    await load.declare(url(followers[0]))

    async def kill_the_leader() -> None:
        await wait_until(lambda: len(load.stats.confirmed) >= 600, 60, "600 confirms")
        await asyncio.to_thread(cluster.kill, leader.node_id)

    stats = await load.run(timeout_s=120, consumers=2, during=kill_the_leader)
    assert len(stats.confirmed) == 3000 and not stats.lost, stats.summary()
    assert stats.publisher_reconnects >= 1  # its node died under it
    assert stats.consumer_reconnects == 0, stats.summary()  # survivors' consumers never noticed
    assert cluster.wait_healthy([f.node_id for f in followers], READY_S) != leader.node_id


async def test_sigkill_a_follower_goes_unnoticed(cluster: LocalCluster) -> None:
    leader, (victim, survivor) = split(cluster, cluster.wait_healthy(timeout_s=READY_S))
    load = Load(
        [url(leader), url(survivor)], [url(survivor), url(leader)], "orders", message_count=3000
    )
    await load.declare(url(leader))

    async def kill_a_follower() -> None:
        await wait_until(lambda: len(load.stats.confirmed) >= 600, 60, "600 confirms")
        await asyncio.to_thread(cluster.kill, victim.node_id)

    stats = await load.run(timeout_s=120, consumers=2, during=kill_a_follower)
    assert len(stats.confirmed) == 3000 and not stats.lost, stats.summary()
    assert stats.publisher_reconnects == 0 and stats.consumer_reconnects == 0, stats.summary()
    assert stats.duplicates == 0, stats.summary()


async def test_sigkill_all_three_then_restart(cluster: LocalCluster) -> None:
    urls = [url(member) for member in cluster.members]
    load = Load(urls, urls, "orders", message_count=1500)
    await load.declare(urls[0])
    await load.publish(time.monotonic() + 60)
    assert len(load.stats.confirmed) == 1500
    for member in cluster.members:  # as close to "at once" as signals get
        cluster.signal(member.node_id, signal.SIGKILL)
    for member in cluster.members:
        cluster.processes[member.node_id].wait(timeout=10)
        cluster.start(member.node_id, log_to_file=True)
    cluster.wait_healthy(timeout_s=READY_S)
    load.stats.publisher_reconnects = 0
    await load.consume(0, time.monotonic() + 60)
    assert not load.stats.lost, load.stats.summary()
    assert load.stats.duplicates == 0, load.stats.summary()


async def test_a_killed_node_restarts_catches_up_and_serves(cluster: LocalCluster) -> None:
    leader, (victim, survivor) = split(cluster, cluster.wait_healthy(timeout_s=READY_S))
    await asyncio.to_thread(cluster.kill, victim.node_id)
    while_down = Load([url(leader), url(survivor)], [url(survivor)], "while-down", 1000)
    await while_down.declare(url(leader))
    await while_down.publish(time.monotonic() + 60)
    assert len(while_down.stats.confirmed) == 1000
    cluster.start(victim.node_id, log_to_file=True)
    cluster.wait_healthy(timeout_s=READY_S)
    # the restarted node knows everything that happened while it was away …
    assert await message_count(victim, "while-down") == 1000
    await while_down.consume(0, time.monotonic() + 60)  # … and serves consumers
    assert not while_down.stats.lost and while_down.stats.duplicates == 0
    await assert_serves_publishers(victim, "after-restart")  # … and publishers


async def message_count(member: Member, queue: str) -> int:
    connection = await aio_pika.connect(url(member))
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count)


async def delete_queue(member_url: str, queue: str) -> None:
    connection = await aio_pika.connect(member_url)
    async with connection:
        await (await connection.channel()).queue_delete(queue)


async def assert_serves_publishers(member: Member, queue: str) -> None:
    """A confirmed load through this node alone: every message confirmed and delivered."""
    load = Load([url(member)], [url(member)], queue, 500)
    await load.declare(url(member))
    stats = await load.run(timeout_s=60)
    assert len(stats.confirmed) == 500 and not stats.lost, stats.summary()


async def test_a_node_whose_disk_was_wiped_rejoins_and_serves(cluster: LocalCluster) -> None:
    leader, (victim, survivor) = split(cluster, cluster.wait_healthy(timeout_s=READY_S))
    before = Load([url(leader)], [url(survivor)], "before-wipe", 500)
    await before.declare(url(leader))
    await before.publish(time.monotonic() + 60)
    assert len(before.stats.confirmed) == 500
    await asyncio.to_thread(cluster.kill, victim.node_id)
    shutil.rmtree(cluster.directory / victim.node_id)  # a replaced disk: no journal, no state
    cluster.start(victim.node_id, log_to_file=True)
    cluster.wait_healthy(timeout_s=READY_S)
    assert await message_count(victim, "before-wipe") == 500
    await assert_serves_publishers(victim, "after-wipe")


async def test_a_hung_leader_is_replaced_and_confirms_nothing_alone(
    cluster: LocalCluster,
) -> None:
    leader, followers = split(cluster, cluster.wait_healthy(timeout_s=READY_S))
    on_leader = Load(
        [url(leader)] + [url(f) for f in followers], [url(followers[0])], "hung", message_count=2000
    )
    await on_leader.declare(url(followers[0]))
    paused: dict[str, float] = {}

    async def hang_the_leader() -> None:
        await wait_until(lambda: len(on_leader.stats.confirmed) >= 400, 60, "400 confirms")
        cluster.signal(leader.node_id, signal.SIGSTOP)
        paused["from"] = time.monotonic()
        await asyncio.sleep(6.0)  # well past node_down_after_s (3 s)
        new_leader = cluster.leader(exclude=[leader.node_id])
        cluster.signal(leader.node_id, signal.SIGCONT)
        paused["until"] = time.monotonic()
        paused["new_leader"] = new_leader  # type: ignore[assignment]

    stats = await on_leader.run(timeout_s=120, consumers=1, during=hang_the_leader)
    assert len(stats.confirmed) == 2000 and not stats.lost, stats.summary()
    assert paused["new_leader"] not in (None, leader.node_id)  # the majority moved on
    cluster.wait_healthy(timeout_s=READY_S)  # the old leader rejoined and serves again
    connection = await aio_pika.connect(url(leader))
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("hung", passive=True)
        assert queue.declaration_result.message_count == 0  # all consumed, none resurrected


async def test_rolling_restart_under_load(cluster: LocalCluster) -> None:
    urls = [url(member) for member in cluster.members]
    load = Load(urls, list(reversed(urls)), "rolling", message_count=4000, rate_per_s=300)
    await load.declare(urls[0])

    async def restart_each_node() -> None:
        for member in cluster.members:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(cluster.stop, member.node_id)
            cluster.start(member.node_id, log_to_file=True)
            await asyncio.to_thread(cluster.wait_healthy, None, READY_S)

    stats = await load.run(timeout_s=150, consumers=2, during=restart_each_node)
    assert len(stats.confirmed) == 4000 and not stats.lost, stats.summary()


async def test_unacked_messages_of_a_dead_node_go_to_a_consumer_elsewhere(
    cluster: LocalCluster,
) -> None:
    leader, (victim, survivor) = split(cluster, cluster.wait_healthy(timeout_s=READY_S))
    publisher = await aio_pika.connect(url(leader))
    channel = await publisher.channel(publisher_confirms=True)
    await channel.declare_queue("work", durable=True, arguments={"x-queue-type": "quorum"})
    for number in range(10):
        await channel.default_exchange.publish(aio_pika.Message(str(number).encode()), "work")

    holder = await aio_pika.connect(url(victim))
    holder_channel = await holder.channel()
    await holder_channel.set_qos(prefetch_count=10)
    held: list[int] = []

    async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        held.append(int(message.body))  # and never ack

    await (await holder_channel.get_queue("work")).consume(hold)
    await wait_until(lambda: len(held) == 10, 20, "10 deliveries to the doomed node")

    rescuer = await aio_pika.connect(url(survivor))
    rescued: list[tuple[int, bool]] = []

    async def rescue(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        rescued.append((int(message.body), message.redelivered))
        await message.ack()

    await (await (await rescuer.channel()).get_queue("work")).consume(rescue)
    await asyncio.to_thread(cluster.kill, victim.node_id)
    await wait_until(lambda: len(rescued) == 10, 30, "redelivery on the surviving node")
    assert sorted(rescued) == [(number, True) for number in range(10)]
    await rescuer.close()
    await publisher.close()


async def test_sigkill_during_snapshots_and_body_compaction_loses_nothing(
    tmp_path: Path,
) -> None:
    """The journal's limit (64 KiB) forces a snapshot every few hundred messages and the body
    store's 4 KiB segments are compacted as consumers settle, so nodes SIGKILLed in turn under
    a confirmed load die mid-snapshot and mid-compaction. Every confirmed id is delivered; then
    a backlog left in the queue is on every node's disk, each body its state names intact.

    Before each kill, one message goes to a queue of its own that nobody consumes: its segment
    is left mostly dead once the load around it is settled, so it is rewritten, however fast
    the consumers are (they left no partly live segment at all in about one run of ten)."""
    arguments = ("--journal-compaction-bytes", str(64 * 1024), "--body-segment-bytes", "4096")
    with running_cluster(tmp_path, extra_arguments=arguments) as cluster:
        urls = [url(member) for member in cluster.members]
        load = Load(urls, urls, "churn", message_count=4000)
        await load.declare(urls[0])
        pins = [Load(urls, urls, f"pinned-{n}", message_count=1) for n in range(6)]

        async def kill_each_in_turn_twice() -> None:
            for kill, member in enumerate(cluster.members * 2, start=1):
                enough = lambda count=500 * kill: len(load.stats.confirmed) >= count  # noqa: E731
                await wait_until(enough, 120, "confirms")
                pin = pins[kill - 1]
                await pin.declare(url(member))
                await pin.publish(time.monotonic() + 60)
                await asyncio.to_thread(cluster.kill, member.node_id)
                cluster.start(member.node_id, log_to_file=True)
                await asyncio.to_thread(cluster.wait_healthy, None, READY_S)

        stats = await load.run(timeout_s=300, consumers=3, during=kill_each_in_turn_twice)
        assert len(stats.confirmed) == 4000 and not stats.lost, stats.summary()
        assert [len(pin.stats.confirmed) for pin in pins] == [1] * 6
        for pin in pins:
            await delete_queue(urls[0], pin.queue)
        # A killed node's unacknowledged deliveries return to the queue once the cluster learns
        # it died, which can be after the load saw every id (a full run: 21 left on all three)
        await delete_queue(urls[0], "churn")
        backlog = Load(urls, urls, "backlog", message_count=300)
        await backlog.declare(urls[0])
        await backlog.publish(time.monotonic() + 60)
        assert len(backlog.stats.confirmed) == 300
    logs = "".join(path.read_text() for path in tmp_path.glob("warren-*.log"))
    assert "body segment" in logs and "compacted" in logs  # compaction ran
    for member in cluster.members:  # stopped: each node's snapshot and bodies, read offline
        bodies = sorted(int(body) for body in stored_bodies(tmp_path / member.node_id))
        assert bodies == list(range(300)), member.node_id


def stored_bodies(data_dir: Path) -> list[bytes]:
    """The bodies of every message in the node's snapshot, read from its body store."""
    # pysyncobj's own data, then its one consumer's: the broker state
    state = load_snapshot(data_dir / "raft.snapshot")[0][1]
    store = BodyStore(data_dir / "bodies")
    try:
        store.adopt(bodies_held(state))
        return [message.body.read() for message in messages_of(state)]
    finally:
        store.close()
