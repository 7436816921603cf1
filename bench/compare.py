"""Warren against RabbitMQ on this machine, in one run: the same `warren bench` workloads on a
three-node RabbitMQ cluster and on a three-node Warren cluster, then a table of ratios.

Run through bench/compare.sh (it installs what is missing). Everything started here is stopped
here: RabbitMQ nodes by rabbitmqctl, Warren nodes by pid. Each cluster uses its own ports and
data dirs under a scratch folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from warrenmq.cluster.local import LocalCluster, members_from

RABBIT_AMQP_PORT = 55672  # RabbitMQ nodes: AMQP 55672-55674, distribution 55772-55774
WARREN_AMQP_PORT = 56672  # Warren nodes: AMQP 56672-56674, Raft +1000, management +2000
DURATION_S = 10
STARTUP_TIMEOUT_S = 90.0

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


class RabbitCluster:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.nodes = [f"warrenbench{index}@localhost" for index in (1, 2, 3)]
        self.started_epmd = False  # whether start() brought up Erlang's port mapper
        # Debian's rabbitmq-server and rabbitmqctl run as the rabbitmq user (its own home and
        # Erlang cookie): the data dirs must be theirs
        self.environment = dict(os.environ)

    def _node_environment(self, index: int) -> dict[str, str]:
        base = self.directory / f"rabbit{index}"
        (base / "config").mkdir(parents=True, exist_ok=True)
        (base / "enabled_plugins").write_text("[].\n")
        for path in (self.directory, base, base / "config", base / "enabled_plugins"):
            shutil.chown(path, "rabbitmq", "rabbitmq")
        return {
            **self.environment,
            "RABBITMQ_NODENAME": self.nodes[index - 1],
            "RABBITMQ_NODE_PORT": str(RABBIT_AMQP_PORT + index - 1),
            "RABBITMQ_DIST_PORT": str(RABBIT_AMQP_PORT + 100 + index - 1),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "pid"),
            "RABBITMQ_GENERATED_CONFIG_DIR": str(base / "config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
        }

    def ctl(self, node: str, *arguments: str) -> None:
        # join_cluster logs errors about tables of the joining node even when it succeeds:
        # rabbitmqctl's output is shown only when the command fails
        done = subprocess.run(
            ["rabbitmqctl", "-n", node, *arguments],
            env=self.environment,
            capture_output=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(arguments)} failed: {done.stderr.decode()}")

    def start(self) -> None:
        # RabbitMQ's start spawns Erlang's port mapper if none runs: then it is ours to end
        self.started_epmd = (
            subprocess.run(["epmd", "-names"], capture_output=True, check=False).returncode != 0
        )
        for index in range(1, len(self.nodes) + 1):
            subprocess.run(
                ["rabbitmq-server", "-detached"],
                env=self._node_environment(index),
                check=True,
                timeout=60,
            )
        for node in self.nodes:
            self._await_startup(node)
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", self.nodes[0])
            self.ctl(node, "start_app")

    def _await_startup(self, node: str) -> None:
        """-detached returns before the node registers; await_startup fails until it has."""
        deadline_s = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            done = subprocess.run(
                ["rabbitmqctl", "-n", node, "await_startup"],
                env=self.environment,
                capture_output=True,
                check=False,
                timeout=120,
            )
            if done.returncode == 0:
                return
            if time.monotonic() > deadline_s:
                raise RuntimeError(f"{node} did not start: {done.stderr.decode()[-500:]}")
            time.sleep(1.0)

    def stop(self) -> None:
        for node in self.nodes:
            subprocess.run(
                ["rabbitmqctl", "-n", node, "stop"],
                env=self.environment,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=120,
            )
        # a node still booting ignores rabbitmqctl: end what is left by the pid it wrote
        for index in range(1, len(self.nodes) + 1):
            pid_file = self.directory / f"rabbit{index}" / "pid"
            if pid_file.exists() and pid_file.read_text().strip().isdigit():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        if self.started_epmd:
            time.sleep(1.0)
            subprocess.run(["epmd", "-kill"], capture_output=True, check=False, timeout=30)

    def urls(self) -> list[str]:
        return [f"amqp://guest:guest@127.0.0.1:{RABBIT_AMQP_PORT + i}/" for i in range(3)]


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
