"""The Raft journal's guards, the commit-index clamp and the peer cipher, with no pysyncobj node
running and no ports: files in a temporary folder and messages built by hand."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

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
