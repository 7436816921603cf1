"""A confirmed publish load and consumers that ride out node loss, for tests and benchmarks.

Every message carries a unique id. The publisher counts an id as confirmed only once its
basic.ack arrived; consumers count every delivery of every id. After the run, `lost` is the set of
confirmed ids never delivered — it must be empty — and `duplicates` counts extra deliveries, which
at-least-once delivery allows (a publish retried after a broken connection, a redelivery after a
consumer's node died). Each publish also names its connection (the message id is `id.attempt`):
the broker may hand out one published message twice only as a redelivery, so a second delivery
of the same `id.attempt` without the redelivered flag counts in `unmarked_redeliveries`.

Publishers and consumers reconnect, rotating through the nodes' URLs, whenever a connection
breaks. Everything is bounded: `message_count` messages, and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import typing
from dataclasses import dataclass, field

import aio_pika

__all__ = ["Load", "LoadStats", "wait_until"]

CONNECT_TIMEOUT_S = 3.0
PUBLISH_TIMEOUT_S = 5.0
RECONNECT_PAUSE_S = 0.2
FAULT_GRACE_S = 0.5  # events in flight at a fault arrive within this after it
DRAIN_S = 30.0  # after publishing ends, how long consumers may take to receive the rest


async def wait_until(condition: typing.Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll `condition` on the loop until it holds; TimeoutError naming `what` if it never does."""
    deadline_s = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline_s:
            raise TimeoutError(f"{what} did not happen within {timeout_s} s")
        await asyncio.sleep(0.05)


def _pauses(times_s: list[float], after_s: float, begun_by_s: float) -> list[tuple[float, float]]:
    """The silences between consecutive events that end after `after_s` and begin by
    `begun_by_s`."""
    times_s = sorted(times_s)
    return [
        (before, after)
        for before, after in zip(times_s, times_s[1:], strict=False)
        if after > after_s and before <= begun_by_s
    ]


@dataclass
class LoadStats:
    confirmed: set[int] = field(default_factory=set)  # ids whose basic.ack arrived
    delivered: collections.Counter[int] = field(default_factory=collections.Counter)
    confirm_times_s: list[float] = field(default_factory=list)  # monotonic, one per confirm
    delivery_times_s: list[float] = field(default_factory=list)  # monotonic, one per delivery
    unmarked_redeliveries: int = 0  # one published message delivered again, not redelivered
    publisher_reconnects: int = 0
    consumer_reconnects: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def lost(self) -> set[int]:
        return self.confirmed - set(self.delivered)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.delivered.values() if count > 1)

    @staticmethod
    def resumed_after(times_s: list[float], moment_s: float) -> float | None:
        """How long after `moment_s` (a fault) a stream resumed: the end of the outage.

        Events already in flight at the fault still arrive just after it, so the outage is the
        longest silence that ends after the fault and begins before FAULT_GRACE_S has passed.
        A pause that begins later is another matter (see `longest_pause`); counting it here
        made a later, longer pause look like the outage's end.
        """
        pauses = _pauses(times_s, moment_s, moment_s + FAULT_GRACE_S)
        return None if not pauses else max(pauses, key=lambda p: p[1] - p[0])[1] - moment_s

    @staticmethod
    def longest_pause(times_s: list[float], moment_s: float, window_s: float) -> float | None:
        """The longest silence of a stream from `moment_s` to `window_s` after it, whatever
        caused it (the outage, or what the cluster did later, such as declaring a node lost)."""
        pauses = _pauses(times_s, moment_s, moment_s + window_s)
        return None if not pauses else max(after - before for before, after in pauses)

    def summary(self) -> str:
        return (
            f"confirmed {len(self.confirmed)}, delivered {len(self.delivered)} ids, "
            f"lost {len(self.lost)}, duplicates {self.duplicates} "
            f"({self.unmarked_redeliveries} not marked redelivered), reconnects "
            f"publisher {self.publisher_reconnects} consumer {self.consumer_reconnects}, "
            f"errors {dict(self.errors)}"
        )


class Load:
    def __init__(
        self,
        publish_urls: list[str],
        consume_urls: list[str],
        queue: str,
        message_count: int,
        window: int = 20,
        rate_per_s: float | None = None,
        prefetch: int = 100,
        manual_ack: bool = True,
    ) -> None:
        self.publish_urls = publish_urls
        self.consume_urls = consume_urls
        self.queue = queue
        self.message_count = message_count
        self.window = window
        self.rate_per_s = rate_per_s
        self.prefetch = prefetch
        self.manual_ack = manual_ack
        self.stats = LoadStats()
        self._next_id = 0  # the first id of the first window not yet wholly confirmed
        self._attempt = 0  # publisher connections so far: each publish names its own
        self._seen: set[str] = set()  # message ids (id.attempt) delivered so far
        self.publishing_done = asyncio.Event()

    async def declare(self, url: str, timeout_s: float = 60.0) -> None:
        """Declare the quorum queue, retrying while the node is still starting to serve."""
        deadline_s = time.monotonic() + timeout_s
        while True:
            try:
                connection = await aio_pika.connect(url, timeout=CONNECT_TIMEOUT_S)
                async with connection:
                    channel = await connection.channel()
                    await channel.declare_queue(
                        self.queue, durable=True, arguments={"x-queue-type": "quorum"}
                    )
                return
            except Exception:  # not serving yet (a proxy may accept and drop): try again
                if time.monotonic() > deadline_s:
                    raise
                await asyncio.sleep(RECONNECT_PAUSE_S)

    # --- publishing --------------------------------------------------------------------

    async def publish(self, deadline_s: float) -> None:
        """Publish ids 0 … message_count-1, each until confirmed or the deadline passes."""
        attempt = 0
        try:
            while self._next_id < self.message_count and time.monotonic() < deadline_s:
                url = self.publish_urls[attempt % len(self.publish_urls)]
                attempt += 1
                try:
                    await self._publish_over(url, deadline_s)
                except Exception as error:  # any broken connection: count it, go elsewhere
                    self.stats.errors[type(error).__name__] += 1
                    self.stats.publisher_reconnects += 1
                    await asyncio.sleep(RECONNECT_PAUSE_S)
        finally:
            self.publishing_done.set()

    async def _publish_over(self, url: str, deadline_s: float) -> None:
        """Publish window after window on one connection, from the first unconfirmed window."""
        connection = await aio_pika.connect(url, timeout=CONNECT_TIMEOUT_S)
        self._attempt += 1
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            started_s = time.monotonic()
            sent = 0
            while self._next_id < self.message_count and time.monotonic() < deadline_s:
                ids = range(self._next_id, min(self._next_id + self.window, self.message_count))
                results = await asyncio.gather(
                    *(self._publish_one(channel, message_id) for message_id in ids),
                    return_exceptions=True,
                )
                failures = [result for result in results if isinstance(result, BaseException)]
                if failures:
                    raise failures[0]  # unconfirmed ids of this window are published again
                self._next_id = ids[-1] + 1
                sent += len(ids)
                if self.rate_per_s:  # pace what this connection sent, nothing else
                    ahead_s = sent / self.rate_per_s - (time.monotonic() - started_s)
                    if ahead_s > 0:
                        await asyncio.sleep(ahead_s)

    async def _publish_one(self, channel: aio_pika.abc.AbstractChannel, message_id: int) -> None:
        if message_id in self.stats.confirmed:
            return
        message = aio_pika.Message(
            str(message_id).encode(),
            message_id=f"{message_id}.{self._attempt}",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await channel.default_exchange.publish(
            message, routing_key=self.queue, timeout=PUBLISH_TIMEOUT_S
        )
        self.stats.confirmed.add(message_id)
        self.stats.confirm_times_s.append(time.monotonic())

    def finish_publishing(self) -> None:
        """Publish nothing past the window in flight: the load ends once it is confirmed."""
        self.message_count = min(self.message_count, self._next_id + self.window)

    # --- consuming ---------------------------------------------------------------------

    async def consume(self, first_url: int, deadline_s: float) -> None:
        """Consume until every confirmed id arrived after publishing ended, or a deadline."""
        attempt = first_url
        while not self._drained() and time.monotonic() < deadline_s:
            url = self.consume_urls[attempt % len(self.consume_urls)]
            attempt += 1
            try:
                await self._consume_over(url, deadline_s)
            except Exception as error:  # any broken connection: count it, go elsewhere
                self.stats.errors[type(error).__name__] += 1
                self.stats.consumer_reconnects += 1
                await asyncio.sleep(RECONNECT_PAUSE_S)

    def _drained(self) -> bool:
        return self.publishing_done.is_set() and not self.stats.lost

    async def _consume_over(self, url: str, deadline_s: float) -> None:
        connection = await aio_pika.connect(url, timeout=CONNECT_TIMEOUT_S)
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = await channel.get_queue(self.queue)

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                self.stats.delivered[int(message.body)] += 1
                if message.message_id in self._seen and not message.redelivered:
                    self.stats.unmarked_redeliveries += 1
                self._seen.add(str(message.message_id))
                self.stats.delivery_times_s.append(time.monotonic())
                if self.manual_ack:
                    await message.ack()

            await queue.consume(on_message, no_ack=not self.manual_ack)
            while not self._drained() and time.monotonic() < deadline_s:
                if not connection.connected.is_set():  # the broker closed it
                    raise ConnectionError("consumer connection closed")
                await asyncio.sleep(0.05)

    # --- one run ----------------------------------------------------------------------

    async def run(
        self,
        timeout_s: float,
        consumers: int = 1,
        during: typing.Callable[[], typing.Coroutine[typing.Any, typing.Any, None]] | None = None,
    ) -> LoadStats:
        """Publish and consume together; `during` (a fault, say) runs alongside."""
        deadline_s = time.monotonic() + timeout_s
        # Consumers get DRAIN_S more, so every id confirmed by the deadline can still arrive.
        tasks = [asyncio.create_task(self.publish(deadline_s))]
        tasks += [
            asyncio.create_task(self.consume(index, deadline_s + DRAIN_S))
            for index in range(consumers)
        ]
        if during is not None:
            tasks.append(asyncio.create_task(during()))
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), timeout_s + DRAIN_S + 10)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        return self.stats
