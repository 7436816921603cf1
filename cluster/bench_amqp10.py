"""`warren bench --protocol amqp1.0`: the producer and consumer processes over AMQP 1.0, with
qpid-proton's event-driven client (one container a process), for bench.py to run and report.

A producer keeps up to `--confirm` transfers unsettled (a sliding window, as PerfTest's
confirm window: a settlement frees one place at once, nothing waits for a whole batch; 0
sends pre-settled). Consumers grant `--qos` link credit, topped up as messages arrive,
and accept each message. Bodies carry the same id and send time as the 0-9-1 runs.
"""

from __future__ import annotations

import time
import typing

from proton import Event, Message
from proton.handlers import MessagingHandler
from proton.reactor import Container

from warrenmq.cluster.bench import _add, _ConsumerResult, _Counters, _ProducerResult
from warrenmq.cluster.lean import MIN_SIZE_BYTES, STAMP

__all__ = ["consume", "produce"]

TICK_S = 0.1


def _address(queue: str) -> str:
    return "/queues/" + queue


def _tag(event: Event) -> str:
    delivery = event.delivery
    return delivery.tag if delivery is not None else ""


class _Producer(MessagingHandler):
    def __init__(
        self,
        index: int,
        options: dict[str, typing.Any],
        counters: _Counters,
        result: _ProducerResult,
    ) -> None:
        super().__init__(auto_settle=True)
        self.index, self.options, self.counters, self.result = index, options, counters, result
        self.padding = bytes(options["size"] - MIN_SIZE_BYTES)
        self.shown = (0, 0)  # published and confirmed, as last added to the counters
        self.window = options["confirm"]
        self.deadline_s = options["deadline_s"]  # monotonic, the same for every process
        self.started_s = time.monotonic()
        self.sent_at: dict[str, tuple[int, float]] = {}  # delivery tag -> (message id, time)
        self.next_seq = 0
        self.sender: typing.Any = None
        self.done = False

    def on_start(self, event: Event) -> None:
        url = self.options["publish_urls"][self.index % len(self.options["publish_urls"])]
        connection = event.container.connect(url)
        self.sender = event.container.create_sender(connection, _address(self.result.queues[0]))
        event.container.schedule(TICK_S, self)

    def on_sendable(self, event: Event) -> None:
        self._send()

    def _send(self) -> None:
        sender = self.sender
        rate = self.options["rate"]
        while sender.credit > 0 and time.monotonic() < self.deadline_s:
            if self.window and len(self.sent_at) >= self.window:
                return
            if rate and self.next_seq > rate * (time.monotonic() - self.started_s):
                return  # ahead of the rate: the timer resumes
            message_id = (self.index << 40) | self.next_seq
            self.next_seq += 1
            body = STAMP.pack(message_id, time.time_ns()) + self.padding
            message = Message(body=body, inferred=True)
            message.durable = self.options["persistent"]
            delivery = sender.send(message)
            self.result.published += 1
            if self.window:
                self.sent_at[delivery.tag] = (message_id, time.perf_counter())
            else:
                delivery.settle()

    def on_accepted(self, event: Event) -> None:
        message_id, sent = self.sent_at.pop(_tag(event), (None, 0.0))
        if message_id is not None:
            self.result.confirms.ids.append(message_id)
            self.result.confirms.latencies_ms.append((time.perf_counter() - sent) * 1000)
        self._send()

    def on_rejected(self, event: Event) -> None:
        self._unconfirmed(event)

    def on_released(self, event: Event) -> None:
        self._unconfirmed(event)

    def _unconfirmed(self, event: Event) -> None:
        self.sent_at.pop(_tag(event), None)
        self.result.errors += 1
        self._send()

    def on_timer_task(self, event: Event) -> None:
        published, confirmed = self.result.published, len(self.result.confirms.ids)
        if time.monotonic() < self.deadline_s:
            self.result.confirmed_at_deadline = confirmed
        _add(self.counters.published, published - self.shown[0])
        _add(self.counters.confirmed, confirmed - self.shown[1])
        self.shown = (published, confirmed)
        if time.monotonic() >= self.deadline_s and (not self.sent_at or self.done):
            self.sender.connection.close()
            return
        if time.monotonic() >= self.deadline_s + 30.0:
            self.done = True  # settlements that never came: give up on them
        self._send()
        event.container.schedule(TICK_S, self)

    def on_transport_error(self, event: Event) -> None:
        self.result.errors += 1


class _Consumer(MessagingHandler):
    def __init__(
        self,
        index: int,
        options: dict[str, typing.Any],
        counters: _Counters,
        result: _ConsumerResult,
    ) -> None:
        super().__init__(prefetch=options["qos"], auto_accept=True)
        self.index, self.options, self.counters, self.result = index, options, counters, result
        self.deadline_s = options["deadline_s"]
        self.hard_deadline_s = self.deadline_s + 120.0
        self.last_message_s = time.monotonic()
        self.shown = 0
        self.receiver: typing.Any = None

    def on_start(self, event: Event) -> None:
        urls = self.options["consume_urls"]
        connection = event.container.connect(urls[self.index % len(urls)])
        self.receiver = event.container.create_receiver(connection, _address(self.result.queue))
        event.container.schedule(TICK_S, self)

    def on_message(self, event: Event) -> None:
        self.result.arrivals.record(bytes(event.message.body))
        self.last_message_s = time.monotonic()

    def on_timer_task(self, event: Event) -> None:
        received = len(self.result.arrivals.ids)
        if time.monotonic() < self.deadline_s:
            self.result.received_at_deadline = received
        _add(self.counters.consumed, received - self.shown)
        self.shown = received
        idle_s = time.monotonic() - self.last_message_s
        drained = self.counters.producers_done.value and idle_s > self.options["drain_idle_s"]
        if drained or time.monotonic() > self.hard_deadline_s:
            self.receiver.connection.close()
            return
        event.container.schedule(TICK_S, self)

    def on_transport_error(self, event: Event) -> None:
        self.result.errors += 1


def produce(
    index: int, options: dict[str, typing.Any], counters: _Counters, result: _ProducerResult
) -> None:
    Container(_Producer(index, options, counters, result)).run()


def consume(
    index: int, options: dict[str, typing.Any], counters: _Counters, result: _ConsumerResult
) -> None:
    Container(_Consumer(index, options, counters, result)).run()
