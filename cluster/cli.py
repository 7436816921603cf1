"""The `warren` command.

warren node  run one node in the foreground
warren up    run a three-node cluster of local processes in the foreground
warren ctl   operate a running cluster (rabbitmqctl's and rabbitmq-diagnostics' commands)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import signal
import sys
import time
from pathlib import Path

from warrenmq.cluster import ctl
from warrenmq.cluster.config import load_config, parse_member
from warrenmq.cluster.local import LocalCluster, consecutive_members
from warrenmq.cluster.logs import configure_logging
from warrenmq.cluster.node import Node

__all__ = ["main"]

# --- warren node ------------------------------------------------------------------------


def _node_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file with node settings")
    parser.add_argument("--node-id", dest="node_id")
    parser.add_argument("--host", help="how clients and peers reach this node (default 127.0.0.1)")
    parser.add_argument(
        "--bind-host",
        dest="bind_host",
        help="where the listeners bind (default: --host; 0.0.0.0 in containers)",
    )
    parser.add_argument("--port", dest="amqp_port", type=int, help="AMQP port (default 5672)")
    parser.add_argument("--raft-port", dest="raft_port", type=int, help="default 25672")
    parser.add_argument("--management-port", dest="management_port", type=int, help="default 15672")
    parser.add_argument(
        "--prometheus-port", dest="prometheus_port", type=int, help="/metrics (default 15692)"
    )
    parser.add_argument(
        "--amqps-port", dest="amqps_port", type=int, help="AMQP over TLS (default 5671)"
    )
    parser.add_argument(
        "--tls-certificate", dest="tls_certificate_file", help="PEM certificate: enables amqps"
    )
    parser.add_argument("--tls-key", dest="tls_key_file", help="PEM private key")
    parser.add_argument(
        "--tls-ca", dest="tls_ca_file", help="PEM CA bundle for client certificates"
    )
    parser.add_argument(
        "--tls-verify-peer",
        dest="tls_verify_peer",
        action="store_true",
        default=None,
        help="ask clients for a certificate and verify it",
    )
    parser.add_argument(
        "--tls-fail-if-no-peer-cert",
        dest="tls_fail_if_no_peer_cert",
        action="store_true",
        default=None,
        help="with --tls-verify-peer: refuse clients without a certificate",
    )
    parser.add_argument(
        "--management-tls",
        dest="management_tls",
        action="store_true",
        default=None,
        help="serve the management API over HTTPS with the TLS certificate",
    )
    parser.add_argument(
        "--memory-high-watermark",
        dest="memory_high_watermark",
        type=float,
        help="fraction of RAM past which publishers are blocked (default 0.6)",
    )
    parser.add_argument(
        "--memory-high-watermark-bytes",
        dest="memory_high_watermark_bytes",
        type=int,
        help="absolute memory limit in bytes (replaces the fraction)",
    )
    parser.add_argument(
        "--disk-free-limit",
        dest="disk_free_limit_bytes",
        type=int,
        help="free bytes below which publishers are blocked (default 50 MB)",
    )
    parser.add_argument(
        "--journal-compaction-bytes",
        dest="journal_compaction_bytes",
        type=int,
        help="journal bytes past which a snapshot is taken (default 256 MiB)",
    )
    parser.add_argument(
        "--body-segment-bytes",
        dest="body_segment_bytes",
        type=int,
        help="size of the body store's segment files (default 64 MiB)",
    )
    parser.add_argument(
        "--member",
        dest="members",
        action="append",
        type=parse_member,
        metavar="ID@HOST:AMQP:RAFT:MANAGEMENT",
        help="a cluster member, this node included; repeat for each",
    )
    parser.add_argument(
        "--cluster-secret",
        dest="cluster_secret",
        help="shared by all members; authenticates peers on the Raft port",
    )
    parser.add_argument(
        "--data-dir",
        dest="data_dir",
        type=Path,
        help="where node data lives (default ./warren-data)",
    )
    parser.add_argument("--default-user", dest="default_user")
    parser.add_argument("--default-pass", dest="default_pass")
    parser.add_argument(
        "--heartbeat",
        dest="heartbeat_s",
        type=int,
        help="heartbeat offered in connection.tune, seconds (default 60)",
    )
    parser.add_argument("--frame-max", dest="frame_max_bytes", type=int)
    parser.add_argument("--channel-max", dest="channel_max", type=int)
    parser.add_argument(
        "--max-message-size",
        dest="message_size_max_bytes",
        type=int,
        help="largest message body accepted, bytes (default 16 MiB)",
    )
    parser.add_argument(
        "--write-buffer-high-bytes",
        dest="write_buffer_high_bytes",
        type=int,
        help="unsent bytes per connection past which its consumers wait (default 4 MiB)",
    )
    parser.add_argument(
        "--tx-max-bytes",
        dest="tx_bytes_max",
        type=int,
        help="what one channel's transaction may hold uncommitted, bytes (default 64 MiB)",
    )
    parser.add_argument(
        "--fault-injection",
        dest="fault_injection",
        action="store_true",
        default=None,
        help="tests only: obey the file 'fault' in the node's data dir ('isolate' cuts it off)",
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--log-format", choices=["json", "text"], default="json", help="default: JSON lines"
    )


_NODE_SETTINGS = (
    "prometheus_port",
    "amqps_port",
    "tls_certificate_file",
    "tls_key_file",
    "tls_ca_file",
    "tls_verify_peer",
    "tls_fail_if_no_peer_cert",
    "management_tls",
    "memory_high_watermark",
    "memory_high_watermark_bytes",
    "disk_free_limit_bytes",
    "journal_compaction_bytes",
    "body_segment_bytes",
    "node_id",
    "host",
    "bind_host",
    "amqp_port",
    "raft_port",
    "management_port",
    "members",
    "cluster_secret",
    "data_dir",
    "default_user",
    "default_pass",
    "heartbeat_s",
    "frame_max_bytes",
    "channel_max",
    "message_size_max_bytes",
    "write_buffer_high_bytes",
    "tx_bytes_max",
    "fault_injection",
)


# The collector's thresholds in a node process. With Python's (700, 10, 10), a queue growing
# to 1M messages (three tracked objects each) cost 19 full collections, up to 0.4 s each and
# 3.4 s in all: pauses longer than an election timeout. A young collection every 50,000 new
# objects, a middle one every 4 of those, a full one every 100 middle ones: 39 ms at most,
# 0.5 s in all. Messages die by reference count, not by the collector.
GC_THRESHOLDS = (50_000, 4, 100)


async def _run_node(arguments: argparse.Namespace) -> None:
    gc.set_threshold(*GC_THRESHOLDS)
    overrides = {name: getattr(arguments, name) for name in _NODE_SETTINGS}
    node = Node(load_config(arguments.config, overrides))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stopping.set)
    starting = loop.create_task(node.start())
    await asyncio.wait(
        [starting, loop.create_task(stopping.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    if starting.done():
        starting.result()
        config = node.config
        print(
            f"warren node {config.node_id} ready: amqp://{config.host}:{config.amqp_port}",
            flush=True,
        )
        await stopping.wait()
    else:
        starting.cancel()
    await node.stop()


# --- warren up --------------------------------------------------------------------------


def _up(arguments: argparse.Namespace) -> int:
    members = consecutive_members(
        arguments.nodes,
        arguments.host,
        arguments.amqp_port,
        arguments.raft_port,
        arguments.management_port,
    )
    cluster = LocalCluster(
        arguments.data_dir,
        members,
        arguments.log_level,
        prometheus_ports=[arguments.prometheus_port + index for index in range(len(members))],
    )
    cluster.start_all()
    for member in members:
        print(
            f"{member.node_id}: pid {cluster.processes[member.node_id].pid}, "
            f"amqp {member.amqp_port}, raft {member.raft_port}, "
            f"management {member.management_port}, "
            f"prometheus {cluster.prometheus_ports[member.node_id]}",
            flush=True,
        )
    print(
        f"cluster of {len(members)} starting; data in {cluster.directory}; Ctrl-C stops it",
        flush=True,
    )
    stop = False

    def request_stop(signal_number: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    reported: set[str] = set()
    # A node that dies is reported and the others go on, as a cluster should; Ctrl-C stops all.
    while not stop and any(cluster.is_running(member.node_id) for member in members):
        for member in members:
            if not cluster.is_running(member.node_id) and member.node_id not in reported:
                reported.add(member.node_id)
                code = cluster.processes[member.node_id].returncode
                print(f"{member.node_id} exited with {code}", flush=True)
        time.sleep(0.2)
    cluster.stop()
    print("cluster stopped", flush=True)
    return 0 if stop else 1


# --- warren ctl -------------------------------------------------------------------------


def _ctl(arguments: argparse.Namespace) -> int:
    if arguments.config is not None:
        members = load_config(Path(arguments.config)).cluster
        targets = [(member.host, member.management_port) for member in members]
    else:
        targets = [(arguments.host, arguments.management_port)]
    return ctl.run(arguments, targets)


# The benchmark and fault tools, imported only for their own command: each module has
# add_arguments and the function named here that runs it. A node's start (the test suite
# starts hundreds) then skips their imports and their clients' (aio-pika): about 0.1 s of a
# core each time.
TOOLS = {
    "bench": ("warrenmq.cluster.bench", "run", "measure throughput and latency against any broker"),
    "failover-bench": (
        "warrenmq.cluster.failover",
        "run",
        "kill the leader repeatedly under load",
    ),
    "nemesis": (
        "warrenmq.cluster.nemesis",
        "main",
        "random faults under a confirmed load, every id checked",
    ),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ctl"]:
        # rabbitmqctl mixes options and arguments (`set_permissions -p VHOST USER …`), which
        # argparse parses only as intermixed arguments, and not inside a subcommand
        ctl_parser = argparse.ArgumentParser(prog="warren ctl")
        ctl.add_arguments(ctl_parser)
        return _ctl(ctl_parser.parse_intermixed_args(argv[1:]))
    parser = argparse.ArgumentParser(prog="warren", description="Warren, an AMQP 0-9-1 broker")
    commands = parser.add_subparsers(dest="command", required=True)
    _node_arguments(commands.add_parser("node", help="run one node in the foreground"))
    up = commands.add_parser("up", help="run a local cluster in the foreground (Ctrl-C stops)")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--amqp-port", type=int, default=5672)
    up.add_argument("--raft-port", type=int, default=25672)
    up.add_argument("--management-port", type=int, default=15672)
    up.add_argument("--prometheus-port", type=int, default=15692)
    up.add_argument("--data-dir", type=Path, default=Path("warren-data"))
    up.add_argument("--log-level", default="INFO")
    run_tool = None
    for name, (module_name, entry, text) in TOOLS.items():
        tool_parser = commands.add_parser(name, help=text)
        if argv[:1] == [name]:
            module = importlib.import_module(module_name)
            module.add_arguments(tool_parser)
            run_tool = getattr(module, entry)
    # listed for `warren --help` only: `warren ctl …` is parsed above, before this parser
    commands.add_parser(
        "ctl", help="operate a running cluster, like rabbitmqctl and rabbitmq-diagnostics"
    )
    arguments = parser.parse_args(argv)
    if arguments.command == "up":
        return _up(arguments)
    if run_tool is not None:
        return int(run_tool(arguments))
    configure_logging(arguments.log_level, arguments.log_format)
    asyncio.run(_run_node(arguments))
    return 0


if __name__ == "__main__":
    sys.exit(main())
