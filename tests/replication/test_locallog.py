"""The single-node log: what was flushed survives a restart, compaction restores the same state."""

from __future__ import annotations

from pathlib import Path

from warrenmq.replication import commands as c
from warrenmq.replication.locallog import LocalLog
from warrenmq.replication.machine import Broker
from warrenmq.replication.replies import Deliver, QueueDeclared, Routed

from .harness import VHOST, channel_ref

REF = channel_ref(1)


class Recorder:
    def __init__(self) -> None:
        self.replies: list = []
        self.effects: list = []
        self.scheduled: list = []


def open_log(directory: Path, recorder: Recorder, compact_after_bytes: int = 1 << 30) -> LocalLog:
    log = LocalLog(
        directory, Broker(), recorder.effects.extend, recorder.scheduled.append, compact_after_bytes
    )
    log.open()
    return log


def fill(log: LocalLog, recorder: Recorder, count: int) -> None:
    log.propose(c.AddVhost(vhost=VHOST))
    log.propose(
        c.DeclareQueue(
            channel=REF,
            vhost=VHOST,
            queue="q",
            server_named=False,
            passive=False,
            durable=True,
            exclusive=False,
            auto_delete=False,
            arguments={},
        ),
        recorder.replies.append,
    )
    for number in range(count):
        log.propose(
            c.Publish(
                channel=REF,
                seq=number,
                vhost=VHOST,
                exchange="",
                routing_key="q",
                mandatory=False,
                headers=None,
                properties=b"\x00\x00",
                body=b"m%d" % number,
            ),
            recorder.replies.append,
        )
    log.flush()


def test_one_flush_per_turn_replies_in_order_then_effects(tmp_path: Path) -> None:
    recorder = Recorder()
    log = open_log(tmp_path, recorder)
    fill(log, recorder, 3)
    assert recorder.scheduled == [log.flush]  # scheduled once for the whole batch
    assert recorder.replies == [QueueDeclared("q", 0, 0)] + [Routed(1)] * 3
    log.propose(
        c.Consume(
            channel=REF,
            vhost=VHOST,
            queue="q",
            consumer_tag="t",
            no_ack=False,
            arguments={},
            exclusive=False,
        ),
        recorder.replies.append,
    )
    log.flush()
    assert [effect.body for effect in recorder.effects if isinstance(effect, Deliver)] == [
        b"m0",
        b"m1",
        b"m2",
    ]
    log.close()


def test_restart_replays_to_the_same_state_without_effects(tmp_path: Path) -> None:
    recorder = Recorder()
    log = open_log(tmp_path, recorder)
    fill(log, recorder, 50)
    state = log.broker.state
    log.close()
    again = Recorder()
    reopened = open_log(tmp_path, again)
    assert reopened.broker.state == state
    assert again.effects == []
    reopened.close()


def test_compaction_snapshots_and_restores_the_exact_state(tmp_path: Path) -> None:
    recorder = Recorder()
    log = open_log(tmp_path, recorder, compact_after_bytes=2000)
    fill(log, recorder, 200)  # passes the threshold: snapshot, empty log
    assert (tmp_path / "snapshot").exists() and (tmp_path / "log").stat().st_size == 0
    log.propose(c.Get(channel=REF, vhost=VHOST, queue="q", no_ack=True))
    log.flush()
    state = log.broker.state
    log.close()
    reopened = open_log(tmp_path, Recorder())
    assert reopened.broker.state == state
    assert reopened.broker.query_queue(VHOST, "q").ready_count == 199
    reopened.close()


def test_a_torn_tail_is_cut_off(tmp_path: Path) -> None:
    recorder = Recorder()
    log = open_log(tmp_path, recorder)
    fill(log, recorder, 5)
    log.close()
    with open(tmp_path / "log", "ab") as torn:
        torn.write(b"\x00\x00\x01\x00garbage")  # a crash in the middle of the next record
    reopened = open_log(tmp_path, Recorder())
    assert reopened.broker.query_queue(VHOST, "q").ready_count == 5
    log_size = (tmp_path / "log").stat().st_size
    reopened.propose(c.Get(channel=REF, vhost=VHOST, queue="q", no_ack=True))
    reopened.flush()
    reopened.close()
    assert (tmp_path / "log").stat().st_size > log_size
    assert open_log(tmp_path, Recorder()).broker.query_queue(VHOST, "q").ready_count == 4


def test_a_failing_callback_does_not_stop_the_rest_of_the_entry(tmp_path: Path) -> None:
    recorder = Recorder()
    log = open_log(tmp_path, recorder)
    fill(log, recorder, 0)

    def broken(reply) -> None:
        raise RuntimeError("a bug in a session")

    log.propose(
        c.Publish(
            channel=REF,
            seq=1,
            vhost=VHOST,
            exchange="",
            routing_key="q",
            mandatory=False,
            headers=None,
            properties=b"\x00\x00",
            body=b"1",
        ),
        broken,
    )
    log.propose(
        c.Publish(
            channel=REF,
            seq=2,
            vhost=VHOST,
            exchange="",
            routing_key="q",
            mandatory=False,
            headers=None,
            properties=b"\x00\x00",
            body=b"2",
        ),
        recorder.replies.append,
    )
    log.flush()
    assert recorder.replies[-1] == Routed(1)
    assert log.broker.query_queue(VHOST, "q").ready_count == 2
    state = log.broker.state
    log.close()
    assert open_log(tmp_path, Recorder()).broker.state == state
