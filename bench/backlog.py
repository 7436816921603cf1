"""A backlog bigger than memory, on RabbitMQ and Warren in one run (three nodes each).

For each backlog size N: one quorum queue; N persistent messages published with confirms (two
lean producers on nodes 1 and 2, 1,000 unconfirmed each) and no consumer; a full restart of
every node; then one consumer drains the queue (prefetch 1,000, an ack for every 100), checking
that each message arrives exactly once. Printed per broker: RSS per node idle, with the
backlog and after the restart; disk used; publish rate; time from the restart until every
node answers for the queue with all N; drain rate; the clients' CPU seconds (they must not be
the limit); for Warren the snapshot's size and how long writing and reading it take.

Run through bench/backlog.sh (`make bench-backlog`; it installs RabbitMQ if missing). Every
process started here is stopped here: RabbitMQ nodes by rabbitmqctl, Warren nodes by pid.
"""

from __future__ import annotations

import argparse
import gzip
import io
import multiprocessing
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path

import pysyncobj.pickle
from rabbit import RabbitCluster  # bench/rabbit.py: this script runs from bench/

from warrenmq.cluster import lean
from warrenmq.cluster.local import LocalCluster, members_from
from warrenmq.replication.raft_snapshot import load_snapshot
from warrenmq.replication.raft_wire import tune_pysyncobj

WARREN_AMQP_PORT = 56672
RABBIT_AMQP_PORT = 55672
QUEUE = "backlog"
SIZE = 1024
AVAILABLE_TIMEOUT_S = 600.0
STALL_TIMEOUT_S = 60.0  # a drain with no delivery for this long has failed
MIB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def disk_bytes(path: Path) -> int:
    done = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[0])


def _timed(work: typing.Callable[[], object]) -> tuple[float, float]:
    """Seconds of wall time and of this process's CPU that `work` took."""
    started_wall, started_cpu = time.monotonic(), time.process_time()
    work()
    return time.monotonic() - started_wall, time.process_time() - started_cpu


def _publish(arguments: tuple[int, int, int]) -> float:
    """A producer's share of the backlog; its CPU seconds."""
    port, first, count = arguments
    connection = lean.Connection("127.0.0.1", port)
    publisher = lean.Publisher(connection, "", QUEUE, SIZE, window=1000, first_id=first)
    _, cpu_s = _timed(lambda: publisher.run(float("inf"), count=count))
    connection.close()
    if publisher.confirmed != count:
        raise RuntimeError(f"{count - publisher.confirmed} messages were not confirmed")
    return cpu_s


def drain(port: int, count: int) -> tuple[float, float]:
    """One consumer (prefetch 1,000, a multiple ack for every 100) takes the whole backlog and
    checks that every message came exactly once: (messages per second, its CPU seconds)."""
    connection = lean.Connection("127.0.0.1", port)
    consumer = lean.Consumer(connection, QUEUE, qos=1000, multi_ack_every=100)
    progress = [0, time.monotonic()]  # messages so far, and when that count was reached

    def stalled() -> bool:
        if consumer.received != progress[0]:
            progress[:] = [consumer.received, time.monotonic()]
        return time.monotonic() - progress[1] > STALL_TIMEOUT_S

    wall_s, cpu_s = _timed(lambda: consumer.run(stalled, count=count))
    connection.close()
    if sorted(consumer.arrivals.ids) != list(range(count)):
        raise RuntimeError("the drain lost or duplicated messages")
    return count / wall_s, cpu_s


def publish_backlog(ports: list[int], count: int) -> tuple[float, float]:
    """Two producers, half each: (messages per second overall, their CPU seconds)."""
    half = count // 2
    jobs = [(ports[0], 0, half), (ports[1], half, count - half)]
    started_s = time.monotonic()
    with multiprocessing.Pool(2) as pool:
        cpu_s = pool.map(_publish, jobs)
    wall_s = time.monotonic() - started_s
    return count / wall_s, sum(cpu_s)


def wait_available(port: int, count: int) -> float:
    """Seconds until the queue answers a passive declare with every message."""
    started_s = time.monotonic()
    while time.monotonic() - started_s < AVAILABLE_TIMEOUT_S:
        try:
            connection = lean.Connection("127.0.0.1", port)
            try:
                if connection.message_count(QUEUE) == count:
                    return time.monotonic() - started_s
            finally:
                connection.close()
        except (OSError, RuntimeError, ConnectionError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the queue never held all {count} messages again")


class Broker(typing.Protocol):
    name: str

    def start(self) -> None: ...

    def restart(self) -> float: ...

    def stop(self) -> None: ...

    def pids(self) -> list[int]: ...

    def ports(self) -> list[int]: ...

    def data_dirs(self) -> list[Path]: ...

    def logs(self) -> list[Path]: ...


class Rabbit:
    name = "RabbitMQ"

    def __init__(self, directory: Path) -> None:
        directory.mkdir()
        self.cluster = RabbitCluster(directory, amqp_port=RABBIT_AMQP_PORT)

    def start(self) -> None:
        self.cluster.start()

    def restart(self) -> float:
        self.cluster.stop(restarting=True)
        started_s = time.monotonic()
        self.cluster.start(join=False)
        return started_s

    def stop(self) -> None:
        self.cluster.stop()

    def pids(self) -> list[int]:
        return self.cluster.pids()

    def ports(self) -> list[int]:
        return [RABBIT_AMQP_PORT + index for index in range(3)]

    def data_dirs(self) -> list[Path]:
        return [self.cluster.directory / f"rabbit{index}" / "mnesia" for index in (1, 2, 3)]

    def logs(self) -> list[Path]:
        return []  # RabbitMQ's own logs are under its data dirs


class Warren:
    name = "Warren"

    def __init__(self, directory: Path) -> None:
        self.members = members_from(WARREN_AMQP_PORT)
        self.cluster = LocalCluster(directory, self.members, log_level="WARNING")

    def start(self) -> None:
        self.cluster.start_all(log_to_file=True)
        try:
            self.cluster.wait_healthy()
        except TimeoutError:
            for log in self.logs():  # the scratch dir goes with the failure: say why first
                lines = log.read_text(errors="replace").splitlines() if log.exists() else []
                print(f"--- {log.name}, last lines:", *lines[-20:], sep="\n", file=sys.stderr)
            raise

    def restart(self) -> float:
        self.cluster.stop()
        started_s = time.monotonic()
        self.cluster.start_all(log_to_file=True)
        return started_s

    def stop(self) -> None:
        self.cluster.stop()

    def pids(self) -> list[int]:
        return [process.pid for process in self.cluster.processes.values()]

    def ports(self) -> list[int]:
        return [member.amqp_port for member in self.members]

    def data_dirs(self) -> list[Path]:
        return [self.cluster.directory / member.node_id for member in self.members]

    def logs(self) -> list[Path]:
        return [self.cluster.directory / f"{member.node_id}.log" for member in self.members]


def snapshot_figures(data_dir: Path) -> dict[str, float]:
    """The snapshot's size, and the seconds the forked child takes to write it (pickle, gzip
    level 1) and a restarting node to read it."""
    path = data_dir / "raft.snapshot"
    if not path.exists():
        return {}
    tune_pysyncobj()  # the pickle protocol the nodes use
    started_s = time.monotonic()
    snapshot = load_snapshot(path)
    read_s = time.monotonic() - started_s
    started_s = time.monotonic()
    with gzip.GzipFile(fileobj=io.BytesIO(), mode="wb", compresslevel=1) as zipped:
        pysyncobj.pickle.dump(snapshot, zipped)
    write_s = time.monotonic() - started_s
    return {"snapshot_mib": path.stat().st_size / MIB, "write_s": write_s, "read_s": read_s}


def run(broker: Broker, count: int) -> dict[str, typing.Any]:
    figures: dict[str, typing.Any] = {}
    broker.start()
    try:
        time.sleep(2.0)  # settle
        figures["rss_idle_mib"] = [rss_bytes(pid) / MIB for pid in broker.pids()]
        setup = lean.Connection("127.0.0.1", broker.ports()[0])
        setup.declare_queue(QUEUE)
        setup.close()
        figures["publish_per_s"], figures["publish_client_cpu_s"] = publish_backlog(
            broker.ports(), count
        )
        wait_available(broker.ports()[0], count)
        time.sleep(2.0)
        figures["rss_backlog_mib"] = [rss_bytes(pid) / MIB for pid in broker.pids()]
        figures["disk_mib"] = [disk_bytes(path) / MIB for path in broker.data_dirs()]
        if isinstance(broker, Warren):
            figures["snapshot"] = snapshot_figures(broker.data_dirs()[0])
        started_s = broker.restart()
        for port in broker.ports():  # every node serves the queue again
            wait_available(port, count)
        figures["restart_s"] = time.monotonic() - started_s
        figures["rss_restarted_mib"] = [rss_bytes(pid) / MIB for pid in broker.pids()]
        figures["drain_per_s"], figures["drain_client_cpu_s"] = drain(broker.ports()[1], count)
    except Exception:
        show_trouble(broker)  # the logs go with the temporary directory
        raise
    finally:
        broker.stop()
    return figures


def show_trouble(broker: Broker, lines: int = 20) -> None:
    """The last warnings, errors and criticals of each node's log, for a run that failed."""
    for path in broker.logs():
        if not path.exists():
            continue
        with path.open(errors="replace") as log:
            trouble = [line for line in log if any(level in line for level in LEVELS)]
        print(f"--- {path.name}: its last {lines} warnings and errors", file=sys.stderr)
        sys.stderr.writelines(trouble[-lines:])


LEVELS = ('"level":"warning"', '"level":"error"', '"level":"critical"')  # the JSON log lines


def show(name: str, count: int, figures: dict[str, typing.Any]) -> None:
    def mib(values: list[float]) -> str:
        return " / ".join(f"{value:.0f}" for value in values)

    growth = [
        b - i for b, i in zip(figures["rss_backlog_mib"], figures["rss_idle_mib"], strict=True)
    ]
    per_message = max(growth) * MIB / count
    print(f"{name} with {count:,} × {SIZE} B:")
    print(
        f"  RSS per node idle / backlog / restarted (MiB): {mib(figures['rss_idle_mib'])} | "
        f"{mib(figures['rss_backlog_mib'])} | {mib(figures['rss_restarted_mib'])}"
    )
    print(f"  RSS growth per queued message (largest node): {per_message:.0f} B")
    print(f"  disk per node (MiB): {mib(figures['disk_mib'])}")
    print(
        f"  publish {figures['publish_per_s']:,.0f} msg/s (client CPU "
        f"{figures['publish_client_cpu_s']:.1f} s), restart until all available "
        f"{figures['restart_s']:.1f} s, drain {figures['drain_per_s']:,.0f} msg/s (client CPU "
        f"{figures['drain_client_cpu_s']:.1f} s)"
    )
    snapshot = figures.get("snapshot")
    if snapshot:
        print(
            f"  snapshot {snapshot['snapshot_mib']:.1f} MiB, written in {snapshot['write_s']:.1f} s"
            f" (forked child), read in {snapshot['read_s']:.1f} s"
        )
    figures["rss_per_message_b"] = per_message


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("counts", nargs="*", type=int, default=[200_000, 1_000_000])
    options = parser.parse_args()
    results: list[tuple[int, dict[str, typing.Any], dict[str, typing.Any]]] = []
    for count in options.counts:
        with tempfile.TemporaryDirectory(prefix="warren-backlog-") as scratch:
            directory = Path(scratch)
            directory.chmod(0o755)  # the rabbitmq user must reach its data dirs below
            rabbit = run(Rabbit(directory / "rabbitmq"), count)
            show("RabbitMQ", count, rabbit)
            warren = run(Warren(directory / "warren"), count)
            show("Warren", count, warren)
            results.append((count, warren, rabbit))
    print("\nWarren / RabbitMQ (below 1 is better for RSS and restart, above 1 for rates)")
    print(f"{'backlog':>10} {'RSS/message':>12} {'publish':>8} {'restart':>8} {'drain':>7}")
    for count, warren, rabbit in results:
        print(
            f"{count:>10,} {warren['rss_per_message_b'] / rabbit['rss_per_message_b']:>12.2f} "
            f"{warren['publish_per_s'] / rabbit['publish_per_s']:>8.2f} "
            f"{warren['restart_s'] / rabbit['restart_s']:>8.2f} "
            f"{warren['drain_per_s'] / rabbit['drain_per_s']:>7.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
