"""Batches of deliveries and the retry and split logic that writes them.

``BatchWriter.write`` runs on the write thread. It retries failures that are
not the data's fault until the batch is stored or the caller abandons it, and
it splits a batch that InfluxDB rejects (400, 422, 413) until it has found the
messages at fault. It never acks: it reports what happened and the consumer
thread settles the deliveries.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field

from . import writer as outcomes
from .backoff import backoff_delay
from .metrics import HealthState, Metrics
from .writer import InfluxWriter, WriteOutcome

log = logging.getLogger(__name__)

# A configuration error (wrong token, missing bucket) is logged at most this
# often while it lasts.
CONFIG_ERROR_LOG_INTERVAL_SECONDS = 60.0


@dataclass(slots=True)
class Delivery:
    """One message from RabbitMQ, with what the consumer needs to settle it."""

    tag: int
    body: bytes
    # pika.BasicProperties, kept as they came for dead-lettering.
    properties: object
    redelivered: bool
    # Unix nanoseconds when the consumer received it: the point time when
    # the message has neither ``ts`` nor an AMQP timestamp.
    received_ns: int


@dataclass
class Batch:
    """Valid deliveries with their line protocol, ready to write.

    The lists run in parallel: ``chunks[i]`` is the line protocol of
    ``deliveries[i]`` (its lines joined by newlines, UTF-8), ``bots[i]`` its
    bot and ``points[i]`` its number of lines.
    """

    deliveries: list[Delivery]
    chunks: list[bytes]
    bots: list[str]
    points: list[int]

    def body(self) -> bytes:
        """Return the request body: every chunk, one line protocol line after another."""
        return b"\n".join(self.chunks)

    def halves(self) -> tuple["Batch", "Batch"]:
        middle = len(self.deliveries) // 2
        return (
            Batch(
                self.deliveries[:middle], self.chunks[:middle], self.bots[:middle],
                self.points[:middle],
            ),
            Batch(
                self.deliveries[middle:], self.chunks[middle:], self.bots[middle:],
                self.points[middle:],
            ),
        )


@dataclass
class Rejection:
    delivery: Delivery
    bot: str
    outcome: WriteOutcome


@dataclass
class BatchResult:
    messages_written: int = 0
    points_written: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    abandoned: bool = False


class BatchWriter:
    """Writes a batch with retries, backoff and splitting; shared by one write thread."""

    def __init__(
        self,
        writer: InfluxWriter,
        metrics: Metrics,
        health: HealthState,
        rng: random.Random | None = None,
    ) -> None:
        self._writer = writer
        self._metrics = metrics
        self._health = health
        self._rng = rng or random.Random()
        # Failures in a row across batches, so a long outage keeps its long
        # backoff when a new batch starts.
        self._failures = 0
        self._last_config_log = float("-inf")

    def write(self, batch: Batch, abort: threading.Event) -> BatchResult:
        """Write ``batch`` until stored, rejected or ``abort`` is set."""
        result = BatchResult()
        self._write_group(batch, abort, result)
        return result

    def _write_group(self, group: Batch, abort: threading.Event, result: BatchResult) -> None:
        body = group.body()
        while not abort.is_set():
            started = time.perf_counter()
            outcome = self._writer.write(body)
            self._metrics.write_duration.observe(time.perf_counter() - started)

            if outcome.kind == outcomes.OK:
                self._stored(group, result)
                return
            self._metrics.write_failures.labels(outcome.kind).inc()

            if outcome.kind in (outcomes.BAD_DATA, outcomes.TOO_LARGE):
                self._split(group, outcome, abort, result)
                return

            self._failures += 1
            self._health.write_failed(outcome.detail[:200])
            delay = backoff_delay(self._failures, self._rng, retry_after=outcome.retry_after)
            self._log_failure(group, outcome, delay)
            if abort.wait(delay):
                break
            self._metrics.write_retries.inc()
        result.abandoned = True

    def _stored(self, group: Batch, result: BatchResult) -> None:
        if self._failures:
            log.info(
                "ingest resumed: InfluxDB at %s accepted a write after %d failed attempts",
                self._writer.target,
                self._failures,
            )
        self._failures = 0
        self._health.write_succeeded()
        self._metrics.last_write_success.set(time.time())
        result.messages_written += len(group.deliveries)
        result.points_written += sum(group.points)

    def _split(
        self,
        group: Batch,
        outcome: WriteOutcome,
        abort: threading.Event,
        result: BatchResult,
    ) -> None:
        if len(group.deliveries) == 1:
            result.rejected.append(Rejection(group.deliveries[0], group.bots[0], outcome))
            return
        log.info(
            "ingest: InfluxDB rejected a batch of %d messages (HTTP %s: %s); "
            "splitting it to find the messages at fault",
            len(group.deliveries),
            outcome.status,
            outcome.detail[:200],
        )
        for half in group.halves():
            self._write_group(half, abort, result)
            if result.abandoned:
                return

    def _log_failure(self, group: Batch, outcome: WriteOutcome, delay: float) -> None:
        tags = f"{group.deliveries[0].tag}-{group.deliveries[-1].tag}"
        if outcome.kind == outcomes.CONFIG:
            now = time.monotonic()
            if now - self._last_config_log < CONFIG_ERROR_LOG_INTERVAL_SECONDS:
                return
            self._last_config_log = now
            log.error(
                "ingest error: InfluxDB at %s rejected the write (HTTP %s, %s); the data is "
                "fine, check %s. %d messages (delivery tags %s) stay unacked; "
                "nothing is dead-lettered; next retry in %.1f s",
                self._writer.target,
                outcome.status,
                outcome.detail,
                outcome.variable,
                len(group.deliveries),
                tags,
                delay,
            )
            return
        log.warning(
            "ingest error: write to %s failed (%s%s); %d messages (delivery tags %s) "
            "stay unacked; retry %d in %.1f s",
            self._writer.target,
            f"HTTP {outcome.status}: " if outcome.status else "",
            outcome.detail,
            len(group.deliveries),
            tags,
            self._failures,
            delay,
        )
