"""`warren nemesis`: random faults under a confirmed load, every message checked (Jepsen-style).

A three-node local cluster serves a steady confirmed publish load and consumers on all three
nodes while a nemesis, seeded, picks one fault a round:

- `kill-leader`, `kill-follower`: SIGKILL, then start it again;
- `pause`: SIGSTOP a node for a while, then SIGCONT;
- `isolate`: cut one node off from its peers (fault injection in the Raft transport: every peer
  message dropped both ways while TCP stays up), then heal. A network namespace per node would
  cut AMQP clients off too; dropping peer traffic needs no root and tests what matters here,
  the node on the minority side (it must stop confirming and close its clients with 320);
- `restart-all`: SIGKILL all three at once, start them again.

After each fault the cluster must come back to one leader with every node serving. At the end:
zero confirmed messages lost, every second delivery of one published message marked
redelivered, and the longest time no publish was confirmed. `run` returns the report;
`warren nemesis` prints it and exits non-zero if anything was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import tempfile
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

from warrenmq.cluster.load import Load, LoadStats
from warrenmq.cluster.local import LocalCluster, add_base_port_argument, members_from

__all__ = ["FAULTS", "NemesisReport", "add_arguments", "main", "run"]

FAULTS = ("kill-leader", "kill-follower", "pause", "isolate", "restart-all")
HEALTHY_TIMEOUT_S = 60.0
FAULT_HOLD_S = (1.0, 4.0)  # how long a pause or an isolation lasts, at random in this range
SETTLE_S = (0.5, 2.0)  # steady load between faults


@dataclass
class NemesisReport:
    seed: int
    faults: list[tuple[str, str]] = field(default_factory=list)  # (fault, node)
    stats: LoadStats = field(default_factory=LoadStats)
    longest_unconfirmed_s: float = 0.0  # the longest gap between two confirms
    leader: str | None = None  # the one leader all nodes named at the end

    def summary(self) -> str:
        counts = {fault: sum(1 for f, _ in self.faults if f == fault) for fault in FAULTS}
        return (
            f"seed {self.seed}: {len(self.faults)} faults {counts}; {self.stats.summary()}; "
            f"longest without a confirm {self.longest_unconfirmed_s:.2f} s; "
            f"leader at the end {self.leader}"
        )


async def _wait_healthy(cluster: LocalCluster) -> str:
    return await asyncio.to_thread(cluster.wait_healthy, None, HEALTHY_TIMEOUT_S)


def _fault_file(cluster: LocalCluster, node_id: str) -> Path:
    return cluster.directory / node_id / "fault"


async def _inject(cluster: LocalCluster, fault: str, victim: str, hold_s: float) -> None:
    """Carry out one fault and heal it; the caller waits for the cluster to recover."""
    if fault in ("kill-leader", "kill-follower"):
        await asyncio.to_thread(cluster.kill, victim)
        await asyncio.sleep(hold_s)
        cluster.start(victim, log_to_file=True)
    elif fault == "pause":
        cluster.signal(victim, signal.SIGSTOP)
        await asyncio.sleep(hold_s)
        cluster.signal(victim, signal.SIGCONT)
    elif fault == "isolate":
        _fault_file(cluster, victim).write_text("isolate")
        await asyncio.sleep(hold_s)
        _fault_file(cluster, victim).unlink()
    else:  # restart-all: as close to "at once" as signals get
        for member in cluster.members:
            cluster.signal(member.node_id, signal.SIGKILL)
        for member in cluster.members:
            cluster.processes[member.node_id].wait(timeout=10)
            cluster.start(member.node_id, log_to_file=True)


def _victim(fault: str, leader: str, nodes: list[str], chooser: random.Random) -> str:
    if fault == "kill-leader":
        return leader
    if fault == "kill-follower":
        return chooser.choice([node for node in nodes if node != leader])
    if fault == "restart-all":
        return "all"
    return chooser.choice(nodes)


async def run(
    cluster: LocalCluster,
    rounds: int,
    seed: int,
    rate_per_s: float = 300.0,
    log: typing.Callable[[str], None] = print,
) -> NemesisReport:
    """`rounds` random faults under load on a started cluster; the cluster is left running."""
    chooser = random.Random(seed)
    report = NemesisReport(seed)
    leader = await _wait_healthy(cluster)
    urls = [f"amqp://guest:guest@{m.host}:{m.amqp_port}/" for m in cluster.members]
    duration_s = rounds * (SETTLE_S[1] + FAULT_HOLD_S[1] + 10.0) + 10.0
    load = Load(
        urls,
        list(reversed(urls)),
        "nemesis",
        message_count=int(rate_per_s * duration_s),
        rate_per_s=rate_per_s,
    )
    await load.declare(urls[0])

    async def nemesis() -> None:
        nonlocal leader
        for number in range(rounds):
            await asyncio.sleep(chooser.uniform(*SETTLE_S))
            fault = chooser.choice(FAULTS)
            victim = _victim(fault, leader, [m.node_id for m in cluster.members], chooser)
            hold_s = chooser.uniform(*FAULT_HOLD_S)
            log(f"{time.strftime('%H:%M:%S')} round {number + 1}: {fault} {victim} {hold_s:.1f} s")
            report.faults.append((fault, victim))
            await _inject(cluster, fault, victim, hold_s)
            leader = await _wait_healthy(cluster)
        load.finish_publishing()

    report.stats = await load.run(timeout_s=duration_s + 60, consumers=3, during=nemesis)
    confirms = sorted(report.stats.confirm_times_s)
    report.longest_unconfirmed_s = max(
        (after - before for before, after in zip(confirms, confirms[1:], strict=False)),
        default=0.0,
    )
    report.leader = await _wait_healthy(cluster)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=20, help="faults to inject (default 20)")
    parser.add_argument("--seed", type=int, default=None, help="default: from the clock")
    parser.add_argument(
        "--rate", type=float, default=300.0, help="confirmed publishes per second (default 300)"
    )
    add_base_port_argument(parser, default=26672)


def main(arguments: argparse.Namespace) -> int:
    seed = arguments.seed if arguments.seed is not None else int(time.time())
    members = members_from(arguments.base_port)
    with tempfile.TemporaryDirectory(prefix="warren-nemesis-") as scratch:
        cluster = LocalCluster(Path(scratch), members, extra_arguments=["--fault-injection"])
        cluster.start_all(log_to_file=True)
        try:
            report = asyncio.run(run(cluster, arguments.rounds, seed, arguments.rate))
        finally:
            cluster.stop()
    print(report.summary())
    return 0 if not report.stats.lost and not report.stats.unmarked_redeliveries else 1
