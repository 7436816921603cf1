"""Warren against RabbitMQ on this machine, in one run: the same `warren bench` workloads on a
three-node RabbitMQ cluster and on a three-node Warren cluster, then a table of ratios.

Run through bench/compare.sh (it installs what is missing). Everything started here is stopped
here: RabbitMQ nodes by rabbitmqctl, Warren nodes by pid. Each cluster uses its own ports and
data dirs under a scratch folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rabbit import RabbitCluster  # bench/rabbit.py: this script runs from bench/

from warrenmq.cluster.local import LocalCluster, members_from

WARREN_AMQP_PORT = 56672  # Warren nodes: AMQP 56672-56674, Raft +1000, management +2000
DURATION_S = 10

WORKLOADS = [  # (label, bench arguments)
    ("16 B", ["--size", "16"]),
    ("1 KiB", ["--size", "1024"]),
    ("64 KiB", ["--size", "65536", "--confirm", "20"]),
    ("1 KiB at 1000/s", ["--size", "1024", "--rate", "500"]),  # 2 producers × 500
]
COMMON = [
    "--queue-type",
    "quorum",
    "--producers",
    "2",
    "--consumers",
    "2",
    "--persistent",
    "--duration",
    str(DURATION_S),
    "--json",
]


def bench(urls: list[str], arguments: list[str]) -> dict:
    command = [sys.executable, "-m", "warrenmq.cluster.cli", "bench", *COMMON, *arguments]
    for url in urls:
        command += ["--url", url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    return json.loads(result.stdout)


def run_workloads(name: str, urls: list[str]) -> list[dict]:
    reports = []
    for label, arguments in WORKLOADS:
        report = bench(urls, arguments)
        print(
            f"{name:>8} {label:>16}: confirmed {report['confirmed_per_s']:>8}/s, consumed "
            f"{report['consumed_per_s']:>8}/s, confirm p99 {report['confirm_latency_ms']['p99']}"
            f" ms, lost {report['lost']}",
            flush=True,
        )
        reports.append(report)
    return reports


def _ratio(ours: dict, theirs: dict, key: str, sub: str | None = None) -> str:
    mine = ours[key][sub] if sub else ours[key]
    other = theirs[key][sub] if sub else theirs[key]
    return f"{mine / other:.2f}" if other else "n/a"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="warren-compare-") as scratch:
        directory = Path(scratch)
        directory.chmod(0o755)  # the rabbitmq user must reach its data dirs below
        rabbit = RabbitCluster(directory / "rabbitmq")
        rabbit.directory.mkdir()
        try:
            rabbit.start()
            rabbit_reports = run_workloads("RabbitMQ", rabbit.urls())
        finally:
            rabbit.stop()
        members = members_from(WARREN_AMQP_PORT)
        warren = LocalCluster(directory / "warren", members, log_level="WARNING")
        warren.start_all(log_to_file=True)
        try:
            warren.wait_healthy()
            urls = [f"amqp://guest:guest@127.0.0.1:{m.amqp_port}/" for m in members]
            warren_reports = run_workloads("Warren", urls)
        finally:
            warren.stop()
    print("\nWarren / RabbitMQ (quorum queue, 2 producers, 2 consumers, confirms, persistent)")
    print(
        f"{'workload':>16} {'confirmed/s':>12} {'consumed/s':>11} {'confirm p99':>12} "
        f"{'e2e p99':>9} {'lost W/R':>9}"
    )
    for (label, _), ours, theirs in zip(WORKLOADS, warren_reports, rabbit_reports, strict=True):
        print(
            f"{label:>16} {_ratio(ours, theirs, 'confirmed_per_s'):>12} "
            f"{_ratio(ours, theirs, 'consumed_per_s'):>11} "
            f"{_ratio(ours, theirs, 'confirm_latency_ms', 'p99'):>12} "
            f"{_ratio(ours, theirs, 'end_to_end_latency_ms', 'p99'):>9} "
            f"{ours['lost']:>4}/{theirs['lost']:<4}"
        )
    print("(throughput: above 1 is better for Warren; latency: below 1 is better for Warren)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
