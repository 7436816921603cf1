"""Message bodies on disk, outside the replicated state: one store per node.

Theory of operation
-------------------
Every node writes the body of every message a queue keeps as it applies the publish
(`keep`), so the store holds the same bodies on every node without asking another for them.
Bodies go to append-only segment files, each record `<id u64, size u32, crc32 u32, bytes>`.
Memory holds per body only its id, offset, size and a live flag, in arrays per segment (17 bytes
a body), never the bytes. Writes are buffered and reach the disk in the journal's group commit
(raft_journal.py: `dup_unsynced` hands them to its background sync, `sync` blocks): a confirm
still means "on disk on a majority", first in the journal and, once it is compacted, here.

A body dies when the state lets go of it (`Body.__del__` calls `release`). `compact_step`
reclaims in bounded steps: a sealed segment with no live body is deleted, one whose live bytes
fell under half of its size is rewritten with its live records only, a few MiB per loop turn,
into a temporary file that replaces it once complete and synced. One old unacked message thus
pins its own bytes and the few around it that are still live, never the segment's dead ones.
A segment is rewritten only once no body in it has died for a while (`quiet_s`): a consumer
draining a backlog kills a segment's bodies in order, and rewriting it half way copied the
other half only for it to die moments later (a drain of 100,000 wrote 62% of them again).

Crash safety. A sealed segment has an index file beside it, written once it is complete and
synced; the active one is read record by record on start, and a torn record at its end (a
crash mid-write) is cut off. A temporary compaction file that never replaced its segment is
removed. A body leaves the disk only once the journal has synced the entry that let go of it
(`compact_step`): a restart replays that entry again before anything can ask for the body.
After a restart or an installed snapshot, `adopt` learns which bodies the state holds: the rest
is garbage, and a body written again by a replayed publish is found, not stored twice.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import logging
import os
import struct
import time
import typing
import zlib
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path

from warrenmq.replication.body import Body, Holder, attach_stored

__all__ = ["BodyStore", "fsync_path"]

log = logging.getLogger(__name__)

RECORD = struct.Struct("<QII")  # body id, size in bytes, crc32 of the bytes
SEGMENT_BYTES = 64 * 1024 * 1024  # a segment is sealed past this size
WRITE_BUFFER_BYTES = 1024 * 1024  # buffered writes reach the file past this, or at sync
# In-order reads of a segment read this much at once: a drain of 1 KiB bodies spent 17% of its
# node's time in one pread per body.
READ_AHEAD_BYTES = 256 * 1024
COMPACT_STEP_BYTES = 4 * 1024 * 1024  # what one compaction step copies at most
COMPACT_LIVE_RATIO = 0.5  # a sealed segment below this share of live bytes is rewritten
COMPACT_QUIET_S = 1.0  # ... once none of its bodies has died for this long
_SUFFIX = ".seg"
_INDEX_SUFFIX = ".idx"
_TEMPORARY_SUFFIX = ".tmp"


def fsync_path(path: str | Path) -> None:
    """fsync a file or a directory by name (a directory: so a rename in it is durable)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class _Segment:
    """One segment file and the index of its records, in id order."""

    def __init__(self, path: Path, number: int) -> None:
        self.path = path
        self.number = number
        self.descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.ids = array("q")  # body ids, ascending
        self.offsets = array("I")  # where each record starts in the file
        self.sizes = array("I")  # each body's size in bytes
        self.live = bytearray()  # 1 while the state holds the body
        self.live_count = 0
        self.live_bytes = 0
        self.file_bytes = 0  # written, whether flushed or still buffered
        self.buffer = bytearray()  # records not yet written to the file
        self.sealed = False
        self.last_death_s = 0.0  # when a body in it died last (the store's clock)
        self._last_read = -2  # the position read last
        self._ahead: tuple[int, bytes] = (0, b"")  # (file offset, bytes) read ahead

    @property
    def live_share(self) -> float:
        """The share of the file that live records (headers included) take."""
        live_record_bytes = self.live_bytes + self.live_count * RECORD.size
        return live_record_bytes / self.file_bytes if self.file_bytes else 1.0

    def position(self, body_id: int) -> int | None:
        ids = self.ids
        if not ids or body_id < ids[0] or body_id > ids[-1]:
            return None
        position = bisect.bisect_left(ids, body_id)
        return position if ids[position] == body_id else None

    def append(self, body_id: int, data: bytes) -> None:
        self.ids.append(body_id)
        self.offsets.append(self.file_bytes)
        self.sizes.append(len(data))
        self.live.append(1)
        self.live_count += 1
        self.live_bytes += len(data)
        record = RECORD.pack(body_id, len(data), zlib.crc32(data))
        self.buffer += record
        self.buffer += data
        self.file_bytes += RECORD.size + len(data)
        if len(self.buffer) >= WRITE_BUFFER_BYTES:
            self.flush()

    def read(self, position: int) -> bytes:
        start = self.offsets[position] + RECORD.size
        size = self.sizes[position]
        buffered_from = self.file_bytes - len(self.buffer)
        if start >= buffered_from:
            return bytes(self.buffer[start - buffered_from : start - buffered_from + size])
        ahead_at, ahead = self._ahead
        if ahead_at <= start and start + size <= ahead_at + len(ahead):
            return ahead[start - ahead_at : start - ahead_at + size]
        # the record after the last one read: a consumer draining in order, so read ahead
        sequential = position == self._last_read + 1
        self._last_read = position
        length = size
        if sequential:
            length = max(size, min(READ_AHEAD_BYTES, buffered_from - start))
        data = os.pread(self.descriptor, length, start)
        if len(data) < size:
            raise OSError(f"{self.path}: short read of body {self.ids[position]}")
        if length == size:
            return data
        self._ahead = (start, data)
        return data[:size]

    def count_live(self) -> None:
        """live_count and live_bytes again, from the live flags."""
        self.live_count = self.live.count(1)
        self.live_bytes = sum(itertools.compress(self.sizes, self.live))

    def set_live(self, position: int, live: bool) -> None:
        if bool(self.live[position]) == live:
            return
        self.live[position] = live
        sign = 1 if live else -1
        self.live_count += sign
        self.live_bytes += sign * self.sizes[position]

    def flush(self) -> None:
        if self.buffer:
            os.pwrite(self.descriptor, self.buffer, self.file_bytes - len(self.buffer))
            self.buffer.clear()

    def seal(self) -> None:
        """Complete: synced, and its index written beside it for a fast start."""
        self.flush()
        os.fsync(self.descriptor)
        self.sealed = True
        index_path = self.path.with_suffix(_INDEX_SUFFIX)
        temporary = index_path.with_name(index_path.name + _TEMPORARY_SUFFIX)
        with open(temporary, "wb") as index:
            index.write(struct.pack("<QQ", len(self.ids), self.file_bytes))
            self.ids.tofile(index)
            self.offsets.tofile(index)
            self.sizes.tofile(index)
            index.flush()
            os.fsync(index.fileno())
        os.replace(temporary, index_path)

    def load(self) -> None:
        """Rebuild the index: from the index file of a sealed segment, else by reading."""
        self.file_bytes = os.fstat(self.descriptor).st_size
        if self._load_index():
            self.sealed = True
        else:
            self._scan()
        count = len(self.ids)
        self.live = bytearray(b"\x01") * count
        self.live_count = count
        self.live_bytes = sum(self.sizes)

    def _load_index(self) -> bool:
        index_path = self.path.with_suffix(_INDEX_SUFFIX)
        try:
            with open(index_path, "rb") as index:
                count, file_bytes = struct.unpack("<QQ", index.read(16))
                if file_bytes != self.file_bytes:
                    return False
                self.ids.fromfile(index, count)
                self.offsets.fromfile(index, count)
                self.sizes.fromfile(index, count)
        except (OSError, EOFError, struct.error):
            self.ids, self.offsets, self.sizes = array("q"), array("I"), array("I")
            return False
        return True

    def _scan(self) -> None:
        offset = 0
        with open(self.path, "rb") as segment:
            while True:
                header = segment.read(RECORD.size)
                if len(header) < RECORD.size:
                    break
                body_id, size, checksum = RECORD.unpack(header)
                data = segment.read(size)
                if len(data) < size or zlib.crc32(data) != checksum:
                    break
                if self.ids and body_id <= self.ids[-1]:
                    break  # never written so: what follows is not ours
                self.ids.append(body_id)
                self.offsets.append(offset)
                self.sizes.append(size)
                offset += RECORD.size + size
        if offset < self.file_bytes:
            log.warning("%s: a torn record at offset %d was cut off", self.path, offset)
            os.ftruncate(self.descriptor, offset)
        self.file_bytes = offset

    def close(self) -> None:
        self.flush()
        os.close(self.descriptor)
        self.descriptor = -1

    def remove(self) -> None:
        os.close(self.descriptor)
        self.descriptor = -1
        self.path.unlink(missing_ok=True)
        self.path.with_suffix(_INDEX_SUFFIX).unlink(missing_ok=True)


class _Compaction:
    """A sealed segment being rewritten with its live records only."""

    def __init__(self, source: _Segment, target: _Segment) -> None:
        self.source = source
        self.target = target
        self.cursor = 0  # the next of source's records to consider


class BodyStore:
    """The node's message bodies: `keep`, `read`, `release`, and reclaiming in steps."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = SEGMENT_BYTES,
        quiet_s: float = COMPACT_QUIET_S,
        clock: typing.Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.quiet_s = quiet_s
        self._clock = clock
        directory.mkdir(parents=True, exist_ok=True)
        self._holder = Holder(self)
        self._segments: list[_Segment] = []  # by number
        # the segment `_find` found last, tried first: a drain asks for bodies in order
        self._hint: _Segment | None = None
        # the segment and position `release` let go of last, where it looks first
        self._released: tuple[_Segment | None, int] = (None, 0)
        # the segment and position `read` found last, where it looks first
        self._read_last: tuple[_Segment | None, int] = (None, 0)
        self._unshadowed: set[int] = set()  # see _unshadowed_segments
        self._highest_id = 0  # no segment holds a higher id: a new publish's is not stored
        self._compaction: _Compaction | None = None
        self._dirty = False  # written since the last sync or hand-over
        self._handed = False  # handed to a background sync (dup_unsynced) that may still run
        # a removal that waits for the journal to sync past the releases that allow it:
        # (the journal's write sequence number when it was decided, the removal)
        self._removal: tuple[int, typing.Callable[[], None]] | None = None
        # a body died since compaction last found nothing to do, or a segment waits to be quiet
        self.reclaimable = False
        # what a crash left of a compaction or an index file being written
        for pattern in (f"*{_TEMPORARY_SUFFIX}", f"*{_SUFFIX}{_INDEX_SUFFIX}"):
            for leftover in directory.glob(pattern):
                leftover.unlink()
        for path in sorted(directory.glob(f"*{_SUFFIX}")):
            segment = _Segment(path, int(path.stem))
            segment.load()
            if not segment.ids:
                segment.remove()
                continue
            if not segment.sealed:
                segment.seal()  # the segment that was active when the node stopped
            self._segments.append(segment)
        self._active = self._new_segment()
        self._segments_changed()

    # --- what the state machine calls -------------------------------------------------

    def keep(self, body: Body) -> None:
        """Store a body a queue keeps (the bytes leave memory), unless it is here already."""
        if not body.in_memory:
            return
        found = self._find(body.id)
        if found is None:
            self._write(body.id, body.read())
        elif found[0].live[found[1]]:
            # another Body holds this id already; two that release it could free it early
            log.error("body %d is kept twice: the second copy stays in memory", body.id)
            return
        elif self._compaction is not None and found[0] is self._compaction.source:
            self._write(body.id, body.read())  # compaction may have passed it by already
        else:
            found[0].set_live(found[1], True)  # a replayed publish finds its body again
        body.attach(self._holder)

    def read(self, body_id: int) -> bytes:
        # A drain reads bodies in the order they were written (the search took a third of the
        # reading): the record after the one read last first
        found = self._find_near(self._read_last, body_id, (1,))
        if found is None:
            raise LookupError(f"body {body_id} is not in the store")
        segment, position = found
        self._read_last = self._place(segment, position)
        return segment.read(position)

    def release(self, body_id: int) -> None:
        # A drain lets go of bodies in the order they were written, or in reverse within a
        # batch (a list of settled deliveries dies from its end): the records either side of
        # the one released last first (a third of a drained message's apply went on `_find`
        # and `set_live` here)
        found = self._find_near(self._released, body_id, (-1, 1))
        if found is None:
            return
        segment, position = found
        self._released = self._place(segment, position)
        segment.set_live(position, False)
        segment.last_death_s = self._clock()
        self.reclaimable = True
        compaction = self._compaction
        if compaction is not None and segment is compaction.source:
            copied = compaction.target.position(body_id)
            if copied is not None:
                compaction.target.set_live(copied, False)

    # --- what the node calls ----------------------------------------------------------

    def adopt(self, runs: Iterable[Iterable[Body]]) -> None:
        """A new state was installed: the bodies of these runs are its (one may be in several
        runs, or twice in one), every other one is garbage."""
        self._holder.live = False
        self._holder = Holder(self)
        for segment in self._segments:
            segment.live = bytearray(len(segment.ids))
            segment.live_count = segment.live_bytes = 0
        self._abandon_compaction()
        self.reclaimable = True
        missing = 0
        for run in runs:
            ids, holding = attach_stored(run, self._holder)
            missing += self._mark_live(ids)
            for body in holding:
                self.keep(body)
        # the segments count what is live once every flag is set: no method call or sum per
        # body (with runs marked a body at a time, a method call and two sums per body took a
        # 1M-message install to 1.24-1.62 s)
        for segment in self._segments:
            segment.count_live()
        if missing:
            # a snapshot from before they were settled: the journal's entries after it, which
            # this node applies next, let go of them again (see "Crash safety" above)
            log.info(
                "%d bodies of the installed state were reclaimed since it was written", missing
            )

    def _mark_live(self, ids: array[int]) -> int:
        """Set the live flag of each body's newest copy; how many are in no segment.

        A queue holds its bodies in id order, mostly, as they were written: where a stretch of
        `ids` is a stretch of a segment no newer one overlaps (`_find` takes a body's newest
        copy), it is compared and marked whole. Otherwise the record after the last one found
        is tried before searching (1M bodies: 3.4 s of a restart went on searching). Once a
        compared stretch differs, the rest of `ids` goes one by one, so no stretch is compared
        twice: a restart with a million queued bodies marks them in a few slices.
        """
        missing = 0
        unshadowed = self._unshadowed
        in_order = True  # no compared stretch differed yet
        segment_ids: array[int] = array("q")  # the current segment's, if it has no newer copies
        live = bytearray()
        position = -1
        at, count = 0, len(ids)
        while at < count:
            body_id = ids[at]
            position += 1
            if position >= len(segment_ids) or segment_ids[position] != body_id:
                found = self._find(body_id)
                if found is None:
                    missing += 1
                    at += 1
                    continue
                segment, position = found
                segment_ids = segment.ids if segment.number in unshadowed else array("q")
                live = segment.live
            span = min(count - at, len(segment_ids) - position)
            if in_order and span > 1 and segment_ids[position + span - 1] == ids[at + span - 1]:
                if segment_ids[position : position + span] == ids[at : at + span]:
                    live[position : position + span] = b"\x01" * span
                    position += span - 1
                    at += span
                    continue
                in_order = False
            live[position] = 1
            at += 1
        return missing

    def receive(self, body_id: int, data: bytes) -> None:
        """A body from the leader's snapshot transfer, for the state about to be installed."""
        found = self._find(body_id)
        if found is None:
            self._write(body_id, data)

    def sync(self) -> None:
        """Make every body kept so far durable, now."""
        if self._dirty or self._handed:
            self._active.flush()
            os.fdatasync(self._active.descriptor)
            self._dirty = self._handed = False

    def dup_unsynced(self) -> int | None:
        """For the journal's background sync: the active segment's writes, handed over."""
        if not self._dirty:
            return None
        self._active.flush()
        self._dirty = False
        self._handed = True
        return os.dup(self._active.descriptor)

    def compact_step(
        self, budget_bytes: int = COMPACT_STEP_BYTES, *, written: int = 0, durable: int = 0
    ) -> bool:
        """One bounded step of reclaiming dead bodies; False when there is nothing to do now.

        A body dies when an applied entry lets go of it, and a crash replays only the entries
        the journal has synced. So a step that deletes dead bodies from the disk waits until
        the journal has synced past what was written when it was decided: `written` is the
        journal's write sequence number now, `durable` the one it has synced up to.
        """
        if self._removal is not None:
            decided_at, removal = self._removal
            if durable >= decided_at:
                self._removal = None
                removal()
            return True
        if self._compaction is None:
            return self._start_compaction(written)
        compaction = self._compaction
        source, target = compaction.source, compaction.target
        copied = 0
        while compaction.cursor < len(source.ids) and copied < budget_bytes:
            position = compaction.cursor
            compaction.cursor += 1
            if source.live[position]:
                target.append(source.ids[position], source.read(position))
                copied += source.sizes[position]
        if compaction.cursor == len(source.ids):
            self._removal = (written, functools.partial(self._finish_compaction, compaction))
        return True

    def live_ids(self) -> array[int]:
        """The ids of the live bodies, now (a snapshot transfer sends them one by one)."""
        ids = array("q")
        for segment in self._segments:
            ids.extend(
                body_id for body_id, live in zip(segment.ids, segment.live, strict=True) if live
            )
        return ids

    def records(self, ids: Iterable[int]) -> Iterator[tuple[int, bytes]]:
        """The bodies of `ids` that are still live, read as they are asked for."""
        for body_id in ids:
            found = self._find(body_id)
            if found is not None and found[0].live[found[1]]:
                yield body_id, found[0].read(found[1])

    @property
    def live_bytes(self) -> int:
        return sum(segment.live_bytes for segment in self._segments)

    @property
    def live_count(self) -> int:
        return sum(segment.live_count for segment in self._segments)

    @property
    def disk_bytes(self) -> int:
        total = sum(segment.file_bytes for segment in self._segments)
        if self._compaction is not None:
            total += self._compaction.target.file_bytes
        return total

    def close(self) -> None:
        self._holder.live = False
        self._abandon_compaction()
        for segment in self._segments:
            segment.close()

    # --- inside ---------------------------------------------------------------------------

    def _find_near(
        self, place: tuple[_Segment | None, int], body_id: int, offsets: tuple[int, ...]
    ) -> tuple[_Segment, int] | None:
        """`_find`, trying first the records at `offsets` from a remembered place: one in a
        segment no newer one overlaps (`_place`) holds the newest copy of its id."""
        segment, last = place
        if segment is not None:
            ids = segment.ids
            for offset in offsets:
                position = last + offset
                if 0 <= position < len(ids) and ids[position] == body_id:
                    return segment, position
        return self._find(body_id)

    def _place(self, segment: _Segment, position: int) -> tuple[_Segment | None, int]:
        """A record to remember for `_find_near`: none in a segment a newer one overlaps."""
        return (segment if segment.number in self._unshadowed else None, position)

    def _find(self, body_id: int) -> tuple[_Segment, int] | None:
        """Where the newest copy of a body is. Copies of one id in two segments come from
        replayed publishes; a segment whose range no newer one overlaps holds the only copy."""
        if body_id > self._highest_id:
            return None
        hint = self._hint
        if hint is not None and hint.number in self._unshadowed:
            position = hint.position(body_id)
            if position is not None:
                return hint, position
        for segment in reversed(self._segments):
            position = segment.position(body_id)
            if position is not None:
                self._hint = segment
                return segment, position
        return None

    def _write(self, body_id: int, data: bytes) -> None:
        active = self._active
        out_of_order = bool(active.ids) and body_id <= active.ids[-1]
        if out_of_order or active.file_bytes >= self.segment_bytes:
            if active.ids:
                active.seal()
                # its dead bodies became reclaimable now: compaction leaves the active alone
                self.reclaimable |= active.live_count < len(active.ids)
            else:
                self._segments.remove(active)
                active.remove()
            active = self._active = self._new_segment()
        active.append(body_id, data)
        self._dirty = True
        self._highest_id = max(self._highest_id, body_id)
        if len(active.ids) == 1:  # where its ids begin is known now
            self._segments_changed()

    def _new_segment(self) -> _Segment:
        number = self._segments[-1].number + 1 if self._segments else 1
        segment = _Segment(self.directory / f"{number:08d}{_SUFFIX}", number)
        self._segments.append(segment)
        return segment

    def _start_compaction(self, written: int) -> bool:
        """Start deleting or rewriting a segment; False if none is due. One that is not quiet
        yet keeps the store reclaimable, so a later step looks again."""
        waiting = False
        for segment in list(self._segments):
            if not segment.sealed:
                continue
            if segment.live_count == 0:
                self._removal = (written, functools.partial(self._remove_if_dead, segment))
                break
            if segment.live_share < COMPACT_LIVE_RATIO:
                if self._clock() - segment.last_death_s < self.quiet_s:
                    waiting = True
                    continue
                path = segment.path.with_name(segment.path.name + _TEMPORARY_SUFFIX)
                self._compaction = _Compaction(segment, _Segment(path, segment.number))
                break
        else:
            self.reclaimable = waiting
            return False
        self.reclaimable = True
        return True

    def _unshadowed_segments(self) -> set[int]:
        """The numbers of the segments whose id range no newer segment's overlaps (the active
        segment's range taken as open-ended: it grows)."""
        segments = self._segments
        return {
            segment.number
            for at, segment in enumerate(segments)
            if segment.ids
            and not any(
                newer.ids
                and newer.ids[0] <= segment.ids[-1]
                and (newer is self._active or segment.ids[0] <= newer.ids[-1])
                for newer in segments[at + 1 :]
            )
        }

    def _segments_changed(self) -> None:
        self._unshadowed = self._unshadowed_segments()
        self._hint = None
        self._released = self._read_last = (None, 0)
        self._highest_id = max(
            (segment.ids[-1] for segment in self._segments if segment.ids), default=0
        )

    def _abandon_compaction(self) -> None:
        """Drop a compaction under way, and a removal still waiting for the journal (it was
        decided on liveness that no longer holds)."""
        self._removal = None
        if self._compaction is not None:
            self._compaction.target.remove()
            self._compaction = None

    def _remove_if_dead(self, segment: _Segment) -> None:
        if segment.live_count == 0:  # a replayed publish may have kept a body again
            self._segments.remove(segment)
            segment.remove()
            self._segments_changed()

    def _finish_compaction(self, compaction: _Compaction) -> None:
        source, target = compaction.source, compaction.target
        target.seal()  # synced, with an index under the target's temporary name
        os.replace(target.path.with_suffix(_INDEX_SUFFIX), source.path.with_suffix(_INDEX_SUFFIX))
        os.replace(target.path, source.path)
        fsync_path(self.directory)
        target.path = source.path
        os.close(source.descriptor)
        source.descriptor = -1
        self._segments[self._segments.index(source)] = target
        self._compaction = None
        self._segments_changed()
        log.info(
            "body segment %d compacted: %d live bodies, %d bytes",
            target.number,
            target.live_count,
            target.file_bytes,
        )
