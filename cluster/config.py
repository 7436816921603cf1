"""A node's configuration: defaults, then a TOML file, then environment, then flags."""

from __future__ import annotations

import os
import tomllib
import typing
from dataclasses import dataclass, fields, replace
from pathlib import Path

__all__ = ["NodeConfig", "load_config"]


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: str = "warren-1"
    host: str = "127.0.0.1"  # where the AMQP listener binds
    amqp_port: int = 5672
    data_dir: Path = Path("warren-data")  # this node's log and snapshot live below it
    default_user: str = "guest"  # created on first boot, like RABBITMQ_DEFAULT_USER
    default_pass: str = "guest"
    default_vhost: str = "/"
    loopback_users: tuple[str, ...] = ("guest",)  # RabbitMQ: these may log in from loopback only
    channel_max: int = 2047
    frame_max_bytes: int = 131072
    heartbeat_s: int = 60
    message_size_max_bytes: int = 16 * 1024 * 1024
    proposals_in_flight_max: int = 2048  # per connection; past it the socket is not read

    @property
    def node_data_dir(self) -> Path:
        return self.data_dir / self.node_id


# Environment variables a container sets, as RabbitMQ's image reads RABBITMQ_DEFAULT_USER/PASS.
_ENVIRONMENT = {
    "WARREN_NODE_ID": "node_id",
    "WARREN_DEFAULT_USER": "default_user",
    "WARREN_DEFAULT_PASS": "default_pass",
    "WARREN_DATA_DIR": "data_dir",
}


def _coerce(name: str, value: typing.Any) -> typing.Any:
    kind = {f.name: f.type for f in fields(NodeConfig)}[name]
    if kind == "int":
        return int(value)  # type: ignore[call-overload]
    if kind == "Path":
        return Path(str(value))
    if kind == "tuple[str, ...]":
        return tuple(value) if isinstance(value, list) else tuple(str(value).split(","))
    return value


def load_config(
    path: Path | None = None,
    overrides: dict[str, object] | None = None,
    environment: typing.Mapping[str, str] | None = None,
) -> NodeConfig:
    values: dict[str, typing.Any] = {}
    if path is not None:
        with open(path, "rb") as config_file:
            values.update(tomllib.load(config_file))
    environment = os.environ if environment is None else environment
    for variable, name in _ENVIRONMENT.items():
        if variable in environment:
            values[name] = environment[variable]
    values.update({name: value for name, value in (overrides or {}).items() if value is not None})
    known = {f.name for f in fields(NodeConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
    return replace(NodeConfig(), **{name: _coerce(name, value) for name, value in values.items()})
