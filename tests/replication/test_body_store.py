"""The body store on disk: keep, read, release, reclaim in steps, restart and crashes.

A Hypothesis machine runs keeps, releases, compaction steps, restarts and torn writes against
a model of which bodies are live, and checks after every step that each live body reads back
exactly and that the disk holds no more than the live bytes allow."""

from __future__ import annotations

import os
import pickle
import shutil
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from warrenmq.replication import body_store
from warrenmq.replication import commands as c
from warrenmq.replication.body import Body, loading
from warrenmq.replication.body_store import RECORD, BodyStore
from warrenmq.replication.queue import Queue
from warrenmq.replication.state import BrokerState, bodies_held

from .harness import VHOST, Harness, channel_ref

PUBLISHER = channel_ref(1)


@pytest.fixture(autouse=True)
def _closing(monkeypatch: pytest.MonkeyPatch) -> typing.Iterator[None]:
    """Every store a test opens is closed after it (its descriptors are raw fds)."""
    opened: list[BodyStore] = []
    original = BodyStore.__init__

    def opening(self: BodyStore, *args: typing.Any, **kwargs: typing.Any) -> None:
        original(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(BodyStore, "__init__", opening)
    yield
    for store in opened:
        abandon(store)


def abandon(store: BodyStore) -> None:
    """What SIGKILL does to a store: its objects release nothing, its buffers are lost."""
    store._holder.live = False
    segments = list(store._segments)
    if store._compaction is not None:
        segments.append(store._compaction.target)
    for segment in segments:
        if segment.descriptor >= 0:
            os.close(segment.descriptor)
            segment.descriptor = -1  # its number may be another file's next


def new_store(directory: Path, **options: typing.Any) -> BodyStore:
    """A store that rewrites a segment as soon as it qualifies: these tests are about what
    compaction does, not when (the quiet rule has tests of its own)."""
    return BodyStore(directory, quiet_s=0.0, **options)


def kept(store: BodyStore, body_id: int, data: bytes) -> Body:
    body = Body(body_id, data)
    store.keep(body)
    return body


def compact_all(store: BodyStore) -> None:
    for _ in range(10_000):
        if not store.compact_step():
            return
    raise AssertionError("compaction never ends")


def test_a_kept_body_leaves_memory_and_reads_back(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    body = kept(store, 7, b"hello")
    assert not body.in_memory and len(body) == 5
    assert body.read() == b"hello"
    store.sync()  # the buffer reaches the file
    assert body.read() == b"hello"
    assert store.live_count == 1 and store.live_bytes == 5


def test_a_body_dies_with_the_last_message_that_holds_it(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    body = kept(store, 1, b"x" * 10)
    copy = body  # a dead-lettered copy shares the Body
    del body
    assert store.live_count == 1
    del copy
    assert store.live_count == 0 and store.reclaimable


def test_one_old_live_body_pins_only_its_own_bytes(tmp_path: Path) -> None:
    """rabbitmq-server#12141: one old unacked message must not pin everything after it."""
    store = new_store(tmp_path, segment_bytes=64 * 1024)
    old = kept(store, 1, b"old" * 100)
    for body_id in range(2, 2002):  # 2 MiB through, released as they go
        kept(store, body_id, bytes(1024))
        compact_all(store)
    store.sync()
    compact_all(store)
    assert old.read() == b"old" * 100
    # the old body's segment was rewritten down to it; what remains is the active segment
    assert store.disk_bytes < 2 * 64 * 1024 + 2 * 1024


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def test_a_segment_drained_in_order_is_deleted_whole_not_rewritten(tmp_path: Path) -> None:
    """A consumer draining a backlog kills a segment's bodies one after another: rewriting the
    segment once half of it is dead would copy the other half just before it dies too."""
    clock = Clock()
    store = BodyStore(tmp_path, segment_bytes=10 * 1024, quiet_s=1.0, clock=clock)
    backlog = [kept(store, n, bytes(1024)) for n in range(1, 31)]  # three segments
    store.sync()
    while backlog:
        del backlog[0]  # one delivery acknowledged every 10 ms
        clock.now_s += 0.01
        store.compact_step()
        assert not list(tmp_path.glob("*.tmp")), "a segment being drained was rewritten"
    compact_all(store)
    assert [path.name for path in tmp_path.glob("*.seg")] == [store._active.path.name]


def test_a_segment_whose_bodies_stopped_dying_is_rewritten_once_quiet(tmp_path: Path) -> None:
    """The consumer stopped half way through a segment (or one old message stays unacked):
    a second later the segment keeps only its live bodies."""
    clock = Clock()
    store = BodyStore(tmp_path, segment_bytes=10 * 1024, quiet_s=1.0, clock=clock)
    bodies = [kept(store, n, bytes([n]) * 1024) for n in range(1, 12)]  # 10 seal a segment
    del bodies[:7]
    clock.now_s += 0.5
    assert store.compact_step() is False and store.reclaimable  # not quiet yet: it waits
    clock.now_s += 0.6
    compact_all(store)
    assert not store.reclaimable
    sealed = store._segments[0]
    assert list(sealed.ids) == [8, 9, 10] and sealed.file_bytes == 3 * (RECORD.size + 1024)
    assert [body.read() for body in bodies] == [bytes([n]) * 1024 for n in range(8, 12)]


def test_a_body_kept_twice_is_released_in_its_newest_copy_whatever_was_found_last(
    tmp_path: Path,
) -> None:
    """`_find` tries the segment it found last first. A publish replayed while its dead copy's
    segment is being compacted is written again, into a newer segment: the older one holds a
    copy too, and finding something else there last must not make it the answer."""
    store = new_store(tmp_path, segment_bytes=2048)
    bodies = [kept(store, n, bytes([n]) * 500) for n in range(1, 6)]  # 1-4 fill a segment
    del bodies[:3]
    store.compact_step()  # starts rewriting the first segment; nothing copied yet
    replayed = kept(store, 3, bytes([3]) * 500)  # its dead copy waits in the first segment
    assert store.read(4) == bytes([4]) * 500  # found last: the first segment
    assert store.live_count == 3
    del replayed
    assert store.live_count == 2
    compact_all(store)
    assert [body.read() for body in bodies] == [bytes([4]) * 500, bytes([5]) * 500]


def test_a_release_in_order_after_a_replayed_publish_frees_the_newest_copy(
    tmp_path: Path,
) -> None:
    """`release` tries the record after the one it freed last. Here that record is body 3's
    dead copy, and 3 was written again into a newer segment by a replayed publish: letting go
    of the replayed message must free the newer copy, not mark the dead one dead again."""
    store = new_store(tmp_path, segment_bytes=2048)
    bodies = {n: kept(store, n, bytes([n]) * 500) for n in range(1, 6)}  # 1-4 fill a segment
    for n in (3, 1, 2):  # the last two in order: 3's old copy is next after them
        del bodies[n]
    store.compact_step()  # starts rewriting the first segment; nothing copied yet
    replayed = kept(store, 3, bytes([3]) * 500)
    assert store.live_count == 3
    del replayed
    assert store.live_count == 2
    compact_all(store)
    assert [body.read() for body in bodies.values()] == [bytes([4]) * 500, bytes([5]) * 500]


def test_dead_bodies_leave_the_disk_only_once_the_journal_synced_their_release(
    tmp_path: Path,
) -> None:
    """A crash replays only what the journal synced: the entry that let go of a body may come
    back, and with it the body's holder."""
    store = new_store(tmp_path, segment_bytes=2048)
    bodies = [kept(store, n, bytes(500)) for n in range(1, 6)]  # the first four fill a segment
    del bodies[:4]  # released by entries up to the journal's write number 10
    steps = [store.compact_step(written=10, durable=9) for _ in range(5)]
    assert steps == [True] * 5 and len(list(tmp_path.glob("*.seg"))) == 2  # nothing deleted
    store.compact_step(written=11, durable=10)
    assert len(list(tmp_path.glob("*.seg"))) == 1
    assert store.read(5) == bytes(500)
    assert store.compact_step(written=11, durable=10) is False


def test_a_new_state_drops_a_compaction_that_waits_for_the_journal(tmp_path: Path) -> None:
    """A follower installs a snapshot while a compaction waits to replace its segment: the
    wait ends with the compaction, not with a write to its removed temporary file."""
    store = new_store(tmp_path, segment_bytes=2048)
    bodies = [kept(store, n, bytes([n]) * 300) for n in range(1, 20)]
    del bodies[::2]
    for _ in range(50):
        store.compact_step(written=10, durable=9)  # copied; the replacement waits
    assert store._removal is not None
    held = [Body.stored(body.id, body.size) for body in bodies]  # the installed state's
    store.adopt([held])
    for _ in range(50):
        store.compact_step(written=11, durable=11)
    assert all(store.read(body.id) == bytes([body.id]) * 300 for body in held)


def test_bodies_read_in_order_come_back_exact_across_read_ahead_and_the_write_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(body_store, "READ_AHEAD_BYTES", 5000)  # a few records at a time
    store = new_store(tmp_path)
    expected = {n: bytes([n % 251]) * (n * 37 % 3000 + 1) for n in range(1, 400)}
    bodies = [kept(store, n, data) for n, data in expected.items()]
    store._active.flush()  # on the file up to here; the rest stays in the write buffer
    bodies += [kept(store, n, bytes([n % 7]) * 100) for n in range(400, 450)]
    expected.update({n: bytes([n % 7]) * 100 for n in range(400, 450)})
    for start in (1, 200):  # from the start, then again from the middle
        assert {n: store.read(n) for n in range(start, 450)} == {
            n: expected[n] for n in range(start, 450)
        }
    assert [store.read(n) for n in (420, 3, 399, 5)] == [expected[n] for n in (420, 3, 399, 5)]


def test_reading_on_in_order_after_a_segment_is_gone_reads_the_body_where_it_is(
    tmp_path: Path,
) -> None:
    """`read` tries the record after the one it read last: once that segment was deleted and
    a replayed publish wrote the body again elsewhere, the deleted file may not be read."""
    store = new_store(tmp_path, segment_bytes=800)
    first = [kept(store, n, bytes([n]) * 400) for n in (1, 2)]  # fill segment 1
    later = kept(store, 3, bytes([3]) * 400)  # segment 2, active
    assert store.read(1) == bytes([1]) * 400
    del first
    compact_all(store)  # segment 1 is dead: deleted
    again = kept(store, 2, bytes([2]) * 400)  # the journal replays the publish of 2
    assert store.read(2) == bytes([2]) * 400
    assert later.read() == bytes([3]) * 400 and again.read() == bytes([2]) * 400


def test_a_compacted_segment_survives_a_restart(tmp_path: Path) -> None:
    store = new_store(tmp_path, segment_bytes=4096)
    live = {n: kept(store, n, b"%04d" % n * 100) for n in range(1, 60)}
    for n in range(1, 60, 2):
        del live[n]
    compact_all(store)
    store.close()
    again = new_store(tmp_path, segment_bytes=4096)
    held = [Body.stored(n, 400) for n in live]  # the restored state's
    again.adopt([held])
    assert all(again.read(n) == b"%04d" % n * 100 for n in live)
    assert again.live_count == len(live)


def test_a_torn_record_at_the_end_is_cut_off_on_start(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    kept(store, 1, b"whole")
    kept(store, 2, b"torn body")
    store.sync()
    store.close()
    (segment,) = tmp_path.glob("*.seg")
    with open(segment, "r+b") as file:
        file.truncate(os.path.getsize(segment) - 3)  # a crash in the middle of writing 2
    again = new_store(tmp_path)
    assert again.read(1) == b"whole"
    with pytest.raises(LookupError):
        again.read(2)
    assert os.path.getsize(segment) == RECORD.size + len(b"whole")


def test_a_corrupt_record_is_not_believed(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    kept(store, 1, b"first")
    kept(store, 2, b"second")
    store.sync()
    store.close()
    (segment,) = tmp_path.glob("*.seg")
    with open(segment, "r+b") as file:
        file.seek(-1, os.SEEK_END)
        file.write(b"X")  # the checksum no longer matches
    again = new_store(tmp_path)
    assert again.read(1) == b"first"
    with pytest.raises(LookupError):
        again.read(2)


def test_a_compaction_cut_short_by_a_crash_leaves_the_old_segment(tmp_path: Path) -> None:
    store = new_store(tmp_path, segment_bytes=2048)
    live = [kept(store, n, bytes([n]) * 300) for n in range(1, 20)]
    del live[::2]
    store.sync()  # what was confirmed
    store.compact_step(budget_bytes=300)  # starts one
    store.compact_step(budget_bytes=300)  # copies a little into the temporary file
    assert list(tmp_path.glob("*.tmp"))
    # SIGKILL now: the store is not closed; a new one starts from what is on disk
    again = new_store(tmp_path, segment_bytes=2048)
    assert not list(tmp_path.glob("*.tmp"))
    held = [Body.stored(body.id, body.size) for body in live]
    again.adopt([held])
    assert all(again.read(body.id) == bytes([body.id]) * 300 for body in live)


def test_a_replayed_publish_finds_its_body_and_does_not_store_it_twice(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    first = kept(store, 5, b"payload")
    store.sync()
    disk_bytes = store.disk_bytes
    store.close()
    del first
    again = new_store(tmp_path)
    again.adopt(())  # a restart without a snapshot: nothing is live until replayed
    replayed = kept(again, 5, b"payload")
    assert replayed.read() == b"payload" and again.disk_bytes == disk_bytes


def test_a_body_kept_while_its_dead_copy_is_being_compacted_is_written_again(
    tmp_path: Path,
) -> None:
    store = new_store(tmp_path, segment_bytes=2000)
    bodies = {n: kept(store, n, bytes([n]) * 200) for n in range(1, 12)}  # 1-10 fill one
    for n in (2, 3, 4, 6, 7, 8):
        del bodies[n]  # the first segment falls under half live
    store.compact_step(budget_bytes=1)  # starts rewriting it
    store.compact_step(budget_bytes=1)  # copies 1
    store.compact_step(budget_bytes=1)  # passes 2, 3 and 4 by, copies 5
    bodies[2] = kept(store, 2, bytes([2]) * 200)  # a replayed publish keeps 2 again
    compact_all(store)
    assert all(body.read() == bytes([n]) * 200 for n, body in bodies.items())


def test_a_body_kept_twice_stays_in_memory_rather_than_being_freed_early(
    tmp_path: Path,
) -> None:
    store = new_store(tmp_path)
    first = kept(store, 3, b"one")
    second = Body(3, b"one")
    store.keep(second)
    assert second.in_memory
    del second
    assert first.read() == b"one" and store.live_count == 1


def _stretch(start: int, length: int, changes: list[tuple[int, int]]) -> list[int]:
    """Ids in order from `start`, as a backlog holds them, with a few replaced or repeated."""
    ids = list(range(start, start + length))
    for at, body_id in changes:
        if ids:
            ids[at % len(ids)] = body_id
    return ids


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    # a run of publishes, then some written again (replayed) or out of order
    written=st.tuples(
        st.integers(1, 40), st.integers(0, 100), st.lists(st.integers(1, 130), max_size=12)
    ).map(lambda w: list(range(w[0], w[0] + w[1])) + w[2]),
    segment_bytes=st.integers(100, 2000),
    runs=st.lists(
        st.one_of(
            st.lists(st.integers(1, 130), max_size=40),  # ids in any order, repeats, missing
            st.builds(
                _stretch,
                st.integers(1, 120),
                st.integers(0, 120),
                st.lists(st.tuples(st.integers(0, 200), st.integers(1, 130)), max_size=2),
            ),
        ),
        max_size=5,
    ),
)
def test_adopt_marks_the_newest_copy_of_each_held_body_and_nothing_else(
    tmp_path_factory: pytest.TempPathFactory,
    written: list[int],
    segment_bytes: int,
    runs: list[list[int]],
) -> None:
    """Whatever order, repeats and stretches the runs hold, each body held is live in the
    newest segment that has it, and every other record is garbage. Writing an id again (a
    replayed publish) makes a newer copy; writing one lower than the last seals the segment,
    so segments' ranges overlap."""
    directory = tmp_path_factory.mktemp("store")
    store = new_store(directory, segment_bytes=segment_bytes)
    for body_id in written:
        store._write(body_id, bytes([body_id]) * 40)
    store.sync()
    store.close()
    again = new_store(directory, segment_bytes=segment_bytes)
    state = [[Body.stored(body_id, 40) for body_id in run] for run in runs]  # held through
    again.adopt(state)
    newest = {}  # id: the highest segment number holding it
    for segment in again._segments:
        for body_id in segment.ids:
            newest[body_id] = max(newest.get(body_id, 0), segment.number)
    held = {body_id for run in runs for body_id in run if body_id in newest}
    for segment in again._segments:
        expected = [
            body_id in held and newest[body_id] == segment.number for body_id in segment.ids
        ]
        assert [bool(flag) for flag in segment.live] == expected
        assert segment.live_count == sum(expected)
        assert segment.live_bytes == 40 * sum(expected)
    assert all(again.read(body_id) == bytes([body_id]) * 40 for body_id in held)


def test_bodies_of_a_retired_state_release_nothing(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    old = kept(store, 1, b"shared")
    new = [Body.stored(1, 6)]  # the new state holds body 1 as well
    store.adopt([new])
    del old
    assert store.live_count == 1 and store.read(1) == b"shared"


# --- a model-checked machine ---------------------------------------------------------------


class BodyStoreMachine(RuleBasedStateMachine):
    """Keeps, releases, compaction steps, clean restarts and crashes with a torn tail."""

    @initialize()
    def start(self) -> None:
        self.directory = Path(self._tmp())
        self.segment_bytes = 600  # a few bodies a segment: sealing and compaction are common
        self.now_s = 0.0  # the stores' clock: a segment is rewritten once quiet for 1 s of it
        self.store = self._open()
        self.live: dict[int, Body] = {}
        self.data: dict[int, bytes] = {}
        self.synced: set[int] = set()  # kept before the last sync: a crash keeps them
        self.synced_at: tuple[Path, int] | None = None  # the active segment and its synced size
        self.next_id = 1

    def _open(self) -> BodyStore:
        return BodyStore(
            self.directory, segment_bytes=self.segment_bytes, quiet_s=1.0, clock=self._now
        )

    def _now(self) -> float:
        return self.now_s

    def _tmp(self) -> str:
        import tempfile

        return tempfile.mkdtemp(prefix="bodies-")

    @rule(size=st.integers(0, 300), fill=st.integers(0, 255))
    def keep(self, size: int, fill: int) -> None:
        body_id, self.next_id = self.next_id, self.next_id + 1
        data = bytes([fill]) * size + body_id.to_bytes(4, "little")
        self.live[body_id] = kept(self.store, body_id, data)
        self.data[body_id] = data

    @precondition(lambda self: self.live)
    @rule(pick=st.integers(0, 10_000))
    def release(self, pick: int) -> None:
        body_id = sorted(self.live)[pick % len(self.live)]
        del self.live[body_id]
        self.synced.discard(body_id)

    @precondition(lambda self: len(self.data) > len(self.live))
    @rule(pick=st.integers(0, 10_000))
    def replay(self, pick: int) -> None:
        """A publish the journal replays after a restart keeps a body that had died."""
        dead = sorted(set(self.data) - set(self.live))
        body_id = dead[pick % len(dead)]
        self.live[body_id] = kept(self.store, body_id, self.data[body_id])

    @rule(budget=st.integers(1, 400), steps=st.integers(1, 2))
    def compact(self, budget: int, steps: int) -> None:
        for _ in range(steps):
            self.store.compact_step(budget_bytes=budget)

    @rule(seconds=st.sampled_from([0.5, 2.0]))
    def time_passes(self, seconds: float) -> None:
        self.now_s += seconds

    @rule()
    def sync(self) -> None:
        self.store.sync()
        self.synced = set(self.live)
        active = self.store._active
        self.synced_at = (active.path, active.file_bytes)

    @rule()
    def restart(self) -> None:
        self.store.sync()
        self.store.close()
        self.store._segments.clear()  # closed: nothing for abandon() to close again
        self._reopen(set(self.live))

    @rule(cut=st.integers(0, 10_000))
    def crash_mid_write(self, cut: int) -> None:
        """A crash: what was written since the last sync may be cut anywhere (a torn record);
        the journal replays those publishes."""
        active = self.store._active
        active.flush()
        synced_bytes = 0
        if self.synced_at is not None and self.synced_at[0] == active.path:
            synced_bytes = self.synced_at[1]
        if active.file_bytes > synced_bytes:
            with open(active.path, "r+b") as file:
                file.truncate(synced_bytes + cut % (active.file_bytes - synced_bytes))
        self.synced_at = None
        self._reopen(self.synced)
        for body_id in set(self.live) - self.synced:  # the journal replays the publish
            self.live[body_id] = kept(self.store, body_id, self.data[body_id])

    def _reopen(self, survivors: set[int]) -> None:
        abandon(self.store)  # the process is gone
        self.store = self._open()
        stored = {n: Body.stored(n, len(self.data[n])) for n in self.live if n in survivors}
        self.store.adopt([stored.values()])
        self.live = {n: body for n, body in self.live.items() if n not in survivors} | stored

    def teardown(self) -> None:
        abandon(self.store)
        shutil.rmtree(self.directory, ignore_errors=True)

    @invariant()
    def every_live_body_reads_back(self) -> None:
        for body_id, body in self.live.items():
            assert body.read() == self.data[body_id]

    @invariant()
    def the_store_counts_what_is_live(self) -> None:
        assert self.store.live_count == sum(not b.in_memory for b in self.live.values())

    @invariant()
    def dead_bytes_are_reclaimed_once_compaction_is_done(self) -> None:
        store = self.store
        if store._compaction is None and not store.reclaimable:
            sealed = [s for s in store._segments if s.sealed]
            for segment in sealed:
                assert segment.live_count and segment.live_share >= body_store.COMPACT_LIVE_RATIO


TestBodyStoreMachine = BodyStoreMachine.TestCase
TestBodyStoreMachine.settings = settings(
    max_examples=80,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --- snapshots of queues: rows, one body object per id ----------------------------------------


def fanout_state() -> BrokerState:
    harness = Harness()
    harness.declare_queue(PUBLISHER, "a")
    harness.declare_queue(PUBLISHER, "b")
    for queue in ("a", "b"):
        harness.apply(
            c.BindQueue(
                channel=PUBLISHER,
                vhost=VHOST,
                queue=queue,
                exchange="amq.fanout",
                routing_key="",
                arguments={},
            )
        )
    harness.publish(PUBLISHER, "", b"to both", exchange="amq.fanout")
    return harness.broker.state


def test_a_body_two_queues_hold_is_one_object_after_a_snapshot_load(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    state = fanout_state()
    store.adopt(bodies_held(state))  # written down, held by reference
    with loading():
        restored = pickle.loads(pickle.dumps(state, protocol=5))
    store.adopt(bodies_held(restored))
    a, b = (restored.vhosts[VHOST].queues[name].head().message.body for name in "ab")
    assert a is b and not a.in_memory
    assert a.read() == b"to both"
    assert restored == state


def test_a_queue_pickled_as_objects_before_rows_still_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = fanout_state()
    monkeypatch.delattr(Queue, "__getstate__")  # as queues were pickled before rows
    old = pickle.dumps(state, protocol=5)
    monkeypatch.undo()
    assert pickle.loads(old) == state
