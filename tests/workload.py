"""A known set of good and bad telemetry messages, and the checks that none was lost.

A ``Workload`` belongs to one robot id. Good message ``i`` carries point time
``base_ns + i ms + i ns``, battery percentage ``i`` and pose x ``i + 0.5``, so
every stored point shows which message it came from and whether its time is
exact. Bad messages sit at chosen positions, each with the dead-letter reason
that the ingester must give it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass

from services import Broker, InfluxDB1, VictoriaMetrics

MS = 1_000_000
"""Nanoseconds per millisecond."""

# One hour ago, on a whole second, so that every point lies in the past.
BASE_NS = (time.time_ns() // 10**9 - 3600) * 10**9

REASON_HEADER = "x-ingester-reason"
DETAIL_HEADER = "x-ingester-detail"
QUEUE_HEADER = "x-ingester-queue"


def telemetry(
    bot: str, ts: int, percentage: float = 80.0, x: float = 1.5, voltage: float = 12.6
) -> dict:
    """Return a message in the README's shape."""
    return {
        "type": "telemetry",
        "ts": ts,
        "bot": bot,
        "battery": {"percentage": percentage, "voltage": voltage, "wh": 50.0},
        "pose": {"x": x, "y": 2.3},
    }


def encode(document: object) -> bytes:
    return json.dumps(document).encode("utf-8")


def ingester_env(queue: str, store_url: str, **extra: str) -> dict[str, str]:
    """Return the ingester's environment for ``queue`` and a store at ``store_url``."""
    env = {
        "RABBITMQ_HOST": "127.0.0.1",
        "RABBITMQ_QUEUE": queue,
        "INFLUX_URL": store_url,
        "INFLUX_TOKEN": "test-token",
        "INFLUX_ORG": "keti",
        "INFLUX_BUCKET": "turtlebot",
        "HTTP_PORT": "0",
        "LOG_LEVEL": "DEBUG",
    }
    env.update(extra)
    return env


def bad_body(reason: str, bot: str, position: int) -> bytes:
    """Return a message body that the ingester must dead-letter with ``reason``.

    ``position`` goes into the body, so that every bad message is unique.
    """
    if reason == "not_json":
        return f'{{"type": "telemetry", "bot": "{bot}", "seq": {position}, broken'.encode()
    if reason == "unknown_type":
        return encode({"type": "status", "bot": bot, "seq": position, "pose": {"x": 1.0}})
    if reason == "invalid_ts":
        return encode(
            {"type": "telemetry", "bot": bot, "seq": position, "ts": "yesterday",
             "pose": {"x": 1.0}}
        )
    if reason == "rejected_by_store":
        # A string in status.mode, which InfluxDB rejects as a type conflict
        # only after the test has written a float there.
        return encode(
            {"type": "telemetry", "bot": bot, "ts": BASE_NS - 10**9 + position,
             "status": {"mode": "auto"}}
        )
    raise ValueError(f"no bad message for reason {reason!r}")


@dataclass(frozen=True)
class Message:
    body: bytes
    # The good message's number, or None for a bad message.
    number: int | None
    # The dead-letter reason that a bad message must get.
    reason: str | None


class Workload:
    """``good`` good messages for ``bot``, with bad ones inserted at ``bad_at``.

    ``bad_at`` maps a publish position to a reason such as ``"not_json"``.
    ``messages`` lists every message in publish order.
    """

    def __init__(
        self, bot: str, good: int, bad_at: dict[int, str] | None = None, base_ns: int = BASE_NS
    ) -> None:
        self.bot = bot
        self.base_ns = base_ns
        self.good_count = good
        bad_at = dict(bad_at or {})
        self.messages: list[Message] = []
        number = 0
        while number < good or bad_at:
            position = len(self.messages)
            if position in bad_at:
                reason = bad_at.pop(position)
                self.messages.append(Message(bad_body(reason, bot, position), None, reason))
                continue
            if number >= good:
                raise ValueError(f"bad_at position {min(bad_at)} lies after the last message")
            document = telemetry(bot, self.ts(number), float(number), number + 0.5)
            self.messages.append(Message(encode(document), number, None))
            number += 1

    @property
    def published(self) -> int:
        return len(self.messages)

    @property
    def bad(self) -> list[Message]:
        return [message for message in self.messages if message.reason is not None]

    def ts(self, number: int) -> int:
        """Point time in nanoseconds of good message ``number``."""
        return self.base_ns + number * MS + number

    def publish(
        self, broker: Broker, queue: str, start: int = 0, stop: int | None = None,
        pause: float = 0.0,
    ) -> None:
        """Publish ``messages[start:stop]``, sleeping ``pause`` seconds after each."""
        for message in self.messages[start:stop]:
            broker.publish(queue, message.body)
            if pause:
                time.sleep(pause)

    # -- points in the store ----------------------------------------------

    def expected_points(self, unit_ns: int = 1) -> dict[str, list[tuple[int, float]]]:
        """Return the (time, value) pairs every good message must leave, per field.

        Times are in units of ``unit_ns`` nanoseconds, rounded down: 1 for
        InfluxDB, ``MS`` for VictoriaMetrics, which keeps milliseconds.
        """
        numbers = range(self.good_count)
        return {
            "percentage": [(self.ts(n) // unit_ns, float(n)) for n in numbers],
            "x": [(self.ts(n) // unit_ns, n + 0.5) for n in numbers],
        }

    def victoria_points(self, store: VictoriaMetrics) -> dict[str, list[tuple[int, float]]]:
        """Read this robot's points from VictoriaMetrics, each distinct pair once.

        VictoriaMetrics keeps every copy of a sample that is written twice,
        where InfluxDB keeps one point per series and time. So a message
        written again after a redelivery is counted once here, and the
        module function ``duplicates`` counts the extra copies.
        """
        found = {}
        for field, metric in (("percentage", "battery_percentage"), ("x", "pose_x")):
            found[field] = store.points(metric, bot=self.bot)
        return _distinct(found)

    def influx_points(self, store: InfluxDB1, database: str) -> dict[str, list[tuple[int, float]]]:
        """Read this robot's points from InfluxDB 1.x with nanosecond times."""
        found = {}
        for field, measurement in (("percentage", "battery"), ("x", "pose")):
            result = store.query(
                database,
                f"SELECT \"{field}\" FROM \"{measurement}\" WHERE \"bot\" = '{self.bot}'",
            )
            series = result["results"][0].get("series", [])
            found[field] = [(row[0], row[1]) for one in series for row in one["values"]]
        return _distinct(found)

    def stored_count(self, points: dict[str, list[tuple[int, float]]], unit_ns: int = 1) -> int:
        """Count the good messages whose every point is stored with the right time and value."""
        expected = self.expected_points(unit_ns)
        present = {field: set(pairs) for field, pairs in points.items()}
        return sum(
            all(expected[field][n] in present[field] for field in expected)
            for n in range(self.good_count)
        )

    # -- messages in the dead-letter queue --------------------------------

    def dead_count(self, letters: list[tuple[object, bytes]]) -> int:
        """Count the bad messages found in ``letters`` with their expected reason."""
        found = letters_counter(letters)
        return sum(1 for message in self.bad if found[(message.body, message.reason)] > 0)

    def expected_letters(self) -> Counter:
        return Counter((message.body, message.reason) for message in self.bad)


def _distinct(found: dict[str, list[tuple[int, float]]]) -> dict[str, list[tuple[int, float]]]:
    return {field: sorted(set(pairs)) for field, pairs in found.items()}


def duplicates(store: VictoriaMetrics, bot: str) -> int:
    """Count battery_percentage samples of ``bot`` stored more than once."""
    samples = store.points("battery_percentage", bot=bot)
    return len(samples) - len(set(samples))


def letters_counter(letters: list[tuple[object, bytes]]) -> Counter:
    """Return (body, reason) pairs of dead letters, counted."""
    return Counter((body, properties.headers.get(REASON_HEADER)) for properties, body in letters)


def summary(scenario: str, workload: Workload, stored: int, dead: int, **extra: object) -> str:
    """Print and return one ``FAULT-SUMMARY`` line, for a table built from ``pytest -s``.

    ``lost`` counts published messages that are neither stored nor dead-lettered.
    """
    lost = workload.published - stored - dead
    parts = [
        f"scenario={scenario}",
        f"published={workload.published}",
        f"stored={stored}",
        f"dead={dead}",
        f"lost={lost}",
    ]
    parts += [f"{name}={value}" for name, value in extra.items()]
    line = "FAULT-SUMMARY " + " ".join(parts)
    print(line)
    return line


def assert_nothing_lost(
    scenario: str,
    workload: Workload,
    points: dict[str, list[tuple[int, float]]],
    letters: list[tuple[object, bytes]],
    queue: str,
    unit_ns: int = 1,
    **extra: object,
) -> None:
    """Print the summary line, then check that the store and the dead letters match exactly.

    ``points`` comes from ``victoria_points`` or ``influx_points`` and
    ``letters`` from draining the dead-letter queue.

    NOTE: a dead letter that the broker confirmed just before the ingester
    lost its connection is redelivered and dead-lettered a second time, which
    fails the exact check. Tests publish bad messages away from the fault.
    """
    stored = workload.stored_count(points, unit_ns)
    dead = workload.dead_count(letters)
    summary(scenario, workload, stored, dead, **extra)

    expected = workload.expected_points(unit_ns)
    assert points["percentage"] == expected["percentage"]
    assert points["x"] == expected["x"]
    assert letters_counter(letters) == workload.expected_letters()
    for properties, body in letters:
        assert properties.headers[DETAIL_HEADER], body
        assert properties.headers[QUEUE_HEADER] == queue
    assert stored + dead == workload.published
