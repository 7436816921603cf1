"""`warren failover-bench`: kill the leader again and again under a steady confirmed load.

For each kill it prints how long until publishes were confirmed again and until deliveries
resumed, and the longest pause in confirms over the recovery window (which also holds what
comes later, such as the dead node being declared lost); at the end, how many confirmed
messages were lost (must be 0) or delivered twice.
A benchmark prints numbers and asserts nothing: machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from warrenmq.cluster.load import Load
from warrenmq.cluster.local import LocalCluster, add_base_port_argument, members_from

__all__ = ["add_arguments", "run"]

HEALTHY_TIMEOUT_S = 60.0
RECOVERY_WINDOW_S = 8.0  # after a kill, the load is watched this long for its recovery


@dataclass
class Kill:
    node_id: str
    confirms_resumed_s: float | None  # from SIGKILL to the next publisher confirm
    deliveries_resumed_s: float | None  # from SIGKILL to the next delivery
    longest_confirm_pause_s: float | None  # in RECOVERY_WINDOW_S after it, whatever the cause


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kills", type=int, default=5, help="leader kills (default 5)")
    parser.add_argument(
        "--rate", type=float, default=500.0, help="confirmed publishes per second (default 500)"
    )
    parser.add_argument(
        "--settle-s",
        type=float,
        default=3.0,
        help="steady load before each kill, seconds (default 3)",
    )
    add_base_port_argument(parser, default=21672)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="cluster data (default: a fresh temporary folder)",
    )


async def _bench(cluster: LocalCluster, arguments: argparse.Namespace) -> int:
    leader = await asyncio.to_thread(cluster.wait_healthy, None, HEALTHY_TIMEOUT_S)
    urls = [f"amqp://guest:guest@{m.host}:{m.amqp_port}/" for m in cluster.members]
    duration_s = arguments.kills * (arguments.settle_s + RECOVERY_WINDOW_S + 4.0) + 10.0
    load = Load(
        urls,
        list(reversed(urls)),
        "failover-bench",
        message_count=int(arguments.rate * duration_s),
        rate_per_s=arguments.rate,
    )
    await load.declare(urls[0])
    kills: list[Kill] = []

    async def kill_leaders() -> None:
        nonlocal leader
        for _ in range(arguments.kills):
            await asyncio.sleep(arguments.settle_s)
            killed_at_s = time.monotonic()
            print(f"{time.strftime('%H:%M:%S')} killing leader {leader}", flush=True)
            await asyncio.to_thread(cluster.kill, leader)
            victim = leader
            await asyncio.sleep(RECOVERY_WINDOW_S)  # let the load show its recovery
            stats = load.stats
            kills.append(
                Kill(
                    victim,
                    stats.resumed_after(stats.confirm_times_s, killed_at_s),
                    stats.resumed_after(stats.delivery_times_s, killed_at_s),
                    stats.longest_pause(stats.confirm_times_s, killed_at_s, RECOVERY_WINDOW_S),
                )
            )
            print(
                f"killed leader {victim}: confirms again after "
                f"{_seconds(kills[-1].confirms_resumed_s)}, deliveries after "
                f"{_seconds(kills[-1].deliveries_resumed_s)}; longest confirm pause in "
                f"{RECOVERY_WINDOW_S:.0f} s {_seconds(kills[-1].longest_confirm_pause_s)}",
                flush=True,
            )
            cluster.start(victim, log_to_file=True)
            leader = await asyncio.to_thread(cluster.wait_healthy, None, HEALTHY_TIMEOUT_S)

    stats = await load.run(timeout_s=duration_s + 60, consumers=2, during=kill_leaders)
    print()
    for label, values in (
        ("confirms resumed", [k.confirms_resumed_s for k in kills]),
        ("deliveries resumed", [k.deliveries_resumed_s for k in kills]),
        ("longest confirm pause", [k.longest_confirm_pause_s for k in kills]),
    ):
        known = [value for value in values if value is not None]
        if known:
            print(
                f"{label:>20}: min {min(known):.3f} s  median "
                f"{statistics.median(known):.3f} s  max {max(known):.3f} s  "
                f"({len(known)} of {len(values)} kills)"
            )
    print(f"{'messages':>20}: {stats.summary()}")
    print(f"{'lost':>20}: {len(stats.lost)}")
    return 0 if not stats.lost else 1


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.3f} s"


def run(arguments: argparse.Namespace) -> int:
    members = members_from(arguments.base_port)
    with tempfile.TemporaryDirectory(prefix="warren-failover-") as scratch:
        directory = arguments.data_dir or Path(scratch)
        cluster = LocalCluster(directory, members, log_level="INFO")
        cluster.start_all(log_to_file=True)
        try:
            return asyncio.run(_bench(cluster, arguments))
        finally:
            cluster.stop()
