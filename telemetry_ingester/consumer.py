"""The RabbitMQ side: the only module that imports pika.

One ``BlockingConnection`` with two channels: one consumes the telemetry
queue, the other publishes dead letters with publisher confirms. Only the
thread that runs ``Consumer.run`` touches them. A batch is mapped to line
protocol on the map thread (which waits for the mapping process of
mapper.py), or on the consume thread with a small prefetch window, and then
written to InfluxDB on the write thread. So heartbeats and deliveries keep
flowing while a write is slow or retrying, and the next batch is mapped
while the current one is written.

Settling rules:

- A message that can never be written is published to the dead-letter queue,
  confirmed by the broker, and then acked on its own, as soon as its batch
  is mapped.
- A batch is acked with ``multiple=True`` up to its highest delivery tag
  that is still unacked, after InfluxDB stored its valid messages. Every
  lower tag is by then settled, because batches are acked in order and
  invalid messages are settled before the batch that contains them.
- Nothing is ever acked on a channel other than the one that delivered it.
"""

from __future__ import annotations

import copy
import datetime
import logging
import queue
import random
import ssl
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import pika
import pika.exceptions

from .backoff import backoff_delay
from .batch import Batch, BatchResult, BatchWriter, Delivery
from .mapper import InProcessMapper, MappedBatch, ProcessMapper
from .mapping import InvalidMessage
from .metrics import HealthState, Metrics
from .settings import Settings

log = logging.getLogger(__name__)

# Maximum wait inside pika's event loop before the loop checks for a stop
# request, a finished write or a due flush.
POLL_INTERVAL_SECONDS = 0.2
# Batches handed on at once: one can be written while the next is mapped.
# The prefetch window has room for two full batches (see Consumer._flush_size).
MAX_BATCHES_IN_FLIGHT = 2
# How often an "ingest stats" summary line is logged at INFO.
STATS_INTERVAL_SECONDS = 60.0
# Maximum length of the body prefix shown in a log line.
BODY_PREVIEW_BYTES = 64
# Dead-letter headers longer than this are cut.
MAX_HEADER_TEXT = 500
# A connection that lasted this long resets the reconnect backoff.
STABLE_CONNECTION_SECONDS = 30.0
# How long a broker may block our publishes (memory or disk alarm) before
# pika gives up on the connection and we reconnect.
BLOCKED_CONNECTION_TIMEOUT_SECONDS = 300

REASON_HEADER = "x-ingester-reason"
DETAIL_HEADER = "x-ingester-detail"
QUEUE_HEADER = "x-ingester-queue"
TIME_HEADER = "x-ingester-dead-lettered-at"

# Dead-letter reasons for messages that InfluxDB itself rejected.
REASON_REJECTED = "rejected_by_store"
REASON_TOO_LARGE = "too_large"

# pika failures after which the connection is opened anew.
BROKER_ERRORS = (pika.exceptions.AMQPError, OSError)


@dataclass
class PendingBatch:
    """Deliveries waiting for the next write, oldest first."""

    deliveries: list[Delivery] = field(default_factory=list)
    started: float = 0.0

    def add(self, delivery: Delivery) -> None:
        if not self.deliveries:
            self.started = time.monotonic()
        self.deliveries.append(delivery)

    def split(self, size: int) -> "PendingBatch":
        """Remove the first ``size`` deliveries and return them as a batch of their own."""
        head = PendingBatch(self.deliveries[:size], self.started)
        del self.deliveries[:size]
        if self.deliveries:
            # The monotonic arrival time of the new oldest delivery, derived
            # from its Unix receipt time.
            age_ns = time.time_ns() - self.deliveries[0].received_ns
            self.started = time.monotonic() - max(0, age_ns) / 1e9
        return head


@dataclass
class InflightBatch:
    """A batch handed to the map thread, which hands it on to the write thread."""

    session: "Session"
    deliveries: list[Delivery]
    future: Future
    abort: threading.Event
    started: float
    # When the oldest delivery of the batch arrived, for MAX_HOLD_SECONDS.
    oldest: float

    @property
    def max_tag(self) -> int:
        return self.deliveries[-1].tag


class Worker:
    """One daemon thread that runs jobs in order.

    A daemon thread, so a write stuck in its HTTP timeout cannot hold the
    process past the shutdown bound. One long-lived thread costs less than a
    thread per batch: about 0.9 CPU seconds less per 100,000 messages at
    PREFETCH_COUNT 20 (bench/run.py, docs/benchmarks.md).
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, function, *args) -> None:
        self._jobs.put((function, args))

    def retire(self) -> None:
        """Let the thread exit once the job it runs, if any, is done."""
        self._jobs.put(None)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            function, args = job
            function(*args)


class Session:
    """One connection to RabbitMQ and its two channels."""

    def __init__(self, connection: pika.BlockingConnection) -> None:
        self.connection = connection
        self.channel = connection.channel()
        self.publish_channel = connection.channel()
        self.publish_channel.confirm_delivery()
        self.consumer_tag: str | None = None
        self.batches_acked = 0
        self.cancelled_by_broker = False

    def on_cancelled_by_broker(self, method_frame) -> None:
        """Note that the broker cancelled our consumer, as it does when the queue is deleted."""
        self.cancelled_by_broker = True

    def raise_if_channel_closed(self) -> None:
        """Raise when the broker closed a channel or cancelled the consumer.

        The broker closes a channel when RabbitMQ's consumer_timeout expires,
        and cancels the consumer when the queue is deleted. pika raises only
        at the next call on that channel, which during an InfluxDB outage
        could be many minutes away, and a cancelled consumer would sit idle.
        Raising here makes the consume loop reconnect, declare the queue again
        and consume anew.
        """
        if self.cancelled_by_broker:
            raise pika.exceptions.ConsumerCancelled(
                "the broker cancelled the consumer, for example because the queue was deleted"
            )
        for channel in (self.channel, self.publish_channel):
            if channel.is_closed:
                raise pika.exceptions.ChannelClosed(
                    0,
                    f"the broker closed channel {channel.channel_number}; "
                    "its reason is in the pika warning before this line",
                )

    def close(self) -> None:
        try:
            if self.connection.is_open:
                self.connection.close()
        except BROKER_ERRORS as error:
            log.debug("Closing the RabbitMQ connection failed: %s", error)


class Consumer:
    """Consumes the telemetry queue until asked to stop; reconnects on broker failures."""

    def __init__(
        self,
        settings: Settings,
        batch_writer: BatchWriter,
        mapper: InProcessMapper | ProcessMapper,
        metrics: Metrics,
        health: HealthState,
        stop: threading.Event,
    ) -> None:
        self._settings = settings
        self._batch_writer = batch_writer
        self._mapper = mapper
        self._metrics = metrics
        self._health = health
        self._stop = stop
        self._rng = random.Random()
        self._session: Session | None = None
        self._map_worker, self._write_worker = new_workers()
        self._pending = PendingBatch()
        # Batches handed on and not yet settled, oldest first.
        self._inflight: deque[InflightBatch] = deque()
        # Invalid messages of mapped batches, queued by the thread that maps.
        self._invalid: queue.SimpleQueue = queue.SimpleQueue()
        # Tags of inflight batches that were dead-lettered and acked on their own.
        self._settled_tags: set[int] = set()
        # Used only by the thread that maps.
        self._converted_bots: set[str] = set()
        self._stats = {"received": 0, "written": 0, "points": 0, "dead": 0}
        # Counted per delivery and added to the Prometheus counters once per
        # loop, which costs less than a counter update per delivery.
        self._received = 0
        self._redelivered = 0
        self._last_stats = time.monotonic()
        # A batch flushes without waiting for the interval once it fills half
        # the prefetch window, so the other half can arrive during its write.
        self._flush_size = max(1, settings.prefetch_count // 2)
        # With a small window a batch takes every message in hand instead
        # (see LARGE_WINDOW_PREFETCH in settings.py).
        self._batch_size = self._flush_size if settings.large_window else settings.prefetch_count

    # -- life cycle -------------------------------------------------------

    def run(self) -> None:
        """Consume until the stop event is set, then drain and close."""
        attempt = 0
        while not self._stop.is_set():
            try:
                self._session = self._open_session()
            except BROKER_ERRORS as error:
                attempt += 1
                self._wait_before_reconnect(attempt, error)
                continue

            connected_at = time.monotonic()
            try:
                self._consume(self._session)
            except BROKER_ERRORS as error:
                # The backoff starts over only after a connection that lasted;
                # one that fails at once, again and again, backs off further.
                if time.monotonic() - connected_at > STABLE_CONNECTION_SECONDS:
                    attempt = 0
                attempt += 1
                log.warning(
                    "Lost the RabbitMQ connection or channel to %s: %s; %d unacked messages "
                    "will be redelivered by the broker; reconnecting",
                    self._broker_address(),
                    describe_error(error),
                    self._held_count(),
                )
                self._forget_deliveries()
                self._wait_before_reconnect(attempt, None)
            finally:
                self._health.channel_closed()
                self._session.close()
                self._session = None

        self._map_worker.retire()
        self._write_worker.retire()
        self._log_stats(final=True)

    def _open_session(self) -> Session:
        settings = self._settings
        parameters = connection_parameters(settings, "metrics-ingester")
        session = Session(pika.BlockingConnection(parameters))
        try:
            self._declare(session, settings.rabbitmq_queue, None)
            self._declare(
                session,
                settings.dead_letter_queue,
                {"x-max-length": settings.dead_letter_max_length, "x-overflow": "drop-head"},
            )
            session.channel.basic_qos(prefetch_count=settings.prefetch_count)
            session.channel.add_on_cancel_callback(session.on_cancelled_by_broker)
            session.consumer_tag = session.channel.basic_consume(
                settings.rabbitmq_queue, self._on_message
            )
        except BaseException:
            session.close()
            raise
        self._health.channel_opened()
        log.info(
            "Connected to RabbitMQ at %s, consuming queue %s (prefetch %d), "
            "dead letters to %s",
            self._broker_address(),
            settings.rabbitmq_queue,
            settings.prefetch_count,
            settings.dead_letter_queue,
        )
        return session

    def _declare(self, session: Session, queue: str, arguments: dict | None) -> None:
        """Declare ``queue`` durable, or use it as it is if it exists with other arguments.

        RabbitMQ replies PRECONDITION_FAILED (406) when the queue exists with
        other arguments, such as a quorum queue, a dead-letter exchange or a
        length limit. Such a queue is used as it is instead of failing.
        """
        try:
            session.channel.queue_declare(queue, durable=True, arguments=arguments)
            return
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code != 406:
                raise
            # The failed declare closed the channel.
            session.channel = session.connection.channel()
        session.channel.queue_declare(queue, passive=True)
        log.info(
            "Queue %s exists with other arguments than %s; using it as it is",
            queue,
            arguments or {},
        )

    def _wait_before_reconnect(self, attempt: int, error: BaseException | None) -> None:
        delay = backoff_delay(attempt, self._rng)
        if error is not None:
            log.error(
                "Cannot connect to RabbitMQ at %s as user %s: %s; %s. Retry %d in %.1f s",
                self._broker_address(),
                self._settings.rabbitmq_user,
                describe_error(error),
                broker_hint(error, self._settings.rabbitmq_tls),
                attempt,
                delay,
            )
        self._stop.wait(delay)

    # -- the consume loop -------------------------------------------------

    def _consume(self, session: Session) -> None:
        deadline = None
        while True:
            if deadline is None and self._stop.is_set():
                deadline = self._begin_drain(session)

            session.connection.process_data_events(time_limit=self._poll_time())
            self._health.progress()
            self._count_received()
            session.raise_if_channel_closed()
            # Dead-letter invalid messages without waiting for their batch's write.
            self._settle_invalid(session)
            self._finish_writes(session)
            self._start_batches(session, draining=deadline is not None)

            if deadline is not None:
                if self._held_count() == 0:
                    log.info("Drained: every message in hand is written and acked")
                    return
                if time.monotonic() >= deadline:
                    self._give_back(session, "the shutdown time limit was reached")
                    return
            else:
                self._give_back_if_held_too_long(session)
            self._log_stats()

    def _poll_time(self) -> float:
        # The map and write threads wake the loop when a batch is done.
        if self._pending.deliveries and len(self._inflight) < MAX_BATCHES_IN_FLIGHT:
            due = self._pending.started + self._settings.flush_interval_seconds
            return min(POLL_INTERVAL_SECONDS, max(0.0, due - time.monotonic()))
        return POLL_INTERVAL_SECONDS

    def _begin_drain(self, session: Session) -> float:
        log.info(
            "Stopping: no new deliveries; writing %d messages in hand (at most %.0f s)",
            self._held_count(),
            self._settings.shutdown_timeout_seconds,
        )
        if session.consumer_tag is not None:
            # pika requeues deliveries that arrived but were not yet dispatched.
            session.channel.basic_cancel(session.consumer_tag)
            session.consumer_tag = None
        # The bound counts from the stop request when the event records it,
        # so a signal that came while connecting does not extend it.
        requested_at = getattr(self._stop, "requested_at", None) or time.monotonic()
        return requested_at + self._settings.shutdown_timeout_seconds

    def _on_message(self, channel, method, properties, body: bytes) -> None:
        # Called for every delivery: it only keeps the delivery. Mapping
        # happens per batch (see _start_batches).
        self._received += 1
        if method.redelivered:
            self._redelivered += 1
        self._pending.add(
            Delivery(method.delivery_tag, body, properties, method.redelivered, time.time_ns())
        )

    def _count_received(self) -> None:
        if self._received:
            self._metrics.messages_received.inc(self._received)
            self._stats["received"] += self._received
            self._received = 0
        if self._redelivered:
            self._metrics.redeliveries.inc(self._redelivered)
            self._redelivered = 0

    def _note_conversion(self, bot: str, unit: str, tag: int) -> None:
        if bot in self._converted_bots or len(self._converted_bots) >= 10_000:
            return
        self._converted_bots.add(bot)
        log.warning(
            "ingest: bot %s sends ts in %s, not nanoseconds (delivery tag %d); converting "
            "it. Logged once per bot; ingester_timestamps_converted_total counts them all",
            bot,
            unit,
            tag,
        )

    # -- writing and settling ---------------------------------------------

    def _start_batches(self, session: Session, draining: bool) -> None:
        while self._pending.deliveries and len(self._inflight) < MAX_BATCHES_IN_FLIGHT:
            age = time.monotonic() - self._pending.started
            if not (
                draining
                or len(self._pending.deliveries) >= self._flush_size
                or age >= self._settings.flush_interval_seconds
            ):
                return

            # The rest stays pending and can fill while this batch is mapped
            # and written.
            pending = self._pending.split(self._batch_size)
            batch = InflightBatch(
                session, pending.deliveries, Future(), threading.Event(), time.monotonic(),
                pending.started,
            )
            self._inflight.append(batch)
            # The write worker is bound now: a batch of a retired pair of
            # workers must not reach their replacements.
            if isinstance(self._mapper, InProcessMapper):
                # Mapping here costs less than a hand-over to the map thread,
                # which would need the GIL anyway.
                self._map_and_hand_on(batch, self._write_worker)
            else:
                self._map_worker.submit(self._map_and_hand_on, batch, self._write_worker)

    def _map_and_hand_on(self, batch: InflightBatch, write_worker: Worker) -> None:
        """Map ``batch`` and queue its write; on the map thread or, in-process, the consume thread."""
        try:
            mapped = self._map_batch(batch.deliveries, batch.abort)
        except BaseException as error:  # handed to the consume loop, which logs it
            batch.future.set_exception(error)
            wake(batch.session)
            return
        if mapped is None:
            batch.future.set_result(BatchResult(abandoned=True))
            wake(batch.session)
            return
        valid, invalid = mapped
        if invalid:
            # Dead-lettered by the consume thread before this batch can be
            # acked, and without waiting for the write.
            self._invalid.put((batch, invalid))
            wake(batch.session)
        write_worker.submit(self._write_on_thread, batch, valid)

    def _write_on_thread(self, batch: InflightBatch, valid: Batch) -> None:
        try:
            result = (
                self._batch_writer.write(valid, batch.abort) if valid.deliveries else BatchResult()
            )
            batch.future.set_result(result)
        except BaseException as error:  # handed to the consume loop, which logs it
            batch.future.set_exception(error)
        wake(batch.session)

    def _map_batch(
        self, deliveries: list[Delivery], abort: threading.Event
    ) -> tuple[Batch, list[tuple[Delivery, InvalidMessage]]] | None:
        """Map ``deliveries`` and return the valid and the invalid ones, or None if abandoned."""
        requests = [
            (delivery.body, delivery.properties.timestamp, delivery.received_ns)
            for delivery in deliveries
        ]
        mapped = self._mapper.map(requests, abort)
        if mapped is None:
            return None

        valid = deliveries
        invalid = [
            (deliveries[index], InvalidMessage(reason, detail, bot))
            for index, reason, detail, bot in mapped.invalid
        ]
        if invalid:
            invalid_indexes = {index for index, *_ in mapped.invalid}
            valid = [d for index, d in enumerate(deliveries) if index not in invalid_indexes]
        self._count_mapped(mapped, deliveries)
        return Batch(valid, mapped.chunks, mapped.bots, mapped.points), invalid

    def _count_mapped(self, mapped: MappedBatch, deliveries: list[Delivery]) -> None:
        if mapped.skipped_fields:
            self._metrics.fields_skipped.inc(mapped.skipped_fields)
        for unit, count in mapped.converted.items():
            self._metrics.timestamps_converted.labels(unit).inc(count)
        for bot, (unit, index) in mapped.first_conversions.items():
            self._note_conversion(bot, unit, deliveries[index].tag)
        # One update per robot and batch, not per message.
        for bot, received_ns in mapped.last_seen.items():
            self._metrics.robot_seen(bot, received_ns / 1e9)

    def _finish_writes(self, session: Session) -> None:
        """Settle the finished batches at the head of the queue, in delivery order."""
        while self._inflight and self._inflight[0].future.done():
            # The map thread queued this batch's invalid messages before it
            # handed the batch on, so they are in the queue by now. Their
            # tags must be settled before the batch's multiple ack covers them.
            self._settle_invalid(session)
            self._finish_write(session, self._inflight.popleft())

    def _finish_write(self, session: Session, inflight: InflightBatch) -> None:
        try:
            result: BatchResult = inflight.future.result()
        except Exception:
            # A failure the writer did not classify is a bug, not a reason to
            # exit: the messages go back to the queue and the daemon goes on.
            log.exception(
                "ingest error: mapping or writing delivery tags %d-%d failed unexpectedly",
                inflight.deliveries[0].tag,
                inflight.max_tag,
            )
            if inflight.session is session:
                self._inflight.appendleft(inflight)
                self._give_back(session, "the write failed unexpectedly")
            return
        if result.abandoned or inflight.session is not session:
            return

        for rejection in result.rejected:
            outcome = rejection.outcome
            reason = REASON_TOO_LARGE if outcome.kind == "too_large" else REASON_REJECTED
            detail = f"InfluxDB answered HTTP {outcome.status}: {outcome.detail}"
            self._dead_letter(session, rejection.delivery, reason, detail, rejection.bot)
        # A multiple ack must name a tag that is still unacked, and the
        # batch's invalid messages were acked on their own.
        ack_tag = self._max_unsettled_tag(inflight.deliveries)
        if ack_tag is not None:
            session.channel.basic_ack(ack_tag, multiple=True)
        self._settled_tags = {tag for tag in self._settled_tags if tag > inflight.max_tag}

        outcome = "split" if result.rejected else "written"
        self._metrics.batches.labels(outcome).inc()
        self._metrics.messages_written.inc(result.messages_written)
        self._metrics.points_written.inc(result.points_written)
        self._stats["written"] += result.messages_written
        self._stats["points"] += result.points_written
        if not result.messages_written:
            return
        # The first batch of a connection is logged at INFO, so a start-up
        # shows that data flows; later batches only at DEBUG.
        level = logging.DEBUG if session.batches_acked else logging.INFO
        session.batches_acked += 1
        log.log(
            level,
            "ingest ok: %d messages, %d points, delivery tags %d-%d acked in %.3f s",
            result.messages_written,
            result.points_written,
            inflight.deliveries[0].tag,
            inflight.max_tag,
            time.monotonic() - inflight.started,
        )

    def _settle_invalid(self, session: Session) -> None:
        """Dead-letter and ack each invalid message that mapping found."""
        while True:
            try:
                batch, invalid = self._invalid.get_nowait()
            except queue.Empty:
                return
            if batch.session is not session or batch.abort.is_set():
                # Given back or from an old connection: the broker redelivers them.
                continue
            for delivery, error in invalid:
                self._dead_letter(session, delivery, error.reason, error.detail, error.bot)
                session.channel.basic_ack(delivery.tag)
                self._settled_tags.add(delivery.tag)

    def _max_unsettled_tag(self, deliveries: list[Delivery]) -> int | None:
        """Return the highest delivery tag in ``deliveries`` that is not yet acked, if any."""
        for delivery in reversed(deliveries):
            if delivery.tag not in self._settled_tags:
                return delivery.tag
        return None

    def _dead_letter(
        self,
        session: Session,
        delivery: Delivery,
        reason: str,
        detail: str,
        bot: str | None,
    ) -> None:
        """Publish ``delivery`` to the dead-letter queue and wait for the confirm.

        The caller acks it afterwards. A publish the broker does not confirm
        raises, and the message stays unacked, so the broker redelivers it
        after the reconnect.
        """
        properties = copy.copy(delivery.properties)
        headers = dict(properties.headers or {})
        headers[REASON_HEADER] = reason
        headers[DETAIL_HEADER] = detail[:MAX_HEADER_TEXT]
        headers[QUEUE_HEADER] = self._settings.rabbitmq_queue
        headers[TIME_HEADER] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        properties.headers = headers
        properties.delivery_mode = pika.DeliveryMode.Persistent.value
        # A per-message TTL would let the dead letter expire after its ack,
        # so it is dropped, as RabbitMQ's own dead-lettering does.
        properties.expiration = None

        session.publish_channel.basic_publish(
            exchange="",
            routing_key=self._settings.dead_letter_queue,
            body=delivery.body,
            properties=properties,
            mandatory=True,
        )

        self._metrics.dead_letters.labels(reason).inc()
        self._stats["dead"] += 1
        log.warning(
            "ingest error: delivery tag %d bot %s moved to %s, reason %s: %s; body %d bytes %s",
            delivery.tag,
            bot if bot is not None else "(unknown)",
            self._settings.dead_letter_queue,
            reason,
            detail,
            len(delivery.body),
            preview(delivery.body),
        )

    def _give_back_if_held_too_long(self, session: Session) -> None:
        # MAX_HOLD_SECONDS (15 minutes by default) must stay below RabbitMQ's
        # consumer_timeout (30 minutes by default): past it the broker closes
        # the channel, and giving the messages back first is the gentler way.
        hold = self._settings.max_hold_seconds
        if not self._inflight or time.monotonic() - self._inflight[0].oldest < hold:
            return
        self._give_back(session, f"InfluxDB has not accepted them for {hold:.0f} s")

    def _give_back(self, session: Session, reason: str) -> None:
        """Return every unacked message to the queue with one requeue."""
        count = self._held_count()
        for batch in self._inflight:
            batch.abort.set()
        if count:
            # multiple=True up to the highest tag in hand covers every delivery
            # we hold; tag 0 would also return deliveries pika has received
            # but not yet dispatched, whose later ack would be for an unknown tag.
            session.channel.basic_nack(
                delivery_tag=self._max_tag_in_hand(), multiple=True, requeue=True
            )
            self._metrics.given_back.inc(count)
            log.warning("ingest error: gave back %d unacked messages to the queue: %s", count, reason)
        self._forget_deliveries()

    def _forget_deliveries(self) -> None:
        busy = False
        for batch in self._inflight:
            batch.abort.set()
            busy = busy or not batch.future.done()
        if busy:
            # An abandoned write may sit in its HTTP timeout; the next batch
            # gets fresh threads instead of waiting behind it.
            self._map_worker.retire()
            self._write_worker.retire()
            self._map_worker, self._write_worker = new_workers()
        self._inflight.clear()
        self._pending = PendingBatch()
        self._settled_tags.clear()
        while not self._invalid.empty():
            self._invalid.get_nowait()

    def _max_tag_in_hand(self) -> int | None:
        """Return the highest unacked delivery tag in hand, or None when every one is acked."""
        if self._pending.deliveries:
            return self._pending.deliveries[-1].tag
        for batch in reversed(self._inflight):
            tag = self._max_unsettled_tag(batch.deliveries)
            if tag is not None:
                return tag
        return None

    def _held_count(self) -> int:
        inflight = sum(len(batch.deliveries) for batch in self._inflight)
        return inflight + len(self._pending.deliveries) - len(self._settled_tags)

    # -- logging ----------------------------------------------------------

    def _log_stats(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last_stats < STATS_INTERVAL_SECONDS:
            return
        stats = self._stats
        log.info(
            "ingest stats: %d messages received, %d written as %d points, "
            "%d dead-lettered in the last %.0f s",
            stats["received"],
            stats["written"],
            stats["points"],
            stats["dead"],
            now - self._last_stats,
        )
        self._stats = dict.fromkeys(stats, 0)
        self._last_stats = now

    def _broker_address(self) -> str:
        s = self._settings
        return f"{s.rabbitmq_host}:{s.rabbitmq_port} vhost {s.rabbitmq_vhost}"


def new_workers() -> tuple[Worker, Worker]:
    """Start the map thread and the write thread."""
    return Worker("ingester-map"), Worker("influx-write")


def wake(session: Session) -> None:
    """Wake the consume loop from another thread.

    add_callback_threadsafe is the one pika call allowed from another thread.
    """
    try:
        session.connection.add_callback_threadsafe(lambda: None)
    except BROKER_ERRORS:
        pass


def connection_parameters(settings: Settings, connection_name: str) -> pika.ConnectionParameters:
    """Build pika's connection parameters, with TLS when RABBITMQ_TLS is on."""
    ssl_options = None
    if settings.rabbitmq_tls:
        context = ssl.create_default_context(cafile=settings.rabbitmq_tls_ca_file)
        if settings.rabbitmq_tls_cert_file:
            context.load_cert_chain(
                settings.rabbitmq_tls_cert_file, settings.rabbitmq_tls_key_file
            )
        ssl_options = pika.SSLOptions(context, server_hostname=settings.rabbitmq_host)
    return pika.ConnectionParameters(
        host=settings.rabbitmq_host,
        port=settings.rabbitmq_port,
        virtual_host=settings.rabbitmq_vhost,
        credentials=pika.PlainCredentials(settings.rabbitmq_user, settings.rabbitmq_pass.reveal()),
        heartbeat=settings.rabbitmq_heartbeat_seconds,
        blocked_connection_timeout=BLOCKED_CONNECTION_TIMEOUT_SECONDS,
        connection_attempts=1,
        ssl_options=ssl_options,
        client_properties={"connection_name": connection_name},
    )


def preview(body: bytes) -> str:
    """Return a short, escaped prefix of a message body, safe for one log line."""
    head = body[:BODY_PREVIEW_BYTES]
    text = repr(head)[2:-1]
    return f"'{text}...'" if len(body) > BODY_PREVIEW_BYTES else f"'{text}'"


def describe_error(error: BaseException) -> str:
    """Return ``Type: message`` for a log line, unwrapping pika's nested connection errors."""
    while True:
        if len(error.args) == 1 and isinstance(error.args[0], BaseException):
            error = error.args[0]
        elif isinstance(getattr(error, "exception", None), BaseException):
            # pika's connection workflow keeps the socket or TLS error here.
            error = error.exception
        else:
            break
    text = str(error) or repr(error)
    return f"{type(error).__name__}: {text}"[:300]


def broker_hint(error: BaseException, tls: bool = False) -> str:
    if isinstance(error, pika.exceptions.ProbableAuthenticationError):
        return "check RABBITMQ_USER and RABBITMQ_PASS"
    if isinstance(error, pika.exceptions.ProbableAccessDeniedError):
        return "check RABBITMQ_VHOST and the user's permissions on it"
    if isinstance(error, ssl.SSLError):
        return "check RABBITMQ_TLS_CA_FILE and that RABBITMQ_HOST matches the broker's certificate"
    if tls and isinstance(error, pika.exceptions.IncompatibleProtocolError):
        # pika reports a TLS alert during the handshake, such as the broker's
        # certificate_required, as an incompatible protocol.
        return (
            "check RABBITMQ_TLS_CERT_FILE and RABBITMQ_TLS_KEY_FILE (the broker may "
            "require a client certificate) and that RABBITMQ_PORT is its TLS port"
        )
    return "check RABBITMQ_HOST and RABBITMQ_PORT and that the broker is running"
