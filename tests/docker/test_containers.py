"""What containers suffer, under a confirmed publish load with consumers: every id counted.

Each test prints how long the load took to recover (run with -s to see the figures).
"""

from __future__ import annotations

import asyncio
import time

import aio_pika

from warrenmq.cluster.load import Load, LoadStats, wait_until

from .conftest import NODES, ContainerCluster


def report(what: str, stats: LoadStats, fault_s: float) -> None:
    confirms = stats.resumed_after(stats.confirm_times_s, fault_s)
    deliveries = stats.resumed_after(stats.delivery_times_s, fault_s)
    print(
        f"\n{what}: confirms resumed after {confirms:.2f} s, deliveries after "
        f"{deliveries:.2f} s; {stats.summary()}"
    )


def load_on(cluster: ContainerCluster, first: str, queue: str, count: int) -> Load:
    """Publisher starts on `first`; consumers on the other nodes; everyone fails over."""
    others = [node for node in NODES if node != first]
    return Load(
        [cluster.url(first)] + [cluster.url(node) for node in others],
        [cluster.url(node) for node in others] + [cluster.url(first)],
        queue,
        count,
        rate_per_s=400,
    )


async def queue_depth(cluster: ContainerCluster, node: str, queue: str) -> int:
    connection = await aio_pika.connect(cluster.url(node))
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count)


async def test_docker_kill_the_leader_then_start_it_again(cluster: ContainerCluster) -> None:
    leader = cluster.wait_for_leader()
    load = load_on(cluster, leader, "kill", 3000)
    await load.declare(cluster.url(leader))
    fault: dict[str, float] = {}

    async def kill_the_leader() -> None:
        await wait_until(lambda: len(load.stats.confirmed) >= 600, 60, "600 confirms")
        fault["at"] = time.monotonic()
        await asyncio.to_thread(cluster.wrapped(leader).kill)

    stats = await load.run(timeout_s=150, consumers=2, during=kill_the_leader)
    assert len(stats.confirmed) == 3000 and not stats.lost, stats.summary()
    report("docker kill leader", stats, fault["at"])
    survivors = [node for node in NODES if node != leader]
    cluster.wait_for_leader(survivors, other_than=leader)
    await asyncio.to_thread(cluster.wrapped(leader).start)  # it rejoins and catches up
    cluster.wait_for_leader()
    await until_async(lambda: queue_depth(cluster, leader, "kill"), 0, 60)


async def until_async(probe, expected: int, timeout_s: float) -> None:
    deadline_s = time.monotonic() + timeout_s
    while True:
        try:
            if await probe() == expected:
                return
        except Exception:
            if time.monotonic() > deadline_s:
                raise
        if time.monotonic() > deadline_s:
            raise TimeoutError(f"probe never returned {expected}")
        await asyncio.sleep(0.5)


async def test_docker_pause_the_leader_past_the_failure_timeout(
    cluster: ContainerCluster,
) -> None:
    leader = cluster.wait_for_leader()
    load = load_on(cluster, leader, "pause", 3000)
    await load.declare(cluster.url(leader))
    fault: dict[str, float] = {}
    during: dict[str, str] = {}

    async def pause_the_leader() -> None:
        await wait_until(lambda: len(load.stats.confirmed) >= 600, 60, "600 confirms")
        fault["at"] = time.monotonic()
        await asyncio.to_thread(cluster.wrapped(leader).pause)
        survivors = [node for node in NODES if node != leader]
        during["leader"] = await asyncio.to_thread(cluster.wait_for_leader, survivors, 30, leader)
        await asyncio.sleep(6.0)  # well past node_down_after_s (3 s)
        await asyncio.to_thread(cluster.wrapped(leader).unpause)

    stats = await load.run(timeout_s=150, consumers=2, during=pause_the_leader)
    assert len(stats.confirmed) == 3000 and not stats.lost, stats.summary()
    report("docker pause leader", stats, fault["at"])
    assert during["leader"] != leader  # the majority moved on while it was frozen
    cluster.wait_for_leader()  # once it is back, all three name one leader: no split brain


async def test_network_disconnect_the_leader_then_heal(cluster: ContainerCluster) -> None:
    leader = cluster.wait_for_leader()
    load = load_on(cluster, leader, "partition", 3000)
    await load.declare(cluster.url(leader))
    fault: dict[str, float] = {}
    during: dict[str, str] = {}

    async def cut_off_the_leader() -> None:
        await wait_until(lambda: len(load.stats.confirmed) >= 600, 60, "600 confirms")
        fault["at"] = time.monotonic()
        await asyncio.to_thread(cluster.disconnect, leader)
        survivors = [node for node in NODES if node != leader]
        during["leader"] = await asyncio.to_thread(cluster.wait_for_leader, survivors, 30, leader)
        await asyncio.sleep(6.0)  # the minority gives up its clients after 3 s
        await asyncio.to_thread(cluster.connect, leader)

    stats = await load.run(timeout_s=150, consumers=2, during=cut_off_the_leader)
    assert len(stats.confirmed) == 3000 and not stats.lost, stats.summary()
    report("network disconnect leader", stats, fault["at"])
    assert during["leader"] != leader
    cluster.wait_for_leader()  # healed: all three agree again
    logs = cluster.wrapped(leader).logs().decode(errors="replace")
    assert "lost the majority: closing client connections" in logs
