"""The proposer's stop-and-wait, driven by hand: time and the leader are inputs, what to send
is the answer (etcd's raft tests drive their node the same way). No pysyncobj, no sockets."""

from __future__ import annotations

from warrenmq.replication import commands as c
from warrenmq.replication.proposer import ENTRY_HEADER, LOST, Pending, Proposer
from warrenmq.replication.replies import Reply

from .harness import channel_ref, publish_command

REF = channel_ref(1)


def proposer(**settings: float) -> Proposer:
    options = {"resend_after_s": 1.0, "give_up_after_s": 10.0, "entry_size_max_bytes": 10_000}
    return Proposer("n1", 7, **{**options, **settings})  # type: ignore[arg-type]


def vhost(name: str) -> c.AddVhost:
    return c.AddVhost(vhost=name)


def decoded(entry: Pending) -> tuple[tuple[str, int, int], list[c.Command]]:
    length, incarnation, seq = ENTRY_HEADER.unpack_from(entry.payload)
    start = ENTRY_HEADER.size
    node = entry.payload[start : start + length].decode()
    return (node, incarnation, seq), c.decode_entry(entry.payload[start + length :])


def test_one_entry_flies_and_what_comes_meanwhile_goes_as_the_next_one() -> None:
    p = proposer()
    assert p.propose(vhost("a"), None) is True  # first of a batch: flush this turn
    first = p.next_to_send(0.0, "leader")
    assert first is not None and decoded(first) == (("n1", 7, 1), [vhost("a")])
    assert [p.propose(vhost(name), None) for name in "bcd"] == [True, False, False]
    assert p.next_to_send(0.1, "leader") is None  # stop-and-wait
    assert p.applied("n1", 7, 1) is first
    second = p.next_to_send(0.2, "leader")
    assert second is not None and decoded(second) == (("n1", 7, 2), [vhost(n) for n in "bcd"])


def test_the_entry_in_flight_is_sent_again_on_a_new_leader_or_after_resend_after_s() -> None:
    p = proposer()
    p.propose(vhost("a"), None)
    entry = p.next_to_send(0.0, "old")
    assert p.check(0.5, "old") == (None, None)
    assert p.check(0.6, None) == (None, None)  # no leader known: nobody to send it to
    assert p.check(0.7, "new") == (None, entry)  # it may have died with the old leader
    assert p.check(0.8, "new") == (None, None)
    assert p.check(1.8, "new") == (None, entry)  # resend_after_s since the last send
    assert p.in_flight is entry and entry.first_sent_at_s == 0.0


def test_an_entry_not_applied_within_give_up_after_s_is_given_up_and_the_next_goes() -> None:
    p = proposer(give_up_after_s=5.0)
    replies: list[Reply] = []
    p.propose(vhost("a"), replies.append)
    entry = p.next_to_send(0.0, "leader")
    p.propose(vhost("b"), None)
    assert p.check(5.0, "leader")[0] is None
    assert p.check(5.1, "leader") == (entry, None)
    assert p.in_flight is None
    following = p.next_to_send(5.1, "leader")
    assert following is not None and decoded(following)[1] == [vhost("b")]
    assert p.applied("n1", 7, entry.seq) is None  # it arrived after all: nobody waits


def test_only_this_incarnations_entry_in_flight_counts_as_applied() -> None:
    p = proposer()
    p.propose(vhost("a"), None)
    entry = p.next_to_send(0.0, "leader")
    assert entry is not None
    for node, incarnation, seq in (("n2", 7, 1), ("n1", 6, 1), ("n1", 7, 2)):
        assert p.applied(node, incarnation, seq) is None
    assert p.in_flight is entry


def test_a_lost_incarnation_answers_everyone_waiting_and_numbers_anew() -> None:
    p = proposer()
    calls: list[str] = []
    p.propose(vhost("a"), lambda _: calls.append("in flight"))
    p.next_to_send(0.0, "leader")
    p.propose(vhost("b"), lambda _: calls.append("batched"))
    p.propose(vhost("c"), None)
    for waiting in p.change_incarnation(8):
        waiting(LOST)
    assert sorted(calls) == ["batched", "in flight"]
    assert p.in_flight is None and not p.batch and not p.sealed
    p.propose(vhost("d"), None)
    entry = p.next_to_send(1.0, "leader")
    assert entry is not None and decoded(entry)[0] == ("n1", 8, 1)


def test_a_batch_reaching_the_entry_size_is_sealed_at_once() -> None:
    p = proposer(entry_size_max_bytes=5_000)
    p.propose(publish_command(REF, "q", bytes(3_000)), None)
    assert not p.sealed
    p.propose(publish_command(REF, "q", bytes(3_000)), None)
    assert len(p.sealed) == 1 and not p.batch  # the next proposal starts a new batch
    assert p.propose(vhost("a"), None) is True
