"""The Raft log on a real pysyncobj bound to loopback ports: replay and snapshots, the commit
clamp on a live follower, one entry in flight. The journal and cipher alone, with no ports, are
in test_raft_journal.py."""

from __future__ import annotations

import select
import shutil
import time
import typing
from pathlib import Path

import pysyncobj.transport
import pytest

from warrenmq.cluster.local import free_port
from warrenmq.replication import commands as c
from warrenmq.replication.body_store import BodyStore
from warrenmq.replication.machine import Broker, BrokerState
from warrenmq.replication.raft import (
    RaftLog,
    RaftSettings,
)
from warrenmq.replication.raft_wire import (
    KEEPALIVE,
    QUIET_MARK,
    hasten_election,
    journal_of,
    raft_clock,
    transport_of,
)
from warrenmq.replication.replies import QueueDeclared, Routed
from warrenmq.replication.state import messages_of

from .harness import VHOST, channel_ref, declare_queue_command, publish_command
from .test_raft_journal import StalledDisks

pytestmark = pytest.mark.ports

REF = channel_ref(1)


# --- the journal -----------------------------------------------------------------------


def unreachable_partners_log(directory: Path, partners: int, **settings: typing.Any) -> RaftLog:
    """A RaftLog whose partners' ports nobody listens on: it never hears from a majority."""
    port = free_port()
    return RaftLog(
        node_id="n1",
        incarnation=1,
        raft_address=f"127.0.0.1:{port}",
        bind_address=f"127.0.0.1:{port}",
        partner_addresses=[f"127.0.0.1:{free_port()}" for _ in range(partners)],
        directory=directory,
        broker=Broker(),
        dispatch=lambda effects: None,
        schedule=lambda call: None,
        password=None,
        settings=RaftSettings(**settings),
    )


def test_a_kept_stale_suffix_is_not_committed_past_what_the_leader_matched(
    tmp_path: Path,
) -> None:
    """Raft Figure 2, AppendEntries rule 5: commitIndex = min(leaderCommit, index of last new
    entry). The follower holds 1-4 agreed and 5-6 from term 1 that the term-2 leader never
    sent; a message that matches 3-4 (a batch cut short) while the leader's commit is at 6 must
    commit 4, not the stale 5 and 6 the kept suffix still holds."""
    log = unreachable_partners_log(tmp_path, partners=2)
    try:
        syncobj = log._syncobj
        journal = journal_of(syncobj)
        assert [entry[1] for entry in journal[:]] == [1]  # pysyncobj's own first entry
        for index in range(2, 7):
            journal.add(b"old-%d" % index, index, 1)
        leader = syncobj.otherNodes.copy().pop()
        transport_of(syncobj)._onMessageReceived(
            leader,
            {
                "type": "append_entries",
                "term": 2,
                "commit_index": 6,
                "prevLogIdx": 2,
                "prevLogTerm": 1,
                "entries": [(b"old-3", 3, 1), (b"old-4", 4, 1)],
            },
        )
        assert len(journal) == 6  # the suffix is kept (§5.3: it does not conflict) …
        assert syncobj.raftCommitIndex == 4  # … but not committed
    finally:
        log.close()


# --- a one-node Raft log, driven by hand ---------------------------------------------------


class Driver:
    """Runs a RaftLog with a fake loop: scheduled calls run on `turn()`. Its bodies are on
    disk in the directory's body store, as a node's are."""

    def __init__(
        self,
        directory: Path,
        port: int,
        partner_ports: tuple[int, ...] = (),
        **settings: typing.Any,
    ) -> None:
        self.scheduled: list[typing.Callable[[], None]] = []
        self.effects: list = []
        self.log_directory = directory
        self.log = RaftLog(
            node_id=f"n{port}",
            incarnation=1,
            raft_address=f"127.0.0.1:{port}",
            bind_address=f"127.0.0.1:{port}",
            partner_addresses=[f"127.0.0.1:{partner}" for partner in partner_ports],
            directory=directory,
            broker=Broker(bodies=BodyStore(directory / "bodies")),
            dispatch=self.effects.extend,
            schedule=self.scheduled.append,
            password=None,
            settings=RaftSettings(**settings),
        )

    def turn(self) -> None:
        scheduled = list(self.scheduled)
        self.scheduled.clear()  # in place: the log holds this list's append
        for call in scheduled:
            call()
        self.log.tick()

    def until(self, condition: typing.Callable[[], bool], timeout_s: float = 10.0) -> None:
        deadline_s = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline_s, "timed out"
            self.turn()
            time.sleep(0.001)

    def run(self, commands: list[c.Command]) -> list:
        replies: list = []
        for command in commands:
            self.log.propose(command, replies.append)
        self.until(lambda: len(replies) == len(commands))
        return replies


def restarted(directory: Path, port: int, state: BrokerState, bodies: dict[int, bytes]) -> Driver:
    """A new log on the same directory, once it has replayed to `state`, which it must equal,
    and its `bodies` (read before the first log closed)."""
    driver = Driver(directory, port)
    last_index = state.last_index
    driver.until(lambda: driver.log.is_ready and driver.log.broker.state.last_index >= last_index)
    assert driver.log.broker.state == state
    assert body_bytes(driver.log.broker.state) == bodies
    return driver


def body_bytes(state: BrokerState) -> dict[int, bytes]:
    return {message.body.id: message.body.read() for message in messages_of(state)}


def setup_commands(count: int) -> list[c.Command]:
    commands: list[c.Command] = [
        c.AddVhost(vhost=VHOST),
        c.NodeUp(node="n1", incarnation=1, pid=1),
        declare_queue_command(REF, "q"),
    ]
    return commands + [publish_command(REF, "q", b"m%d" % number) for number in range(count)]


@pytest.fixture
def driver(tmp_path: Path) -> typing.Iterator[Driver]:
    driver = Driver(tmp_path, free_port())
    driver.until(lambda: driver.log.is_ready and driver.log.is_leader)
    yield driver
    driver.log.close()


def test_replies_come_back_in_order_after_commit(driver: Driver) -> None:
    replies = driver.run(setup_commands(3))
    assert replies[2:] == [QueueDeclared("q", 0, 0), Routed(1), Routed(1), Routed(1)]
    assert 1 < driver.log.last_applied_index <= driver.log.commit_index
    # Raft indexes count entries; the state machine numbers commands (several per entry)
    assert driver.log.broker.state.last_index > driver.log.last_applied_index


def test_without_a_majority_one_entry_flies_the_rest_batch_then_every_caller_hears_320(
    tmp_path: Path,
) -> None:
    log = unreachable_partners_log(tmp_path, partners=1, give_up_after_s=0.2)
    replies: list = []
    for _ in range(10):
        log.propose(c.AddVhost(vhost=VHOST), replies.append)
        log.flush()
    # stop-and-wait: one entry in flight, the other nine commands wait as one batch
    proposer = log.proposer
    assert proposer.in_flight is not None and not proposer.sealed and len(proposer.batch) == 9
    deadline_s = time.monotonic() + 60
    while len(replies) < 10 and time.monotonic() < deadline_s:
        log.tick()
        time.sleep(0.01)
    assert [reply.reply_code for reply in replies] == [320] * 10
    log.close()


def test_a_resent_entry_is_applied_once(driver: Driver) -> None:
    driver.run(setup_commands(0))
    replies: list = []
    driver.log.propose(setup_commands(1)[-1], replies.append)
    driver.log.flush()
    in_flight = driver.log.proposer.in_flight
    assert in_flight is not None
    driver.log._replica.apply_entry(in_flight.payload)  # as a re-send after a leader change
    driver.until(lambda: replies == [Routed(1)])
    for _ in range(50):
        driver.turn()
    assert driver.log.broker.query_queue(VHOST, "q").ready == 1


def test_restart_replays_and_snapshots_restore_the_exact_state(tmp_path: Path) -> None:
    port = free_port()
    first = Driver(tmp_path, port, compaction_min_entries=20)
    first.until(lambda: first.log.is_ready and first.log.is_leader)
    first.run(setup_commands(40))
    for _ in range(40):  # entries enough to pass compaction_min_entries
        first.run(setup_commands(1)[-1:])
    first.until(lambda: (tmp_path / "raft.snapshot").exists())
    first.run([c.Get(channel=REF, vhost=VHOST, queue="q", no_ack=True)])
    state = first.log.broker.state
    bodies = body_bytes(state)
    first.log.close()
    second = restarted(tmp_path, port, state, bodies)
    assert second.log.broker.query_queue(VHOST, "q").ready == 79
    assert second.effects == []  # replaying sends nothing: those sessions are gone
    second.log.close()


def test_journal_bytes_force_a_snapshot_and_stay_bounded(tmp_path: Path) -> None:
    port = free_port()
    driver = Driver(tmp_path, port, compaction_bytes=64 * 1024)
    driver.until(lambda: driver.log.is_ready and driver.log.is_leader)
    driver.run(setup_commands(0))
    journal = journal_of(driver.log._syncobj)
    for _ in range(60):  # 60 entries of 4 KiB: 240 KiB, well past the 64 KiB limit
        driver.run([publish_command(REF, "q", bytes(4096))])
    driver.until(lambda: (tmp_path / "raft.snapshot").exists() and journal.size_bytes < 64 * 1024)
    assert journal.size_bytes == sum(len(entry[0]) for entry in journal[:])  # kept exact
    state = driver.log.broker.state
    bodies = body_bytes(state)
    driver.log.close()
    again = restarted(tmp_path, port, state, bodies)
    assert again.log.broker.query_queue(VHOST, "q").ready == 60
    again.log.close()


class Group:
    """Three logs on one fake loop, each in its own directory under `directory`."""

    def __init__(self, directory: Path, **settings: typing.Any) -> None:
        self.directory = directory
        self.ports = (free_port(), free_port(), free_port())
        self.settings = settings
        self.drivers = [self.node(number) for number in range(3)]

    def node(self, number: int) -> Driver:
        others = tuple(port for port in self.ports if port != self.ports[number])
        return Driver(self.directory / f"n{number}", self.ports[number], others, **self.settings)

    def turn_until(self, condition: typing.Callable[[], bool], timeout_s: float = 30.0) -> None:
        deadline_s = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline_s, "timed out"
            self.turn()

    def turn(self) -> None:
        for driver in self.drivers:
            driver.turn()
        time.sleep(0.001)

    def leader(self) -> Driver:
        self.turn_until(lambda: any(driver.log.is_leader for driver in self.drivers))
        return next(driver for driver in self.drivers if driver.log.is_leader)

    def ready(self) -> Driver:
        self.turn_until(lambda: all(driver.log.is_ready for driver in self.drivers))
        return self.leader()

    def run(self, commands: list[c.Command]) -> None:
        leader = self.leader()
        replies: list = []
        for command in commands:
            leader.log.propose(command, replies.append)
            self.turn_until(lambda: bool(replies))
            replies.clear()

    def close(self) -> None:
        for driver in self.drivers:
            driver.log.close()


def test_a_wiped_follower_gets_the_snapshot_and_every_live_body_it_names(tmp_path: Path) -> None:
    """Raft §7: a follower behind the leader's compacted log gets its snapshot. The snapshot
    names bodies by id only; the transfer carries them, so the follower can deliver them."""
    group = Group(tmp_path, compaction_min_entries=20)
    drivers = group.drivers
    try:
        group.ready()
        group.run(setup_commands(30))
        wiped_number = next(n for n, driver in enumerate(drivers) if not driver.log.is_leader)
        drivers.pop(wiped_number).log.close()
        group.run([publish_command(REF, "q", b"later-%d" % n) for n in range(30)])
        group.run([c.Get(channel=REF, vhost=VHOST, queue="q", no_ack=True) for _ in range(25)])
        others = [n for n in range(3) if n != wiped_number]
        group.turn_until(
            lambda: all((tmp_path / f"n{n}" / "raft.snapshot").exists() for n in others)
        )
        group.run([publish_command(REF, "q", b"after the snapshot")])
        leader_state = group.leader().log.broker.state
        expected = body_bytes(leader_state)
        assert len(expected) == 36
        shutil.rmtree(tmp_path / f"n{wiped_number}")  # the disk was wiped
        wiped = group.node(wiped_number)
        drivers.append(wiped)
        group.turn_until(lambda: wiped.log.broker.state.last_index == leader_state.last_index)
        assert wiped.log.broker.state == leader_state
        assert body_bytes(wiped.log.broker.state) == expected
        store = wiped.log.broker.bodies
        assert isinstance(store, BodyStore) and store.live_count == 36
    finally:
        group.close()


@pytest.fixture
def group(tmp_path: Path) -> typing.Iterator[Group]:
    """Three logs with a leader, and the vhost and queue of setup_commands."""
    group = Group(tmp_path)
    try:
        group.ready()
        group.run(setup_commands(0))
        yield group
    finally:
        group.close()


def test_a_group_of_one_answers_only_once_its_journal_has_synced(
    driver: Driver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    driver.run(setup_commands(0))
    disk = StalledDisks(monkeypatch, tmp_path)
    replies: list = []
    driver.log.propose(publish_command(REF, "q", b"m"), replies.append)
    driver.until(lambda: disk.waited > 0)
    for _ in range(100):
        driver.turn()
        time.sleep(0.001)
    assert replies == []  # applied, held in the outbox
    assert driver.log.broker.query_queue(VHOST, "q").ready == 1
    disk.release()
    driver.until(lambda: replies == [Routed(1)])


def test_followers_acknowledge_only_what_they_have_synced(
    group: Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    leader = group.leader()
    followers = [driver for driver in group.drivers if driver is not leader]
    disks = StalledDisks(monkeypatch, *(driver.log_directory for driver in followers))
    commit_index = leader.log.commit_index
    replies: list = []
    leader.log.propose(publish_command(REF, "q", b"m"), replies.append)
    group.turn_until(lambda: disks.waited == 2)
    for _ in range(100):
        group.turn()
    assert leader.log.commit_index == commit_index and replies == []
    disks.release()
    group.turn_until(lambda: replies == [Routed(1)])


def test_a_follower_waiting_on_its_disk_forwards_what_it_proposes_at_once(
    group: Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its acknowledgements wait for its sync, in order; a command it forwards to the leader
    is not an acknowledgement and does not queue behind them: the leader and the other
    follower commit it meanwhile (it cost a forward about 1.5 ms of every round)."""
    leader = group.leader()
    stalled = next(driver for driver in group.drivers if driver is not leader)
    disk = StalledDisks(monkeypatch, stalled.log_directory)
    leader.log.propose(publish_command(REF, "q", b"from the leader"), None)
    group.turn_until(lambda: disk.waited > 0)  # its acknowledgement of that entry is held
    replies: list = []
    stalled.log.propose(publish_command(REF, "q", b"from the follower"), replies.append)
    group.turn_until(lambda: leader.log.broker.query_queue(VHOST, "q").ready == 2, timeout_s=10)
    assert replies == []  # its own reply waits for its own disk
    disk.release()
    group.turn_until(lambda: replies == [Routed(1)])


def test_only_a_reset_sends_a_leader_back_not_an_answer_to_an_earlier_message(
    group: Group,
) -> None:
    """Entries sent after the message a follower answers are on their way: an answer that
    covers less than was sent (it answers an earlier message) must not have them sent again.
    A reset (the follower lacks what a message followed on) must."""
    syncobj = group.leader().log._syncobj
    follower = next(iter(syncobj.otherNodes))
    sent = syncobj._SyncObj__raftNextIndex[follower]
    assert sent > 4
    syncobj._SyncObj__raftMatchIndex[follower] = sent - 4  # as if the last answers were on the way
    earlier = {"type": "next_node_idx", "next_node_idx": sent - 2, "reset": False, "success": True}
    transport_of(syncobj)._onMessageReceived(follower, earlier)
    assert syncobj._SyncObj__raftNextIndex[follower] == sent
    assert syncobj._SyncObj__raftMatchIndex[follower] == sent - 3  # what it does say counts
    transport_of(syncobj)._onMessageReceived(follower, {**earlier, "reset": True, "success": False})
    assert syncobj._SyncObj__raftNextIndex[follower] == sent - 2


def _readable(descriptor: int, timeout_s: float = 0.0) -> bool:
    return bool(select.select([descriptor], [], [], timeout_s)[0])


def test_a_finished_sync_wakes_the_loop(
    driver: Driver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A node's loop sleeps on wakeup_fds between ticks: a sync that ends must wake it, or
    every confirm waits for the idle timer."""
    driver.run(setup_commands(0))
    _, sync_fd = driver.log.wakeup_fds
    disk = StalledDisks(monkeypatch, tmp_path)
    replies: list = []
    driver.log.propose(publish_command(REF, "q", b"m"), replies.append)
    driver.until(lambda: disk.waited > 0)
    driver.turn()  # takes in any wake-up of the syncs before
    assert not _readable(sync_fd)
    disk.release()
    assert _readable(sync_fd, timeout_s=10.0)
    driver.turn()
    assert replies == [Routed(1)]


def test_a_leader_whose_disk_stalls_keeps_its_followers(
    group: Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Heartbeats do not wait for the disk: a sync slower than the election timeout (0.35 to
    0.7 s) costs no election, and the confirm follows once the leader's own sync ends."""
    leader = group.leader()
    term = leader.log.term
    disk = StalledDisks(monkeypatch, leader.log_directory)
    replies: list = []
    leader.log.propose(publish_command(REF, "q", b"m"), replies.append)
    group.turn_until(lambda: disk.waited > 0)
    stalled_until_s = time.monotonic() + 1.5
    while time.monotonic() < stalled_until_s:
        group.turn()
    assert replies == []
    assert leader.log.is_leader and all(d.log.term == term for d in group.drivers)
    disk.release()
    group.turn_until(lambda: replies == [Routed(1)])
    assert leader.log.is_leader and leader.log.term == term


def test_a_leader_tells_its_followers_of_a_commit_before_it_applies_the_entry(
    group: Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Applying a big entry takes the leader milliseconds; the followers apply it meanwhile."""
    leader = group.leader()
    events: list[tuple[str, int]] = []
    transport = transport_of(leader.log._syncobj)
    send = transport.send

    def sending(node: typing.Any, message: typing.Any) -> bool:
        if isinstance(message, dict) and message.get("type") == "append_entries":
            events.append(("told", message["commit_index"]))
        return send(node, message)

    apply_entry = leader.log._apply_entry

    def applying(payload: bytes) -> None:
        events.append(("applied", leader.log.last_applied_index + 1))
        apply_entry(payload)

    monkeypatch.setattr(transport, "send", sending)
    monkeypatch.setattr(leader.log, "_apply_entry", applying)
    replies: list = []
    leader.log.propose(publish_command(REF, "q", b"m"), replies.append)
    group.turn_until(lambda: bool(replies))
    index = next(index for kind, index in events if kind == "applied")
    told_before = events[: events.index(("applied", index))]
    assert any(kind == "told" and told >= index for kind, told in told_before)


def election_deadline(driver: Driver) -> float:
    deadline: float = driver.log._syncobj._SyncObj__raftElectionDeadline
    return deadline


def postpone_elections(drivers: list[Driver]) -> None:
    """Election timeouts of a minute from now on: no election here comes from a timeout."""
    for driver in drivers:
        syncobj = driver.log._syncobj
        conf = syncobj._SyncObj__conf
        conf.raftMinTimeout, conf.raftMaxTimeout = 60.0, 120.0
        syncobj._SyncObj__raftElectionDeadline = raft_clock() + 60.0


def test_a_commit_round_needs_no_timer(group: Group) -> None:
    """A node's loop ticks when a socket or a finished sync wakes it, or at once when its
    last tick read a peer's message (`has_work`): pysyncobj acts on a message only in the
    turn after the one that read it. Driven by those alone, a forwarded command is appended,
    committed, applied on the follower and answered; without `has_work` each of those hops
    waits for a timer (the node's idle wait)."""
    postpone_elections(group.drivers)
    follower = next(driver for driver in group.drivers if not driver.log.is_leader)
    replies: list = []
    follower.log.propose(publish_command(REF, "q", b"m"), replies.append)
    deadline_s = time.monotonic() + 10.0
    while not replies:
        assert time.monotonic() < deadline_s, "the round waits for a timer"
        for driver in group.drivers:
            woken = any(_readable(descriptor) for descriptor in driver.log.wakeup_fds)
            if driver.scheduled or driver.log.has_work or woken:
                driver.turn()
        time.sleep(0.001)
    assert replies == [Routed(1)]


def test_an_idle_loop_sleeps_until_pysyncobjs_next_timer(group: Group) -> None:
    """A leader sleeps until its next heartbeat is due, a follower until its election
    deadline, each at most as long as the caller allows."""
    postpone_elections(group.drivers)
    leader = group.leader()
    follower = next(driver for driver in group.drivers if driver is not leader)
    leader.turn()
    assert 0.0 <= leader.log.idle_wait_s(10.0) <= RaftSettings().append_entries_period_s
    assert follower.log.idle_wait_s(10.0) == 10.0  # its deadline is a minute away
    hasten_election(follower.log._syncobj, 0.5)
    assert 0.0 < follower.log.idle_wait_s(10.0) <= 0.5
    hasten_election(follower.log._syncobj, 0.0)  # as when the leader's connection closes
    assert follower.log.idle_wait_s(10.0) == 0.0


QUIET_AFTER_S = 0.5  # quiet_after_s for the tests of the heartbeat pace


def quiet_group(directory: Path) -> Group:
    group = Group(directory, quiet_after_s=QUIET_AFTER_S)
    group.ready()
    group.turn_until(lambda: group.leader().log._heartbeat_pace.quiet)
    return group


def turn_for(group: Group, seconds: float) -> None:
    until_s = time.monotonic() + seconds
    group.turn_until(lambda: time.monotonic() > until_s)


def test_a_quiet_leader_heartbeats_slowly_and_its_followers_wait_for_it(tmp_path: Path) -> None:
    """With nothing to replicate, heartbeats come every 0.9 s, longer than the busy election
    timeout: the followers wait the quiet one instead, and nobody stands. A busier log brings
    the busy pace back, and with it the busy timeout."""
    group = quiet_group(tmp_path)
    try:
        leader = group.leader()
        followers = [driver for driver in group.drivers if driver is not leader]
        settings = RaftSettings()
        assert leader.log._syncobj.conf.appendEntriesPeriod == (
            settings.quiet_append_entries_period_s
        )
        term = leader.log.term
        turn_for(group, 3 * settings.quiet_append_entries_period_s)
        assert leader.log.is_leader and all(d.log.term == term for d in group.drivers)
        assert all(f.log.idle_wait_s(10.0) > settings.election_timeout_s_max for f in followers)
        group.run([publish_command(REF, "q", b"m%d" % n) for n in range(5)])  # 5 entries
        assert not leader.log._heartbeat_pace.quiet
        assert leader.log._syncobj.conf.appendEntriesPeriod == settings.append_entries_period_s
        group.turn()  # the followers read the last, unmarked, append-entries
        assert all(f.log.idle_wait_s(10.0) <= settings.election_timeout_s_max for f in followers)
    finally:
        group.close()


def test_a_follower_that_is_down_keeps_its_leader_at_the_busy_pace(tmp_path: Path) -> None:
    """Entries it misses would reach it only a quiet heartbeat at a time when it is back."""
    group = Group(tmp_path, quiet_after_s=QUIET_AFTER_S)
    try:
        leader = group.ready()
        down = next(driver for driver in group.drivers if driver is not leader)
        group.drivers.remove(down)
        down.log.close()
        group.run([publish_command(REF, "q", b"missed")])
        turn_for(group, 4 * QUIET_AFTER_S)
        assert leader.log.is_leader and not leader.log._heartbeat_pace.quiet
    finally:
        group.close()


def test_followers_that_do_not_say_they_read_the_mark_keep_their_leader_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nodes of an earlier version would stand for election in a quiet leader's silences:
    until every follower's answers carry the mark, the leader keeps the busy pace."""
    plain_send = pysyncobj.transport.TCPTransport.send

    def send_as_an_earlier_version(self: typing.Any, node: typing.Any, message: typing.Any) -> bool:
        if isinstance(message, dict) and message.get("type") == "next_node_idx":
            message = {key: value for key, value in message.items() if key != QUIET_MARK}
        return bool(plain_send(self, node, message))

    monkeypatch.setattr(pysyncobj.transport.TCPTransport, "send", send_as_an_earlier_version)
    group = Group(tmp_path, quiet_after_s=QUIET_AFTER_S)
    try:
        leader = group.ready()
        turn_for(group, 4 * QUIET_AFTER_S)
        assert leader.log.is_leader and not leader.log._heartbeat_pace.quiet
    finally:
        group.close()


def test_a_node_connected_to_no_peer_does_not_spin(tmp_path: Path) -> None:
    """Its election deadline passes and stays behind (pysyncobj stands only when connected
    to someone): the loop sleeps its longest, as at start before the peers are up."""
    log = unreachable_partners_log(tmp_path, partners=2)
    try:
        hasten_election(log._syncobj, 0.0)
        log.tick()
        assert log.idle_wait_s(10.0) == 10.0
    finally:
        log.close()


def test_a_group_of_one_stands_when_its_deadline_is_due(tmp_path: Path) -> None:
    """With no peers to be connected to, pysyncobj stands all the same: no wait."""
    log = unreachable_partners_log(tmp_path, partners=0)
    try:
        hasten_election(log._syncobj, 0.0)
        assert log.idle_wait_s(10.0) == 0.0
    finally:
        log.close()


def test_followers_that_lose_the_leaders_connection_elect_a_new_one_at_once(
    group: Group,
) -> None:
    """As SIGKILL does: the dead leader's sockets close, and its followers stand for election
    then, not after their election timeout (here a minute)."""
    group.run([publish_command(REF, "q", b"before")])
    postpone_elections(group.drivers)
    leader = group.leader()
    group.drivers.remove(leader)
    leader.log.close()
    group.turn_until(lambda: any(driver.log.is_leader for driver in group.drivers), 10.0)
    group.run([publish_command(REF, "q", b"after")])
    assert group.leader().log.broker.query_queue(VHOST, "q").ready == 2


@pytest.mark.parametrize("candidate_behind", [True, False])
def test_a_candidate_behind_this_follower_makes_it_stand_itself(
    group: Group, candidate_behind: bool
) -> None:
    """Raft §5.4.1: such a candidate cannot have this follower's vote, so waiting for this
    follower's own timeout would only stretch the election; a level one gets the vote."""
    group.run([publish_command(REF, "q", b"m")])
    postpone_elections(group.drivers)
    leader_address = group.leader().log.leader_address
    follower = next(driver for driver in group.drivers if not driver.log.is_leader)
    syncobj = follower.log._syncobj
    rival = next(node for node in syncobj.otherNodes if node.id != leader_address)
    _, index, term = journal_of(syncobj)[-1]
    transport_of(syncobj)._onMessageReceived(
        rival,
        {
            "type": "request_vote",
            "term": syncobj.raftCurrentTerm + 1,
            "last_log_index": index - 1 if candidate_behind else index,
            "last_log_term": term,
        },
    )
    if candidate_behind:
        assert election_deadline(follower) <= raft_clock()
    else:  # the vote is granted, and that waits a whole timeout again
        assert election_deadline(follower) > raft_clock() + 50.0


def test_a_peer_not_sent_anything_for_a_second_gets_a_keepalive_that_pysyncobj_never_sees(
    group: Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without it the followers' own link, silent while a leader lives, passes pysyncobj's
    connectionTimeout and dies under the first vote request."""
    follower = next(driver for driver in group.drivers if not driver.log.is_leader)
    syncobj = follower.log._syncobj
    transport = transport_of(syncobj)
    sent: list[tuple[str, object]] = []
    monkeypatch.setattr(transport, "send", lambda node, message: sent.append((node.id, message)))
    transport.keep_alive()
    assert sent == []  # both peers were sent to within the second
    transport._last_sent_s.clear()
    transport.keep_alive()
    assert sorted(sent) == sorted((node.id, KEEPALIVE) for node in syncobj.otherNodes)
    received: list[object] = []
    monkeypatch.setattr(
        transport, "_onMessageReceivedCallback", lambda *args: received.append(args)
    )
    transport._onMessageReceived(next(iter(syncobj.otherNodes)), dict(KEEPALIVE))
    assert received == []
