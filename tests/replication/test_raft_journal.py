"""The Raft journal's guards, the commit-index clamp and the peer cipher, with no pysyncobj node
running and no ports: files in a temporary folder and messages built by hand."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

import pysyncobj.journal
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from warrenmq.replication import raft_journal
from warrenmq.replication.raft import DurableJournal, PeerCipher, clamp_commit_index
from warrenmq.replication.raft_wire import tune_pysyncobj


def journal_with(path: Path, terms: list[int]) -> DurableJournal:
    journal = DurableJournal(str(path))
    for index, term in enumerate(terms, start=1):
        journal.add(b"entry-%d" % index, index, term)
    return journal


def test_a_stale_append_never_shortens_an_acknowledged_log(tmp_path: Path) -> None:
    """Raft §5.3: a follower deletes entries only from the first one that conflicts.

    pysyncobj answers a stale append-entries (prevLogIdx 2, entries 3-4 again) by deleting
    everything after index 2 first; the journal keeps 5 and 6, which it had acknowledged.
    """
    journal = journal_with(tmp_path / "journal", [1, 1, 1, 1, 1, 1])
    journal.deleteEntriesFrom(2)  # positions are 0-based: everything after index 2
    journal.add(b"entry-3", 3, 1)
    journal.add(b"entry-4", 4, 1)
    assert [entry[1] for entry in journal[:]] == [1, 2, 3, 4, 5, 6]
    journal.deleteEntriesFrom(3)  # a heartbeat with an old prevLogIdx: no entries at all
    assert len(journal) == 6


def test_a_conflicting_entry_truncates_from_there(tmp_path: Path) -> None:
    journal = journal_with(tmp_path / "journal", [1, 1, 1, 1, 1])
    journal.deleteEntriesFrom(2)
    journal.add(b"entry-3", 3, 1)  # matches: kept
    journal.add(b"other-4", 4, 2)  # a newer term at index 4: 4 and 5 go
    assert [(entry[1], entry[2]) for entry in journal[:]] == [(1, 1), (2, 1), (3, 1), (4, 2)]
    reopened = DurableJournal(str(tmp_path / "journal"))
    assert [(entry[1], entry[2]) for entry in reopened[:]] == [(1, 1), (2, 1), (3, 1), (4, 2)]


class StalledDisks:
    """fdatasync, in the journals' sync threads of the chosen directories, waits until
    `release` (a slow shared disk: it took up to 1.1 s on this machine under load)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *directories: Path) -> None:
        self.gate = threading.Event()
        self.waited = 0
        real = os.fdatasync
        names = [f"sync {directory}" for directory in directories]

        def fdatasync(descriptor: int) -> None:
            if any(threading.current_thread().name.startswith(name) for name in names):
                self.waited += 1
                self.gate.wait(timeout=30)
            real(descriptor)

        monkeypatch.setattr(os, "fdatasync", fdatasync)

    def release(self) -> None:
        self.gate.set()


def test_a_background_sync_covers_only_what_was_written_before_it_began(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """synced_index says which entries are durable; entries cut and written anew while a
    group was syncing are not, though their indexes are."""
    journal = journal_with(tmp_path / "journal", [1, 1, 1, 1, 1])
    disk = StalledDisks(monkeypatch, tmp_path)
    journal.begin_sync()  # entries 1 to 5 go for the disk
    journal.deleteEntriesFrom(3)  # a position: from index 4 on, once something conflicts
    journal.add(b"other-4", 4, 2)  # a newer term at index 4: the old 4 and 5 go
    journal.add(b"other-5", 5, 2)
    journal.poll_sync()
    assert journal.synced_index == 0 and not journal.synced  # nothing has finished yet
    disk.release()
    journal._syncer.idle.wait(timeout=30)
    journal.poll_sync()  # the group of 1 to 5 is done
    assert journal.synced_index == 3
    journal.begin_sync()  # the new 4 and 5
    journal._syncer.idle.wait(timeout=30)
    journal.poll_sync()
    assert journal.synced_index == 5 and journal.synced
    journal._destroy()


def test_the_stale_append_alarm_is_said_truthfully(caplog: pytest.LogCaptureFixture) -> None:
    tune_pysyncobj()
    with caplog.at_level(logging.WARNING, logger="pysyncobj.syncobj"):
        logging.getLogger("pysyncobj.syncobj").critical(
            "truncating already-applied log entries from index %d (last applied: %d) - state "
            "machine may have diverged from other cluster members",
            5,
            7,
        )
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert record.getMessage() == (
        "stale append-entries from index 5 reached below the last applied 7; the journal "
        "keeps every entry that does not conflict (Raft 5.3)"
    )


def test_term_and_vote_survive_a_reopen(tmp_path: Path) -> None:
    journal = journal_with(tmp_path / "journal", [1])
    journal.setCurrentTerm(7, "127.0.0.1:9")
    reopened = DurableJournal(str(tmp_path / "journal"))
    assert (reopened.getCurrentTerm(), reopened.getVotedForNodeId()) == (7, "127.0.0.1:9")


@pytest.mark.parametrize(
    ("message", "commit_index"),
    [
        ({"prevLogIdx": 2, "entries": [1, 2], "commit_index": 9}, 4),
        ({"prevLogIdx": 2, "entries": [], "commit_index": 9}, 2),  # a heartbeat
        ({"prevLogIdx": 2, "entries": [1, 2], "commit_index": 3}, 3),  # the leader's is lower
        ({"prevLogIdx": 2, "transmission": "finish", "commit_index": 9}, 3),  # one big entry
        ({"prevLogIdx": 2, "transmission": "start", "commit_index": 9}, 9),  # commits nothing
        ({"serialized": b"snapshot", "commit_index": 9}, 9),  # the log becomes the leader's
    ],
)
def test_the_commit_index_clamp(message: dict, commit_index: int) -> None:
    clamp_commit_index(message)
    assert message["commit_index"] == commit_index


def test_peer_cipher_round_trips_and_rejects_every_tampering() -> None:
    cipher, same_secret = PeerCipher("cluster secret"), PeerCipher("cluster secret")
    message = os.urandom(70_000)
    token = cipher.encrypt_at_time(message, 1234)
    assert message not in token  # encrypted, not merely signed
    assert same_secret.extract_timestamp(token) == 1234
    assert same_secret.decrypt(token) == message
    assert cipher.encrypt_at_time(message, 1234) != token  # a fresh nonce every time
    # each instance encrypts under a key of its own (a random salt), so two nodes' counters
    # never give one key the same nonce twice
    assert same_secret.encrypt_at_time(message, 1234)[8:24] != token[8:24]
    assert cipher.decrypt(same_secret.encrypt_at_time(message, 1234)) == message
    for position in (0, 8, 30, len(token) // 2, len(token) - 1):  # header, nonce, body, tag
        tampered = bytearray(token)
        tampered[position] ^= 0x01
        with pytest.raises(ValueError, match="authentication"):
            PeerCipher("cluster secret").decrypt(bytes(tampered))
    with pytest.raises(ValueError, match="authentication"):
        PeerCipher("another secret").extract_timestamp(token)
    with pytest.raises(ValueError, match="too short"):
        cipher.decrypt(token[:40])


# --- the file: entries on disk, an index in memory ------------------------------------------


def entries(journal: DurableJournal) -> list[tuple[bytes, int, int]]:
    return list(journal[:])


def test_entries_are_read_back_from_the_file_not_kept_in_memory(tmp_path: Path) -> None:
    journal = journal_with(tmp_path / "journal", [1] * 50)
    held = [value for value in vars(journal).values() if isinstance(value, list)]
    assert held == [[]]  # only the (empty) list of companions to sync: no list of entries
    assert journal[17] == (b"entry-18", 18, 1)
    view = journal[10:]
    assert len(view) == 40 and view[-1] == (b"entry-50", 50, 1)
    assert view[:2] == [(b"entry-11", 11, 1), (b"entry-12", 12, 1)]


def test_a_torn_entry_at_the_end_is_cut_off_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    journal = journal_with(path, [1, 1, 1])
    journal.sync()
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) - 2)  # a crash while entry 3 was being written
    reopened = DurableJournal(str(path))
    assert entries(reopened) == [(b"entry-1", 1, 1), (b"entry-2", 2, 1)]
    reopened.add(b"entry-3 again", 3, 2)
    assert entries(DurableJournal(str(path)))[-1] == (b"entry-3 again", 3, 2)


def test_a_compacted_prefix_stays_gone_after_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    journal = journal_with(path, [1] * 10)
    journal.deleteEntriesTo(7)
    assert [entry[1] for entry in entries(journal)] == [8, 9, 10]
    assert journal.size_bytes == sum(len(entry[0]) for entry in entries(journal))
    assert [entry[1] for entry in entries(DurableJournal(str(path)))] == [8, 9, 10]


def test_the_file_is_rewritten_once_the_dead_prefix_is_the_larger_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(raft_journal, "REWRITE_DEAD_BYTES_MIN", 1000)
    path = tmp_path / "journal"
    journal = DurableJournal(str(path))
    for index in range(1, 101):
        journal.add(bytes(100), index, 1)
    journal.deleteEntriesTo(98)
    assert os.path.getsize(path) < 3 * (100 + raft_journal.RECORD.size) + 100
    assert [entry[1] for entry in entries(DurableJournal(str(path)))] == [99, 100]


def test_a_journal_of_pysyncobjs_format_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    old = pysyncobj.journal.FileJournal(str(path))
    for index in range(1, 4):
        old.add(b"old-%d" % index, index, 2)
    old.setCurrentTerm(2, "127.0.0.1:1")
    old._destroy()
    journal = DurableJournal(str(path))
    assert entries(journal) == [(b"old-1", 1, 2), (b"old-2", 2, 2), (b"old-3", 3, 2)]
    assert journal.getCurrentTerm() == 2
    assert open(path, "rb").read(len(raft_journal.MAGIC)) == raft_journal.MAGIC


class JournalMachine(RuleBasedStateMachine):
    """The journal against a list: appends, §5.3 truncations, compactions, reopens, crashes."""

    @initialize()
    def start(self) -> None:
        import tempfile

        self.path = str(Path(tempfile.mkdtemp(prefix="journal-")) / "journal")
        self.rewrite_min = raft_journal.REWRITE_DEAD_BYTES_MIN
        raft_journal.REWRITE_DEAD_BYTES_MIN = 500  # compactions rewrite the file often
        self.journal = DurableJournal(self.path)
        self.model: list[tuple[bytes, int, int]] = []
        self.synced = 0  # entries the last sync made durable

    def _next_index(self) -> int:
        return self.model[-1][1] + 1 if self.model else 1

    @rule(size=st.integers(0, 300), term=st.integers(1, 3))
    def add(self, size: int, term: int) -> None:
        index = self._next_index()
        entry = (bytes([index % 256]) * size, index, term)
        self.journal.add(*entry)
        self.model.append(entry)

    @precondition(lambda self: self.model)
    @rule(back=st.integers(1, 5), conflict=st.booleans())
    def leader_sends_again(self, back: int, conflict: bool) -> None:
        """pysyncobj's deleteEntriesFrom then add: kept if it matches, cut if it conflicts."""
        position = max(0, len(self.model) - back)
        self.journal.deleteEntriesFrom(position)
        command, index, term = self.model[position]
        if conflict:  # shorter: what the cut removed must not come back after it
            entry = (command[: len(command) // 2], index, term + 10)
            self.model[position:] = [entry]
            self.synced = min(self.synced, position)
        else:
            entry = (command, index, term)
        self.journal.add(*entry)

    @precondition(lambda self: len(self.model) > 1)
    @rule(keep=st.integers(1, 10))
    def compact(self, keep: int) -> None:
        drop = max(0, len(self.model) - keep)
        self.journal.deleteEntriesTo(drop)
        del self.model[:drop]
        self.synced = max(0, self.synced - drop)

    @rule()
    def clear(self) -> None:
        """A snapshot installed: pysyncobj clears the log before adding the snapshot's two."""
        self.journal.clear()
        self.model.clear()
        self.synced = 0

    @rule()
    def sync(self) -> None:
        self.journal.sync()
        self.synced = len(self.model)

    @rule()
    def reopen(self) -> None:
        self.journal._destroy()
        self.journal = DurableJournal(self.path)

    @rule(cut=st.integers(0, 10_000))
    def crash(self, cut: int) -> None:
        """Bytes after the last synced entry may be torn anywhere."""
        self.journal.sync()  # for the model: what is cut below is all that is lost
        synced_end = self.journal._offsets[self.synced] if self.synced < len(self.model) else None
        os.close(self.journal._descriptor)
        size = os.path.getsize(self.path)
        if synced_end is not None and size > synced_end:
            with open(self.path, "r+b") as file:
                file.truncate(synced_end + cut % (size - synced_end))
        self.journal = DurableJournal(self.path)
        survivors = len(self.journal)
        assert self.synced <= survivors <= len(self.model)
        del self.model[survivors:]
        self.synced = survivors

    def teardown(self) -> None:
        raft_journal.REWRITE_DEAD_BYTES_MIN = self.rewrite_min
        self.journal._destroy()
        shutil.rmtree(Path(self.path).parent, ignore_errors=True)

    @invariant()
    def the_journal_is_the_model(self) -> None:
        assert list(self.journal[:]) == self.model
        assert len(self.journal) == len(self.model)
        assert self.journal.size_bytes == sum(len(entry[0]) for entry in self.model)
        if self.model:
            assert self.journal[-1] == self.model[-1] and self.journal[0] == self.model[0]


TestJournalMachine = JournalMachine.TestCase
TestJournalMachine.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
