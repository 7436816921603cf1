"""DESIGN.md §1: imports flow one way, only replication/raft*.py may import pysyncobj, and only
replication/ reads the replicated state (the rest reads queries.py's read models)."""

from __future__ import annotations

import ast
import dataclasses
import tomllib
from pathlib import Path

from warrenmq.replication import queue, state

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("amqp", "cluster", "replication")
# who may import whom inside warrenmq
ALLOWED = {
    "amqp": {"amqp"},
    "replication": {"replication"},
    "cluster": {"cluster", "amqp", "replication"},
}
# third-party and standard modules a package must never touch
FORBIDDEN = {
    "amqp": {"pysyncobj"},
    "replication": {"asyncio", "socket", "pamqp", "selectors", "proton"},
}
# STYLE.md rule 2: the state machine reads no clock, randomness or environment. The raft files
# are the log's I/O (pysyncobj, files, the clock for unanswered proposals) and body_store.py
# the bodies' (files) are the exceptions; proposer.py, the logic of those timers, takes the time
# as an input.
IMPURE = {"time", "random", "uuid", "os", "datetime", "secrets"}
RAFT_FILES = {"raft.py", "raft_journal.py", "raft_snapshot.py", "raft_wire.py"}
IO_FILES = RAFT_FILES | {"body_store.py"}


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_imports_flow_one_way() -> None:
    problems = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in imported_modules(path):
                parts = module.split(".")
                if parts[0] == "warrenmq" and len(parts) > 1 and parts[1] not in ALLOWED[package]:
                    problems.append(f"{path.relative_to(ROOT)} imports {module}")
                if parts[0] in FORBIDDEN.get(package, set()):
                    problems.append(f"{path.relative_to(ROOT)} imports {module}")
                if package == "replication" and path.name not in IO_FILES and parts[0] in IMPURE:
                    problems.append(f"{path.relative_to(ROOT)} imports {module}")
                if parts[0] == "pysyncobj" and not (
                    package == "replication" and path.name in RAFT_FILES
                ):
                    problems.append(f"{path.relative_to(ROOT)} imports pysyncobj")
                if parts[0] in PACKAGES:
                    problems.append(f"{path.relative_to(ROOT)} imports top-level {module}")
    assert problems == []


def test_protocol_machines_do_no_io() -> None:
    machines = ("connection.py", "codec.py", "events.py", "spec.py")
    v1_machines = ("sasl.py", "engine.py", "message.py", "address.py")
    for path in [ROOT / "amqp" / name for name in machines] + [
        ROOT / "amqp" / "v1" / name for name in v1_machines
    ]:
        modules = imported_modules(path)
        assert not modules & {"asyncio", "socket", "selectors"}, path.name


def test_the_packages_install_under_warrenmq() -> None:
    import warrenmq.amqp.connection
    import warrenmq.cluster.node
    import warrenmq.replication.machine

    for module, folder in (
        (warrenmq.amqp.connection, "amqp"),
        (warrenmq.cluster.node, "cluster"),
        (warrenmq.replication.machine, "replication"),
    ):
        assert Path(module.__file__).resolve().parent == ROOT / folder


def _mutable_state_classes() -> set[str]:
    """replication/'s mutable state (the rest of the node reads it through queries.py's read
    models); its frozen classes, such as Permission and User, may be handed out as they are."""
    return {
        name
        for module in (state, queue)
        for name, value in vars(module).items()
        if dataclasses.is_dataclass(value)
        and value.__module__ == module.__name__
        and not value.__dataclass_params__.frozen  # type: ignore[attr-defined]
    }


STATE_CLASSES = _mutable_state_classes()


def state_reads(path: Path) -> list[str]:
    """Where a module outside replication/ imports a state class or reads a broker's state."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "warrenmq.replication"
        ):
            if node.module in ("warrenmq.replication.state", "warrenmq.replication.queue"):
                found.append(f"line {node.lineno} imports {node.module}")
            names = {alias.name for alias in node.names} & STATE_CLASSES
            found += [f"line {node.lineno} imports {name}" for name in sorted(names)]
        elif isinstance(node, ast.Attribute) and node.attr == "state":
            owner = node.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if "broker" in name.lower():
                found.append(f"line {node.lineno} reads {ast.unparse(node)}")
    return found


def test_nothing_outside_replication_reads_the_broker_state() -> None:
    assert {"BrokerState", "Queue", "Vhost", "Unacked"} <= STATE_CLASSES
    problems = [
        f"{path.relative_to(ROOT)}: {problem}"
        for package in ("amqp", "cluster")
        for path in sorted((ROOT / package).rglob("*.py"))
        for problem in state_reads(path)
    ]
    assert problems == []


def test_the_state_read_check_finds_a_planted_read(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from warrenmq.replication.machine import Broker, Queue\n"
        "def f(node):\n    return node.broker.state.vhosts\n"
    )
    assert state_reads(planted) == [
        "line 1 imports Queue",
        "line 3 reads node.broker.state",
    ]


def test_every_package_folder_is_in_the_wheel() -> None:
    """The editable install finds subpackages by path; the wheel the image installs holds only
    what pyproject.toml lists (cluster/methods/ once ran here and was missing from the image)."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = {
        "warrenmq." + ".".join(init.parent.relative_to(ROOT).parts)
        for package in PACKAGES
        for init in (ROOT / package).rglob("__init__.py")
    }
    assert found == listed
