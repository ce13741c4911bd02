"""Telemetry for the benchmark: message bodies, a confirmed bulk fill and a paced publisher.

Bodies come from the simulator's robot model, so each one has the size and
shape of real fleet telemetry. Every ``ts`` is distinct per robot at
millisecond precision, because the store keeps milliseconds and two samples
of one series at the same millisecond would make a count ambiguous.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pika
import pika.exceptions
from pika.adapters.select_connection import SelectConnection

from telemetry_ingester.simulator import Robot, encode, fleet

NANOSECONDS_PER_MILLISECOND = 1_000_000
NANOSECONDS_PER_SECOND = 1_000_000_000

# Unconfirmed messages the bulk fill keeps in flight. The broker confirms
# persistent messages in groups after writing them, so a deep window keeps
# it busy without an unbounded client buffer.
FILL_WINDOW_MESSAGES = 5_000

# The paced publisher sleeps at most this long between checks of its schedule.
PACING_SLEEP_SECONDS = 0.001

PERSISTENT = pika.BasicProperties(
    content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent
)


def bench_fleet(bots: int, prefix: str, seed: int = 7) -> list[Robot]:
    """Return ``bots`` simulated robots named ``{prefix}-tb3-001``, ``{prefix}-tb3-002``, ..."""
    robots = fleet(bots, seed)
    return [dataclasses.replace(robot, name=f"{prefix}-{robot.name}") for robot in robots]


def backlog_bodies(robots: list[Robot], count: int, first_ts_ns: int) -> Iterator[bytes]:
    """Yield ``count`` bodies round-robin over ``robots``, message k stamped ``first_ts_ns + k`` ms."""
    for number in range(count):
        robot = robots[number % len(robots)]
        yield encode(robot.step(first_ts_ns + number * NANOSECONDS_PER_MILLISECOND))


def backlog_start_ns(count: int) -> int:
    """Return a first ``ts`` that puts a backlog of ``count`` messages one hour or more in the past.

    Past times keep every point inside the store's query window at once,
    without waiting for its latency offset.
    """
    span_ns = count * NANOSECONDS_PER_MILLISECOND
    return time.time_ns() - 3600 * NANOSECONDS_PER_SECOND - span_ns


class ConfirmedFill:
    """Publish bodies to a queue with publisher confirms, many messages in flight at once.

    pika's BlockingConnection waits for each confirm in turn, so this uses a
    SelectConnection and keeps up to ``window`` messages unconfirmed. A nack
    or an unroutable return raises RuntimeError from ``run``.
    """

    def __init__(
        self,
        parameters: pika.ConnectionParameters,
        queue: str,
        bodies: Iterator[bytes],
        count: int,
        window: int = FILL_WINDOW_MESSAGES,
    ) -> None:
        self._parameters = parameters
        self._queue = queue
        self._bodies = bodies
        self._count = count
        self._window = window
        self._published = 0
        # Delivery tags 1.._confirmed_up_to are confirmed, and so are those
        # in _confirmed_above, which the broker confirmed one by one.
        self._confirmed_up_to = 0
        self._confirmed_above: set[int] = set()
        self._error: str | None = None
        self._connection: SelectConnection | None = None
        self._channel = None

    def run(self) -> int:
        """Publish every body and return the number the broker confirmed."""
        self._connection = SelectConnection(
            self._parameters,
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_connection_closed,
        )
        self._connection.ioloop.start()
        if self._error is not None:
            raise RuntimeError(f"Filling queue {self._queue} failed: {self._error}")
        return self._confirmed

    def _on_connection_open(self, connection: SelectConnection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_open_error(self, connection: SelectConnection, error: BaseException) -> None:
        self._error = f"cannot connect to RabbitMQ: {error!r}"
        connection.ioloop.stop()

    def _on_connection_closed(self, connection: SelectConnection, reason: BaseException) -> None:
        if self._confirmed < self._count and self._error is None:
            self._error = f"the connection closed after {self._confirmed} confirms: {reason!r}"
        connection.ioloop.stop()

    def _on_channel_open(self, channel) -> None:
        self._channel = channel
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._publish_more())

    def _on_return(self, channel, method, properties, body) -> None:
        self._fail(f"the broker returned a message as unroutable ({method.reply_text})")

    def _on_confirm(self, frame) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            self._fail(f"the broker nacked delivery tag {method.delivery_tag}")
            return
        if method.multiple:
            self._confirmed_up_to = max(self._confirmed_up_to, method.delivery_tag)
            self._confirmed_above = {
                tag for tag in self._confirmed_above if tag > self._confirmed_up_to
            }
        else:
            self._confirmed_above.add(method.delivery_tag)
        while self._confirmed_up_to + 1 in self._confirmed_above:
            self._confirmed_up_to += 1
            self._confirmed_above.remove(self._confirmed_up_to)
        self._publish_more()

    @property
    def _confirmed(self) -> int:
        return self._confirmed_up_to + len(self._confirmed_above)

    def _publish_more(self) -> None:
        if self._error is not None:
            return
        while self._published < self._count and self._published - self._confirmed < self._window:
            self._channel.basic_publish(
                exchange="",
                routing_key=self._queue,
                body=next(self._bodies),
                properties=PERSISTENT,
                mandatory=True,
            )
            self._published += 1
        if self._confirmed >= self._count and self._connection.is_open:
            self._connection.close()

    def _fail(self, error: str) -> None:
        if self._error is None:
            self._error = error
        if self._connection.is_open:
            self._connection.close()


@dataclasses.dataclass
class PacedRun:
    """Count and timing of one paced publishing run."""

    published: int
    seconds: float
    # Largest delay of a publish behind its scheduled time.
    max_lag_seconds: float


def publish_paced(
    channel,
    connection: pika.BlockingConnection,
    queue: str,
    robots: list[Robot],
    rate: float,
    seconds: float,
) -> PacedRun:
    """Publish at ``rate`` messages per second for ``seconds``, each with its publish time as ``ts``.

    ``ts`` is ``time.time_ns()`` taken as the body is built, a few
    microseconds before ``basic_publish``, so a later clock reading minus
    ``ts`` is the time since publish. The
    channel is not in confirm mode: a confirm per message would cap the rate
    below the target, and the store count at the end checks delivery.
    """
    interval = 1.0 / rate
    total = int(rate * seconds)
    started = time.monotonic()
    max_lag = 0.0
    for number in range(total):
        due = started + number * interval
        while True:
            now = time.monotonic()
            if now >= due:
                break
            connection.sleep(min(due - now, PACING_SLEEP_SECONDS))
        max_lag = max(max_lag, now - due)
        robot = robots[number % len(robots)]
        body = encode(robot.step(time.time_ns()))
        channel.basic_publish(exchange="", routing_key=queue, body=body, properties=PERSISTENT)
    return PacedRun(total, time.monotonic() - started, max_lag)
