"""Every private name of pysyncobj that raft_wire.py patches or reads still exists: a pysyncobj
release that renames one fails here, loudly, not as a node that silently stops syncing."""

from __future__ import annotations

import errno
import inspect
import select
import socket

import pysyncobj.journal
import pysyncobj.poller
import pysyncobj.serializer
import pysyncobj.syncobj
import pysyncobj.tcp_connection
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


def test_the_epoll_poller_turns_readable_with_any_subscribed_socket() -> None:
    """The node's loop sleeps on the poller's own descriptor: it must turn readable when a
    subscribed socket is, call back with pysyncobj's event types, and forget what it drops."""
    poller = raft_wire.EpollPoller()
    events: list[tuple[int, int]] = []
    ours, theirs = socket.socketpair()
    try:
        read = pysyncobj.poller.POLL_EVENT_TYPE.READ
        write = pysyncobj.poller.POLL_EVENT_TYPE.WRITE
        poller.subscribe(ours.fileno(), lambda descr, mask: events.append((descr, mask)), read)
        assert not select.select([poller], [], [], 0)[0]
        theirs.send(b"x")
        assert select.select([poller], [], [], 5)[0]
        poller.poll(0)
        assert events == [(ours.fileno(), read)]
        poller.subscribe(ours.fileno(), lambda descr, mask: events.append((descr, mask)), write)
        poller.poll(0)
        assert events[-1] == (ours.fileno(), write)  # modified, not registered twice
        poller.unsubscribe(ours.fileno())
        events.clear()
        poller.poll(0)
        assert events == [] and not select.select([poller], [], [], 0)[0]
        number = ours.fileno()
        poller.subscribe(number, lambda descr, mask: events.append((descr, mask)), read)
        ours.close()  # epoll forgets a closed descriptor; the number comes back for another
        theirs.close()
        ours, theirs = socket.socketpair()
        poller.subscribe(ours.fileno(), lambda descr, mask: events.append((descr, mask)), write)
        poller.poll(0)
        assert events == [(ours.fileno(), write)]
    finally:
        ours.close()
        theirs.close()
        poller.close()


MIB = 1024 * 1024


class EndlessPeer:
    """A peer socket that always has another MiB to read, until `total_bytes` have gone."""

    def __init__(self, total_bytes: int) -> None:
        self.left_bytes = total_bytes

    def recv(self, size: int) -> bytes:
        if self.left_bytes <= 0:
            raise BlockingIOError(errno.EAGAIN, "nothing more now")
        chunk = min(size, MIB, self.left_bytes)
        self.left_bytes -= chunk
        return bytes(chunk)

    def getsockopt(self, *_: object) -> int:
        return 0  # no error pending


def test_a_turn_reads_a_bounded_share_of_a_peer_that_keeps_sending() -> None:
    """pysyncobj read a socket until it had nothing more: a follower behind a leader that kept
    streaming to it spent seconds in one turn, deaf to everything else (elections followed)."""
    raft_wire.tune_pysyncobj()
    connection = pysyncobj.tcp_connection.TcpConnection.__new__(
        pysyncobj.tcp_connection.TcpConnection
    )
    connection._TcpConnection__socket = EndlessPeer(64 * MIB)
    connection._TcpConnection__recvBufferSize = 4 * MIB
    connection._TcpConnection__readBuffer = b""
    connection._TcpConnection__tryReadBuffer()
    read_bytes = len(connection._TcpConnection__readBuffer)
    assert raft_wire.READ_BYTES_PER_TURN <= read_bytes < raft_wire.READ_BYTES_PER_TURN + MIB
    connection._TcpConnection__tryReadBuffer()  # the next turn reads on
    assert len(connection._TcpConnection__readBuffer) >= 2 * raft_wire.READ_BYTES_PER_TURN
