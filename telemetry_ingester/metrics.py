"""Prometheus metrics and the health state behind ``/healthz`` and ``/readyz``.

Each ``Metrics`` owns its registry, so every test gets fresh counters. Labels
have few values: a reason code, a failure class or a time unit. Robot ids
appear only in ``ingester_robot_last_seen_timestamp_seconds``, which tracks at
most ``MAX_TRACKED_ROBOTS`` robots.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# How many robots get their own last-seen series. When more robots report,
# the one seen longest ago loses its series, so the number of series stays
# bounded whatever the fleet size.
MAX_TRACKED_ROBOTS = 500

# The consume loop counts as alive when it made progress this recently. While
# the RabbitMQ channel is open it wakes at least every few hundred
# milliseconds, InfluxDB outages included.
LIVENESS_WINDOW_SECONDS = 60.0

WRITE_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Every counter, gauge and histogram the ingester exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages_received = Counter(
            "ingester_messages_received", "Messages delivered by RabbitMQ.", registry=r
        )
        self.messages_written = Counter(
            "ingester_messages_written", "Messages whose points InfluxDB stored.", registry=r
        )
        self.points_written = Counter(
            "ingester_points_written", "Points InfluxDB stored.", registry=r
        )

        # Writes to InfluxDB.
        self.batches = Counter(
            "ingester_batches", "Batches written, by outcome.", ["outcome"], registry=r
        )
        self.write_duration = Histogram(
            "ingester_write_duration_seconds",
            "Duration of one write request to InfluxDB.",
            buckets=WRITE_DURATION_BUCKETS,
            registry=r,
        )
        self.write_failures = Counter(
            "ingester_write_failures",
            "Failed write requests, by class (retry, config, bad_data, too_large).",
            ["class"],
            registry=r,
        )
        self.write_retries = Counter(
            "ingester_write_retries", "Write requests sent again after a failure.", registry=r
        )

        # Messages that were not simply written.
        self.dead_letters = Counter(
            "ingester_dead_letters",
            "Messages moved to the dead-letter queue, by reason.",
            ["reason"],
            registry=r,
        )
        self.redeliveries = Counter(
            "ingester_redeliveries", "Messages RabbitMQ delivered again.", registry=r
        )
        self.given_back = Counter(
            "ingester_messages_given_back",
            "Unacked messages returned to the queue with a requeue.",
            registry=r,
        )
        self.fields_skipped = Counter(
            "ingester_fields_skipped",
            "Fields skipped as absent readings (null, NaN, infinite) or unstorable.",
            registry=r,
        )
        self.timestamps_converted = Counter(
            "ingester_timestamps_converted",
            "Message timestamps converted to nanoseconds, by source unit.",
            ["unit"],
            registry=r,
        )

        # Freshness of the data and of each robot.
        self.last_write_success = Gauge(
            "ingester_last_write_success_timestamp_seconds",
            "Unix time of the last successful write.",
            registry=r,
        )
        self.robot_last_seen = Gauge(
            "ingester_robot_last_seen_timestamp_seconds",
            f"Unix time each robot last sent telemetry (at most {MAX_TRACKED_ROBOTS} robots).",
            ["bot"],
            registry=r,
        )
        self.robots_tracked = Gauge(
            "ingester_robots_tracked", "Robots with a last-seen series.", registry=r
        )
        self._robots: OrderedDict[str, None] = OrderedDict()
        # A retired map thread and its replacement may both record robots.
        self._robots_lock = threading.Lock()

    def robot_seen(self, bot: str, when: float) -> None:
        """Record that ``bot`` sent telemetry at Unix time ``when``."""
        with self._robots_lock:
            if bot in self._robots:
                self._robots.move_to_end(bot)
            else:
                self._robots[bot] = None
                if len(self._robots) > MAX_TRACKED_ROBOTS:
                    oldest, _ = self._robots.popitem(last=False)
                    self.robot_last_seen.remove(oldest)
                self.robots_tracked.set(len(self._robots))
            self.robot_last_seen.labels(bot).set(when)


class HealthState:
    """The state behind ``/healthz`` and ``/readyz``, updated by the consumer."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last_progress = clock()
        self._channel_open = False
        self._write_failing: str | None = None

    def progress(self) -> None:
        """Record that the consume loop went round once."""
        self._last_progress = self._clock()

    def channel_opened(self) -> None:
        with self._lock:
            self._channel_open = True
        # The last progress may date from before a long reconnect.
        self.progress()

    def channel_closed(self) -> None:
        with self._lock:
            self._channel_open = False

    def write_failed(self, reason: str) -> None:
        with self._lock:
            self._write_failing = reason

    def write_succeeded(self) -> None:
        with self._lock:
            self._write_failing = None

    def alive(self) -> tuple[bool, str]:
        """Return whether the consume loop is alive, and the reason when it is not.

        While the channel is closed the consumer is reconnecting, and its waits
        are bounded by the backoff cap and pika's connection timeouts. A
        RabbitMQ outage is no reason to restart the ingester, so it counts as alive.
        """
        with self._lock:
            if not self._channel_open:
                return True, "ok"
        idle = self._clock() - self._last_progress
        if idle > LIVENESS_WINDOW_SECONDS:
            return False, f"consume loop made no progress for {idle:.0f} s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        with self._lock:
            if not self._channel_open:
                return False, "RabbitMQ channel is not open"
            if self._write_failing:
                return False, f"last write to InfluxDB failed: {self._write_failing}"
        return True, "ok"
