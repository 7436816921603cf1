"""A node's configuration: defaults, then a TOML file, then environment, then flags.

A cluster is its list of members; every node of it gets the same list and the same cluster secret,
and finds its own entry by node_id. A node with no members list forms a cluster of one.

    node_id = "warren-1"
    cluster_secret = "…"
    deprecated_features.permit.global_qos = false
    [[members]]
    node_id = "warren-1"
    host = "127.0.0.1"
    amqp_port = 5672
    raft_port = 25672
    management_port = 15672
"""

from __future__ import annotations

import os
import tomllib
import typing
from dataclasses import dataclass, fields, replace
from pathlib import Path

__all__ = ["Member", "NodeConfig", "load_config", "parse_member"]


@dataclass(frozen=True, slots=True)
class Member:
    node_id: str
    host: str
    amqp_port: int
    raft_port: int
    management_port: int

    @property
    def raft_address(self) -> str:
        return f"{self.host}:{self.raft_port}"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: str = "warren-1"
    host: str = "127.0.0.1"  # how clients and peers reach this node
    bind_host: str = ""  # where its listeners bind; "" means `host` (containers: 0.0.0.0)
    amqp_port: int = 5672
    raft_port: int = 25672  # peers only: never publish it outside the cluster network
    management_port: int = 15672
    prometheus_port: int = 15692  # /metrics in Prometheus text format
    amqps_port: int = 5671  # AMQP over TLS; listens only when tls_certificate_file is set
    tls_certificate_file: str = ""  # PEM certificate chain of this node
    tls_key_file: str = ""  # PEM private key of that certificate
    tls_ca_file: str = ""  # PEM CAs that client certificates must chain to
    tls_verify_peer: bool = False  # ask clients for a certificate and verify it (verify_peer)
    tls_fail_if_no_peer_cert: bool = False  # and refuse clients that send none
    management_tls: bool = False  # serve the management API over HTTPS with the same certificate
    members: tuple[Member, ...] = ()  # the whole cluster, this node included; () = alone
    cluster_secret: str = ""  # authenticates peers on the Raft port (like Erlang's cookie)
    data_dir: Path = Path("warren-data")  # this node's log and snapshot live below it
    default_user: str = "guest"  # created on first boot, like RABBITMQ_DEFAULT_USER
    default_pass: str = "guest"
    default_vhost: str = "/"
    # SASL ANONYMOUS (AMQP 1.0) logs in as this user, as RabbitMQ 4.x's anonymous_login_user;
    # "" offers no ANONYMOUS. Its loopback rule applies as for any login.
    anonymous_login_user: str = "guest"
    anonymous_login_pass: str = "guest"
    loopback_users: tuple[str, ...] = ("guest",)  # RabbitMQ: these may log in from loopback only
    channel_max: int = 2047
    frame_max_bytes: int = 131072
    heartbeat_s: int = 60
    message_size_max_bytes: int = 16 * 1024 * 1024
    # RabbitMQ's vm_memory_high_watermark.relative (4.x default), or an absolute limit in bytes
    memory_high_watermark: float = 0.6
    memory_high_watermark_bytes: int = 0  # when set, it replaces the relative watermark
    disk_free_limit_bytes: int = 50_000_000  # RabbitMQ's default disk_free_limit.absolute
    # past this many journal bytes a snapshot is taken and the journal cut: it bounds the
    # journal's disk and what a restart after a crash replays
    journal_compaction_bytes: int = 256 * 1024 * 1024
    body_segment_bytes: int = 64 * 1024 * 1024  # the body store's files are sealed past this
    proposals_in_flight_max: int = 2048  # per connection; past it the socket is not read
    # per connection: past this many unsent bytes its consumers get nothing until a quarter
    write_buffer_high_bytes: int = 4 * 1024 * 1024
    tx_bytes_max: int = 64 * 1024 * 1024  # per channel: what a transaction may hold uncommitted
    node_down_after_s: float = 3.0  # the leader declares a silent member lost after this
    minority_close_after_s: float = 3.0  # cut off from the majority this long: close clients
    # RabbitMQ's deprecated_features.permit.<name> (4.2's defaults: permitted; Amazon MQ's 4.3
    # brokers deny both): transient (non-durable) queues that are not exclusive, global QoS
    permit_transient_nonexcl_queues: bool = True
    permit_global_qos: bool = True
    # tests only: the node follows the file `fault` in its data dir ("isolate": a partition)
    fault_injection: bool = False

    @property
    def node_data_dir(self) -> Path:
        return self.data_dir / self.node_id

    @property
    def listen_host(self) -> str:
        return self.bind_host or self.host

    @property
    def me(self) -> Member:
        return Member(self.node_id, self.host, self.amqp_port, self.raft_port, self.management_port)

    @property
    def cluster(self) -> tuple[Member, ...]:
        return self.members or (self.me,)

    @property
    def peers(self) -> tuple[Member, ...]:
        return tuple(member for member in self.cluster if member.node_id != self.node_id)


# Environment variables a container sets. RabbitMQ's own names are read too, so a deployment
# moving from RabbitMQ's image keeps its settings; Warren's names win where both are set.
_ENVIRONMENT = {
    "RABBITMQ_DEFAULT_USER": "default_user",
    "RABBITMQ_DEFAULT_PASS": "default_pass",
    "RABBITMQ_DEFAULT_VHOST": "default_vhost",
    "WARREN_NODE_ID": "node_id",
    "WARREN_DEFAULT_USER": "default_user",
    "WARREN_DEFAULT_PASS": "default_pass",
    "WARREN_DATA_DIR": "data_dir",
    "WARREN_CLUSTER_SECRET": "cluster_secret",
    "WARREN_TLS_CERTIFICATE_FILE": "tls_certificate_file",
    "WARREN_TLS_KEY_FILE": "tls_key_file",
    "WARREN_TLS_CA_FILE": "tls_ca_file",
}


def parse_member(text: str) -> Member:
    """NODE_ID@HOST:AMQP_PORT:RAFT_PORT:MANAGEMENT_PORT, as --member takes it."""
    node_id, _, address = text.partition("@")
    host, amqp_port, raft_port, management_port = address.rsplit(":", 3)
    return Member(node_id, host, int(amqp_port), int(raft_port), int(management_port))


def _coerce(name: str, value: typing.Any) -> typing.Any:
    kind = {f.name: f.type for f in fields(NodeConfig)}[name]
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
    if kind == "Path":
        return Path(str(value))
    if kind == "tuple[str, ...]":
        return tuple(value) if isinstance(value, list) else tuple(str(value).split(","))
    if kind == "tuple[Member, ...]":
        return tuple(
            member
            if isinstance(member, Member)
            else parse_member(member)
            if isinstance(member, str)
            else Member(**member)
            for member in value
        )
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
    # RabbitMQ's `deprecated_features.permit.NAME = false`, a TOML table here
    deprecated = values.pop("deprecated_features", {})
    for name, permitted in (
        deprecated.get("permit", {}) if isinstance(deprecated, dict) else {}
    ).items():
        values[f"permit_{name}"] = permitted
    environment = os.environ if environment is None else environment
    for variable, name in _ENVIRONMENT.items():
        if variable in environment:
            values[name] = environment[variable]
    values.update({name: value for name, value in (overrides or {}).items() if value is not None})
    known = {f.name for f in fields(NodeConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
    config = replace(NodeConfig(), **{name: _coerce(name, value) for name, value in values.items()})
    return _take_own_member_entry(config)


def _take_own_member_entry(config: NodeConfig) -> NodeConfig:
    """In a cluster, this node's host and ports are the ones its member entry gives."""
    if not config.members:
        return config
    own = [member for member in config.members if member.node_id == config.node_id]
    if len(own) != 1:
        raise ValueError(f"node_id {config.node_id!r} must appear once in members")
    if len(config.members) > 1 and not config.cluster_secret:
        raise ValueError("a cluster of several members needs a cluster_secret")
    (member,) = own
    return replace(
        config,
        host=member.host,
        amqp_port=member.amqp_port,
        raft_port=member.raft_port,
        management_port=member.management_port,
    )
