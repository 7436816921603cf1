"""RabbitMQ from Debian's package as nodes of our own, for comparing Warren with it: each node
has its own ports and data dir under a scratch folder, and is stopped by rabbitmqctl (or the pid
it wrote). Used by compare.py (three nodes) and conformance.py (one, with the management API).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

STARTUP_TIMEOUT_S = 90.0


class RabbitCluster:
    def __init__(
        self,
        directory: Path,
        nodes: int = 3,
        amqp_port: int = 55672,
        management_port: int | None = None,
        name: str = "warrenbench",
    ) -> None:
        self.directory = directory
        self.amqp_port = amqp_port  # node i listens on amqp_port + i - 1, distribution + 100
        self.management_port = management_port  # node 1's management plugin, when given
        self.nodes = [f"{name}{index}@localhost" for index in range(1, nodes + 1)]
        self.started_epmd = False  # whether start() brought up Erlang's port mapper
        # Debian's rabbitmq-server and rabbitmqctl run as the rabbitmq user (its own home and
        # Erlang cookie): the data dirs must be theirs
        self.environment = dict(os.environ)

    def _node_environment(self, index: int) -> dict[str, str]:
        base = self.directory / f"rabbit{index}"
        (base / "config").mkdir(parents=True, exist_ok=True)
        plugins = "rabbitmq_management" if self.management_port and index == 1 else ""
        (base / "enabled_plugins").write_text(f"[{plugins}].\n")
        settings = ["loopback_users = none"]
        if plugins:
            settings.append(f"management.tcp.port = {self.management_port}")
        (base / "rabbitmq.conf").write_text("\n".join(settings) + "\n")
        paths = (self.directory, base, base / "config", base / "enabled_plugins")
        for path in (*paths, base / "rabbitmq.conf"):
            shutil.chown(path, "rabbitmq", "rabbitmq")
        return {
            **self.environment,
            "RABBITMQ_NODENAME": self.nodes[index - 1],
            "RABBITMQ_NODE_PORT": str(self.amqp_port + index - 1),
            "RABBITMQ_DIST_PORT": str(self.amqp_port + 100 + index - 1),
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

    def start(self, join: bool = True) -> None:
        """Start every node; the first time (`join`), cluster them with the first."""
        # RabbitMQ's start spawns Erlang's port mapper if none runs: then it is ours to end
        self.started_epmd |= (
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
        if not join:
            return
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

    def stop(self, restarting: bool = False) -> None:
        """Stop every node; Erlang's port mapper too if start() brought it up, unless the
        nodes are `restarting`."""
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
        if self.started_epmd and not restarting:
            time.sleep(1.0)
            subprocess.run(["epmd", "-kill"], capture_output=True, check=False, timeout=30)

    def pids(self) -> list[int]:
        """The nodes' Erlang VM processes (the pid files RabbitMQ wrote)."""
        return [
            int((self.directory / f"rabbit{index}" / "pid").read_text().strip())
            for index in range(1, len(self.nodes) + 1)
        ]

    def version(self) -> str:
        done = subprocess.run(
            ["rabbitmqctl", "-n", self.nodes[0], "version"],
            env=self.environment,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return done.stdout.strip()

    def urls(self) -> list[str]:
        return [
            f"amqp://guest:guest@127.0.0.1:{self.amqp_port + i}/" for i in range(len(self.nodes))
        ]
