"""Warren against RabbitMQ on this machine, in one run: the same `warren bench` workloads on a
three-node RabbitMQ cluster and on a three-node Warren cluster, each cluster's CPU over 30 idle
seconds, then a table of both brokers' figures and their ratios.

Every workload publishes persistent messages to quorum queues with confirms, 1,000 unconfirmed
per producer, 2 producers on nodes 1 and 2 and consumers on nodes 2 and 3 (an ack each,
prefetch 1,000), for DURATION_S seconds, then drains. The client's CPU is printed beside each
figure: a process near 100% of a core would be measuring itself.

Run through bench/compare.sh (it installs what is missing). Everything started here is stopped
here: RabbitMQ nodes by rabbitmqctl, Warren nodes by pid. Each cluster uses its own ports and
data dirs under a scratch folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rabbit import RabbitCluster  # bench/rabbit.py: this script runs from bench/

from warrenmq.cluster.local import LocalCluster, members_from

WARREN_AMQP_PORT = 56672  # Warren nodes: AMQP 56672-56674, Raft +1000, management +2000
DURATION_S = 20
IDLE_S = 30
SETTLE_S = 5  # before the idle measurement, for what the last workload left behind

WORKLOADS = [  # (label, bench arguments after COMMON's)
    ("16 B", ["--size", "16"]),
    ("1 KiB", ["--size", "1024"]),
    ("64 KiB", ["--size", "65536"]),
    ("1 KiB at 1,000/s", ["--size", "1024", "--rate", "500"]),  # 2 producers × 500
    (
        "10 queues",
        ["--queue-pattern", "bench-%d", "--queue-pattern-to", "10"]
        + ["--producers", "10", "--consumers", "10"],
    ),
    (
        "fanout to 3",
        ["--exchange", "bench-fanout", "--type", "fanout", "--queue-pattern", "fanout-%d"]
        + ["--queue-pattern-to", "3", "--consumers", "3"],
    ),
]
COMMON = [
    "--queue-type",
    "quorum",
    "--producers",
    "2",
    "--consumers",
    "2",
    "--persistent",
    "--confirm",
    "1000",
    "--qos",
    "1000",
    "--duration",
    str(DURATION_S),
    "--drain-idle-s",
    "2",
    "--json",
]


def bench(urls: list[str], arguments: list[str]) -> dict:
    command = [sys.executable, "-m", "warrenmq.cluster.cli", "bench", *COMMON, *arguments]
    for url in urls[:2]:
        command += ["--publish-url", url]
    for url in urls[1:]:
        command += ["--consume-url", url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if not result.stdout.strip():
        raise RuntimeError(f"warren bench {' '.join(arguments)} failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout)


def client_cpu_max(report: dict) -> float:
    """The busiest client process, in % of one core over the publishing seconds."""
    return max(
        report["client_cpu_percent"]["producers"] + report["client_cpu_percent"]["consumers"]
    )


def run_workloads(name: str, urls: list[str]) -> list[dict]:
    reports = []
    for label, arguments in WORKLOADS:
        report = bench(urls, arguments)
        print(
            f"{name:>8} {label:>16}: confirmed {report['confirmed_per_s']:>8}/s, consumed while "
            f"publishing {report['consumed_while_publishing_per_s']:>8}/s, confirm p50/p99 "
            f"{report['confirm_latency_ms'].get('p50')}/{report['confirm_latency_ms'].get('p99')}"
            f" ms, lost {report['lost']} (left in the queues {report['left_in_queues']}, client"
            f" errors {report['client_errors']}), busiest client {client_cpu_max(report)}%"
            " of a core",
            flush=True,
        )
        reports.append(report)
    return reports


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu_percent(pids: list[int]) -> float:
    """The cluster's CPU over IDLE_S seconds with no client, in % of one core, all nodes."""
    time.sleep(SETTLE_S)
    before = [cpu_seconds(pid) for pid in pids]
    time.sleep(IDLE_S)
    return 100 * sum(cpu_seconds(pid) - was for pid, was in zip(pids, before, strict=True)) / IDLE_S


def _ratio(mine: float | None, other: float | None) -> str:
    return f"{mine / other:.2f}" if mine is not None and other else "n/a"


def print_table(warren: list[dict], rabbit: list[dict], idle: tuple[float, float]) -> None:
    print(
        "\nWarren (W) / RabbitMQ (R): quorum queues, persistent, confirm window 1,000 per "
        f"producer, {DURATION_S} s"
    )
    print(
        f"{'workload':>16} | {'confirmed/s W':>13} {'R':>7} {'W/R':>5} | {'consumed/s* W':>13} "
        f"{'R':>7} {'W/R':>5} | {'confirm p50 ms W':>16} {'R':>6} | {'p99 W':>6} {'R':>6} "
        f"{'W/R':>5} | {'client CPU% W':>13} {'R':>5} | lost W/R"
    )
    for (label, _), ours, theirs in zip(WORKLOADS, warren, rabbit, strict=True):
        figures = []
        for key in ("confirmed_per_s", "consumed_while_publishing_per_s"):
            figures += [
                f"{ours[key]:>13.0f} {theirs[key]:>7.0f} {_ratio(ours[key], theirs[key]):>5}"
            ]
        latency = [report["confirm_latency_ms"] for report in (ours, theirs)]
        p50 = [f"{value.get('p50', 0):.0f}" for value in latency]
        p99 = [value.get("p99") for value in latency]
        print(
            f"{label:>16} | {figures[0]} | {figures[1]} | {p50[0]:>16} {p50[1]:>6} | "
            f"{p99[0] or 0:>6.0f} {p99[1] or 0:>6.0f} {_ratio(p99[0], p99[1]):>5} | "
            f"{client_cpu_max(ours):>13} {client_cpu_max(theirs):>5} | "
            f"{ours['lost']}/{theirs['lost']}"
        )
    print(
        f"{'idle CPU, 3 nodes':>16} | {idle[0]:.1f}% of a core for Warren, {idle[1]:.1f}% for "
        f"RabbitMQ: W/R {_ratio(*idle)}"
    )
    print(
        "* consumed while publishing. Throughput: above 1 is better for Warren; latency and "
        "idle CPU: below 1. Client CPU: the busiest producer or consumer process."
    )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="warren-compare-") as scratch:
        directory = Path(scratch)
        directory.chmod(0o755)  # the rabbitmq user must reach its data dirs below
        rabbit = RabbitCluster(directory / "rabbitmq")
        rabbit.directory.mkdir()
        try:
            rabbit.start()
            rabbit_reports = run_workloads("RabbitMQ", rabbit.urls())
            rabbit_idle = idle_cpu_percent(rabbit.pids())
        finally:
            rabbit.stop()
        members = members_from(WARREN_AMQP_PORT)
        warren = LocalCluster(directory / "warren", members, log_level="WARNING")
        warren.start_all(log_to_file=True)
        try:
            warren.wait_healthy()
            urls = [f"amqp://guest:guest@127.0.0.1:{m.amqp_port}/" for m in members]
            warren_reports = run_workloads("Warren", urls)
            warren_idle = idle_cpu_percent([p.pid for p in warren.processes.values()])
        finally:
            warren.stop()
    print_table(warren_reports, rabbit_reports, (warren_idle, rabbit_idle))
    return 0


if __name__ == "__main__":
    sys.exit(main())
