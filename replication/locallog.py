"""A single-node log with the interface the Raft log will have: propose, then replies after commit.

Commands proposed during one loop turn are written as one entry, fsynced once, then applied in
order: each proposer's reply callback runs, then the entry's effects go to the dispatcher (reply
before effects, so basic.consume-ok precedes the first basic.deliver). On open, the newest
snapshot is loaded and the entries after it are replayed without dispatching effects: the
sessions they were meant for died with the previous process, and `NodeUp` releases what they held.

On-disk records: u32 payload length | u32 crc32 of the payload | payload (`encode_entry`). A torn
or corrupt tail record (a crash mid-write) is cut off at open; nothing after it was confirmed.
Once the log passes `compact_after_bytes`, the state is written as a snapshot (write, fsync,
rename, fsync the directory) and the log starts empty.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import typing
import zlib
from pathlib import Path

from warrenmq.replication.commands import Command, decode_entry, encode_entry
from warrenmq.replication.machine import Broker, BrokerState, Meta
from warrenmq.replication.replies import Effect, Reply

__all__ = ["LocalLog", "ReplyCallback"]

log = logging.getLogger(__name__)

ReplyCallback = typing.Callable[[Reply], None]
_RECORD = struct.Struct(">II")
SNAPSHOT_VERSION = 1


class LocalLog:
    def __init__(
        self,
        directory: Path,
        broker: Broker,
        dispatch: typing.Callable[[list[Effect]], None],
        schedule: typing.Callable[[typing.Callable[[], None]], object],
        compact_after_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.directory = directory
        self.broker = broker
        self._dispatch = dispatch
        self._schedule = schedule
        self._compact_after_bytes = compact_after_bytes
        self._pending: list[tuple[Command, ReplyCallback | None]] = []
        self._log_path = directory / "log"
        self._snapshot_path = directory / "snapshot"
        self._file: typing.BinaryIO | None = None
        self._size_bytes = 0

    # --- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._snapshot_path.exists():
            self.broker.state = _load_snapshot(self._snapshot_path)
        index = self.broker.state.last_index
        valid_bytes = 0
        if self._log_path.exists():
            data = self._log_path.read_bytes()
            for payload, end in _records(data):
                index += 1
                for command in decode_entry(payload):
                    self.broker.apply(Meta(index), command)
                valid_bytes = end
        self._file = open(self._log_path, "ab")
        self._file.truncate(valid_bytes)
        self._size_bytes = valid_bytes
        _fsync_directory(self.directory)

    def close(self) -> None:
        if self._pending:
            self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None

    # --- the log interface ----------------------------------------------------------------

    def propose(self, command: Command, on_reply: ReplyCallback | None = None) -> None:
        if not self._pending:
            self._schedule(self.flush)
        self._pending.append((command, on_reply))

    def flush(self) -> None:
        """Write, fsync and apply every command proposed since the last flush, as one entry."""
        if not self._pending or self._file is None:
            return
        batch, self._pending = self._pending, []
        payload = encode_entry([command for command, _ in batch])
        self._file.write(_RECORD.pack(len(payload), zlib.crc32(payload)) + payload)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._size_bytes += _RECORD.size + len(payload)
        index = self.broker.state.last_index + 1
        for command, on_reply in batch:
            applied = self.broker.apply(Meta(index), command)
            # The entry is on disk: every command of it must be applied, whatever a callback
            # does, or the live state would no longer be the state the log replays to.
            try:
                if on_reply is not None:
                    on_reply(applied.reply)
                if applied.effects:
                    self._dispatch(applied.effects)
            except Exception:
                log.exception("reply or effect dispatch failed for %s", type(command).__name__)
        if self._size_bytes > self._compact_after_bytes:
            self.compact()

    def compact(self) -> None:
        """Snapshot the state, then start an empty log."""
        assert self._file is not None
        temporary = self._snapshot_path.with_suffix(".tmp")
        with open(temporary, "wb") as snapshot:
            snapshot.write(bytes([SNAPSHOT_VERSION]))
            pickle.dump(self.broker.state, snapshot, protocol=5)
            snapshot.flush()
            os.fsync(snapshot.fileno())
        os.replace(temporary, self._snapshot_path)
        _fsync_directory(self.directory)
        self._file.truncate(0)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._size_bytes = 0


def _records(data: bytes) -> typing.Iterator[tuple[bytes, int]]:
    offset = 0
    while offset + _RECORD.size <= len(data):
        length, checksum = _RECORD.unpack_from(data, offset)
        start = offset + _RECORD.size
        payload = data[start : start + length]
        if len(payload) < length or zlib.crc32(payload) != checksum:
            return  # torn or corrupt tail: everything from here on was never committed
        offset = start + length
        yield payload, offset


def _load_snapshot(path: Path) -> BrokerState:
    data = path.read_bytes()
    if data[0] != SNAPSHOT_VERSION:
        raise ValueError(f"snapshot version {data[0]} is not {SNAPSHOT_VERSION}")
    state = pickle.loads(data[1:])
    if not isinstance(state, BrokerState):
        raise ValueError(f"snapshot {path} does not hold a broker state")
    return state


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
