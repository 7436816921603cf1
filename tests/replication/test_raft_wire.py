"""Every private name of pysyncobj that raft_wire.py patches or reads still exists: a pysyncobj
release that renames one fails here, loudly, not as a node that silently stops syncing."""

from __future__ import annotations

import inspect

import pysyncobj.journal
import pysyncobj.serializer
import pysyncobj.syncobj
import pysyncobj.transport
import pytest

from warrenmq.replication import raft_wire
from warrenmq.replication.raft_journal import DurableJournal


def _assigned_in(cls: type, attribute: str) -> bool:
    """Name-mangled instance attributes exist once __init__ runs: look for the assignment."""
    unmangled = attribute.removeprefix(f"_{cls.__name__}")
    return f"self.{unmangled} =" in inspect.getsource(cls)


@pytest.mark.parametrize("attribute", raft_wire.SYNCOBJ_PRIVATE_ATTRIBUTES)
def test_syncobj_still_has(attribute: str) -> None:
    syncobj = pysyncobj.syncobj.SyncObj
    assert hasattr(syncobj, attribute) or _assigned_in(syncobj, attribute), attribute


@pytest.mark.parametrize(
    ("module", "name"),
    raft_wire.PATCHED_GLOBALS,
    ids=[f"{module.__name__}.{name}" for module, name in raft_wire.PATCHED_GLOBALS],
)
def test_the_patched_module_global_still_exists(module: object, name: str) -> None:
    assert hasattr(module, name), f"{module} has no {name} to replace"


def test_the_overridden_methods_still_exist() -> None:
    """DurableJournal implements all of pysyncobj's journal interface, and what
    DurableTransport overrides is what pysyncobj calls."""
    interface = [name for name in vars(pysyncobj.journal.Journal) if not name.startswith("__")]
    assert {"add", "clear", "deleteEntriesFrom", "deleteEntriesTo", "setCurrentTerm"} <= set(
        interface
    )
    for name in [*interface, "__getitem__", "__len__"]:
        assert name in vars(DurableJournal), name
    transport = pysyncobj.transport.TCPTransport
    assert {"send", "_onMessageReceived"} <= set(dir(transport))
    assert "self._syncObj =" in inspect.getsource(transport)


@pytest.mark.parametrize("attribute", raft_wire.SERIALIZER_PRIVATE_ATTRIBUTES)
def test_serializer_still_has(attribute: str) -> None:
    assert _assigned_in(pysyncobj.serializer.Serializer, attribute), attribute


def test_the_check_fails_for_a_name_pysyncobj_does_not_have() -> None:
    syncobj = pysyncobj.syncobj.SyncObj
    assert not (hasattr(syncobj, "_SyncObj__gone") or _assigned_in(syncobj, "_SyncObj__gone"))
