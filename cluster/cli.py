"""The `warren` command: `warren node` runs one node."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from warrenmq.cluster.config import load_config
from warrenmq.cluster.node import Node

__all__ = ["main"]


def _node_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file with node settings")
    parser.add_argument("--node-id", dest="node_id")
    parser.add_argument("--host", help="address of the AMQP listener (default 127.0.0.1)")
    parser.add_argument("--port", dest="amqp_port", type=int, help="AMQP port (default 5672)")
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
    parser.add_argument("--log-level", default="INFO")


async def _run_node(arguments: argparse.Namespace) -> None:
    overrides = {
        name: getattr(arguments, name)
        for name in (
            "node_id",
            "host",
            "amqp_port",
            "data_dir",
            "default_user",
            "default_pass",
            "heartbeat_s",
            "frame_max_bytes",
            "channel_max",
            "message_size_max_bytes",
        )
    }
    node = Node(load_config(arguments.config, overrides))
    await node.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stopping.set)
    print(
        f"warren node {node.config.node_id} ready: amqp://{node.config.host}:"
        f"{node.config.amqp_port}",
        flush=True,
    )
    await stopping.wait()
    await node.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warren", description="Warren, an AMQP 0-9-1 broker")
    commands = parser.add_subparsers(dest="command", required=True)
    _node_arguments(commands.add_parser("node", help="run one node in the foreground"))
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=arguments.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if arguments.command == "node":
        asyncio.run(_run_node(arguments))
    return 0


if __name__ == "__main__":
    sys.exit(main())
