"""Configuration, passwords, plain field values and the login rules, without sockets."""

from __future__ import annotations

import argparse
import datetime
import decimal
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

from warrenmq.amqp.spec import ReplyCode as ProtocolReplyCode
from warrenmq.cluster import failover, local, nemesis
from warrenmq.cluster.config import load_config
from warrenmq.cluster.definitions import ignored_sections, import_commands
from warrenmq.cluster.load import LoadStats
from warrenmq.cluster.passwords import hash_password, is_password_hash, verify_password
from warrenmq.cluster.plain import plain_table
from warrenmq.cluster.resources import ResourceMonitor
from warrenmq.cluster.session import Session
from warrenmq.replication import commands as c
from warrenmq.replication.machine import Broker, Meta
from warrenmq.replication.machine import ReplyCode as BrokerReplyCode


def test_config_layers_file_then_environment_then_flags(tmp_path: Path) -> None:
    config_file = tmp_path / "node.toml"
    config_file.write_text(
        'node_id = "from-file"\namqp_port = 5800\nheartbeat_s = 30\n'
        'loopback_users = ["guest", "ops"]\n'
    )
    config = load_config(
        config_file,
        {"amqp_port": 5900, "host": None},
        environment={"WARREN_NODE_ID": "from-env", "WARREN_DEFAULT_USER": "admin"},
    )
    assert (config.node_id, config.amqp_port, config.heartbeat_s, config.default_user) == (
        "from-env",
        5900,
        30,
        "admin",
    )
    assert config.loopback_users == ("guest", "ops")
    assert config.host == "127.0.0.1"
    assert config.node_data_dir == Path("warren-data") / "from-env"


def test_rabbitmqs_environment_names_are_read_and_warrens_win() -> None:
    config = load_config(
        environment={
            "RABBITMQ_DEFAULT_USER": "rabbit",
            "RABBITMQ_DEFAULT_PASS": "from-rabbitmq",
            "RABBITMQ_DEFAULT_VHOST": "apps",
            "WARREN_DEFAULT_PASS": "from-warren",
        }
    )
    assert (config.default_user, config.default_pass, config.default_vhost) == (
        "rabbit",
        "from-warren",
        "apps",
    )


def test_config_rejects_unknown_keys(tmp_path: Path) -> None:
    config_file = tmp_path / "node.toml"
    config_file.write_text("amqp_prot = 1\n")
    with pytest.raises(ValueError, match="amqp_prot"):
        load_config(config_file, environment={})


def test_deprecated_features_are_permitted_unless_the_config_denies_them(tmp_path: Path) -> None:
    """RabbitMQ 4.2's defaults; `deprecated_features.permit.NAME = false` as in rabbitmq.conf."""
    assert load_config(None, environment={}).permit_transient_nonexcl_queues
    config_file = tmp_path / "node.toml"
    config_file.write_text(
        "deprecated_features.permit.transient_nonexcl_queues = false\n"
        "deprecated_features.permit.global_qos = false\n"
    )
    config = load_config(config_file, environment={})
    assert not config.permit_transient_nonexcl_queues and not config.permit_global_qos
    config_file.write_text("deprecated_features.permit.classic_mirroring = false\n")
    with pytest.raises(ValueError, match="permit_classic_mirroring"):
        load_config(config_file, environment={})


def test_password_hashes_are_salted_and_verify() -> None:
    first, second = hash_password("secret"), hash_password("secret")
    assert first != second and "secret" not in first
    assert verify_password("secret", first) and not verify_password("Secret", first)
    assert not verify_password("secret", "md5$00$00")  # not a hash this broker writes


def test_plain_values_keep_what_routing_compares() -> None:
    table = {
        "d": decimal.Decimal("1.50"),
        "t": datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
        "b": b"\xff",
        "nested": {"l": [1, (2, 3)], "n": None},
    }
    assert plain_table(table) == {
        "d": "1.50",
        "t": 1577836800,
        "b": "\xff",
        "nested": {"l": [1, [2, 3]], "n": None},
    }


def session_from(peer: str) -> Session:
    broker = Broker()
    broker.apply(Meta(1), c.AddVhost(vhost="/"))
    for index, user in enumerate(("guest", "app"), start=2):
        broker.apply(Meta(index), c.AddUser(user=user, password_hash=hash_password(user), tags=()))
    node = types.SimpleNamespace(
        config=load_config(environment={}),
        broker=broker,
        next_connection_serial=lambda: 1,
        incarnation=1,
    )
    protocol = types.SimpleNamespace(peer=(peer, 40000))
    return Session(node, protocol)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("peer", "guest_allowed"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.1.2.3", False),
        ("192.0.2.7", False),
        ("2001:db8::1", False),
    ],
)
def test_guest_may_only_log_in_over_loopback(peer: str, guest_allowed: bool) -> None:
    session = session_from(peer)
    assert session.authenticate("guest", "guest") is guest_allowed
    assert session.authenticate("app", "app")  # other users log in from anywhere
    assert not session.authenticate("app", "wrong")
    assert not session.authenticate("nobody", "nobody")


def test_hashes_from_rabbitmq_verify() -> None:
    """A hash RabbitMQ 3.10.8 made for the password "pw" (rabbit_password_hashing_sha256)."""
    from_rabbitmq = "wRPXm0sdMY6icuIgX1PYLEnYqGd3cJYA33mA+ffvfvRHBNfu"
    assert verify_password("pw", from_rabbitmq) and not verify_password("px", from_rabbitmq)
    assert is_password_hash(from_rabbitmq) and is_password_hash(hash_password("x"))
    assert not verify_password("", "") and not is_password_hash("c2hvcnQ=")


def test_vhost_access_needs_the_vhost_and_a_permission_in_it() -> None:
    session = session_from("127.0.0.1")
    assert session.vhost_refusal("app", "/") == "access to vhost '/' refused for user 'app'"
    assert session.vhost_refusal("app", "other") == "vhost other not found"
    session.node.broker.apply(
        Meta(9), c.SetPermissions(user="app", vhost="/", configure="", write="", read="")
    )
    assert session.vhost_refusal("app", "/") is None  # empty patterns still open the vhost


def test_resource_alarms_begin_and_clear(tmp_path: Path) -> None:
    monitor = ResourceMonitor(tmp_path, memory_limit_bytes=1, disk_free_limit_bytes=0)
    assert monitor.check() == {"memory": True}
    assert monitor.check() == {}  # still set: no change to report
    monitor.memory_limit_bytes = 1 << 60
    monitor.disk_free_limit_bytes = 1 << 60
    assert monitor.check() == {"memory": False, "disk": True}
    assert monitor.local_alarms == {"disk"}


def test_definitions_import_in_dependency_order_and_refuse_unknown_hashes() -> None:
    channels = iter(range(1, 100))

    def next_channel() -> c.ChannelRef:
        return c.ChannelRef("n", 1, c.MANAGEMENT_CONNECTION, next(channels))

    commands = import_commands(
        {
            "bindings": [{"source": "x", "vhost": "v", "destination": "q", "routing_key": "k"}],
            "queues": [{"name": "q", "vhost": "v"}],
            "exchanges": [{"name": "x", "vhost": "v", "type": "topic"}],
            "permissions": [
                {"user": "u", "vhost": "v", "configure": ".*", "write": "", "read": ""}
            ],
            "users": [{"name": "u", "password_hash": hash_password("p"), "tags": "a,b"}],
            "vhosts": [{"name": "v"}],
        },
        next_channel,
    )
    assert [type(command).__name__ for command in commands] == [
        "AddVhost",
        "AddUser",
        "SetPermissions",
        "DeclareExchange",
        "DeclareQueue",
        "BindQueue",
    ]
    assert typing.cast(c.AddUser, commands[1]).tags == ("a", "b")
    for user in (
        {"name": "u", "password_hash": "x", "hashing_algorithm": "rabbit_password_hashing_md5"},
        {"name": "u", "password_hash": "not base64 of 36 bytes"},
    ):
        with pytest.raises(ValueError):
            import_commands({"users": [user]}, next_channel)
    with pytest.raises(ValueError, match="invalid_regexp"):
        import_commands(
            {"permissions": [{"user": "u", "vhost": "v", "configure": "("}]}, next_channel
        )


def test_an_import_names_the_sections_it_leaves_out() -> None:
    exported = {
        "policies": [{"name": "ha"}],
        "parameters": [{"name": "shovel"}],
        "topic_permissions": [],
        "queues": [{"name": "q"}],
    }
    assert ignored_sections(exported) == ["parameters"]  # policies import now


def test_the_two_reply_code_tables_agree() -> None:
    """replication/ may not import amqp/, so the broker's reply codes are a table of their own;
    the session turns them into the protocol's by value, so every one must mean the same."""
    for code in BrokerReplyCode:
        assert ProtocolReplyCode[code.name] == code
        assert ProtocolReplyCode(code).is_connection_error == code.is_connection_error


@pytest.mark.parametrize("module", [failover, nemesis], ids=["failover-bench", "nemesis"])
def test_the_tools_that_restart_nodes_use_ports_below_the_ephemeral_range(
    module: types.ModuleType,
) -> None:
    """warren nemesis (seed 13) failed at round 39: while warren-3 was down, a client connection
    got its AMQP port as a local ephemeral port, and the restarted node could not bind it."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    base = parser.parse_args([]).base_port
    assert base + 2000 + 2 < local._ephemeral_ports_start()


def test_the_outage_after_a_fault_is_the_pause_that_begins_with_it() -> None:
    """Confirms in flight arrive just after the fault; a longer pause seconds later (a node
    declared lost) is reported as the longest pause, not as the end of the outage."""
    fault_s = 10.0
    # the outage: 10.02 to 10.3; steady again, then a pause of 2.6 s from 10.7
    times_s = [9.8, 9.9, 10.01, 10.02, 10.3, 10.4, 10.5, 10.6, 10.7, 13.3, 13.4]
    assert LoadStats.resumed_after(times_s, fault_s) == pytest.approx(0.3)
    assert LoadStats.longest_pause(times_s, fault_s, 8.0) == pytest.approx(2.6)
    assert LoadStats.resumed_after([9.0, 9.5], fault_s) is None  # nothing after the fault


def test_a_node_start_loads_no_tool_and_no_client_library() -> None:
    """`warren node` imports the tools (bench, failover-bench, nemesis) only for their own
    commands, and with them the client libraries they drive: a node process never needs them."""
    probe = (
        "import sys, warrenmq.cluster.cli as cli\n"
        "tools = [module for module, _, _ in cli.TOOLS.values()]\n"
        "print(sorted(name for name in sys.modules if name in tools or name == 'aio_pika'))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
