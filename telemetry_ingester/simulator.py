"""Simulate a fleet of TurtleBot3 robots that publish telemetry to RabbitMQ.

Each robot drives a circle or a figure eight at a constant speed of at most
0.22 m/s, and its 3-cell LiPo battery drains while it drives. The model part
(``Robot``, ``fleet``, ``encode``, ``message_body``) does no I/O. ``run``
publishes the messages, and ``main`` is the ``ingester.py simulate`` command.

The speed limit and battery numbers come from the TurtleBot3 Burger hardware
specification in the ROBOTIS e-Manual: maximum translational velocity
0.22 m/s, battery "Lithium polymer 11.1V 1800mAh / 19.98Wh", expected
operating time 2 h 30 min.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from .signals import StopOnSignal

logger = logging.getLogger(__name__)

DEFAULT_QUEUE = "turtlebot.telemetry"
DEFAULT_BOTS = 10
DEFAULT_RATE = 1.0

MAX_SPEED_MPS = 0.22
BATTERY_CAPACITY_WH = 19.98

# Pack voltage under load (V) at each state of charge (%) for a 3-cell LiPo.
# The points are an estimate shaped like a typical LiPo discharge curve. The
# pack reads 12.6 V (4.2 V per cell) when full and stays near the 11.1 V
# nominal voltage in the middle. It drops steeply towards the 10.5 V cut-off
# (3.5 V per cell) when empty.
_VOLTAGE_CURVE_PERCENT = (0.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0)
_VOLTAGE_CURVE_VOLTS = (10.50, 10.80, 11.00, 11.15, 11.25, 11.35, 11.45, 11.55, 11.75, 11.95, 12.25, 12.60)

# Estimated electrical power of a driving robot: a fixed part for the
# computer, lidar and controller plus a part that grows with speed. At
# 0.22 m/s this is 8.2 W, which empties the 19.98 Wh battery in about
# 2 h 26 min, close to the 2 h 30 min operating time that ROBOTIS gives.
_IDLE_POWER_W = 6.0
_DRIVE_POWER_W_PER_MPS = 10.0

CIRCLE = "circle"
FIGURE_EIGHT = "figure-eight"
PATHS = (CIRCLE, FIGURE_EIGHT)

# Kinds of malformed message that --bad-every rotates through, in this order.
MALFORMED_KINDS = ("invalid-json", "wrong-type", "missing-bot")

# A broker that blocks publishers (for example on a memory alarm) makes
# basic_publish wait. After this many seconds pika raises
# ConnectionBlockedTimeout, so the simulator stops instead of hanging.
_BLOCKED_CONNECTION_TIMEOUT_S = 60.0

# The pacing loop sleeps at most this long at a time, so a stop request is
# noticed quickly even at low message rates.
_MAX_SLEEP_S = 0.25

# When publishing falls this far behind the schedule, the backlog is dropped
# instead of being sent in a burst.
_MAX_LAG_S = 1.0


def battery_voltage(percentage: float) -> float:
    """Return the pack voltage in volts for a state of charge in percent."""
    percentage = min(max(percentage, 0.0), 100.0)
    index = bisect.bisect_right(_VOLTAGE_CURVE_PERCENT, percentage)
    if index >= len(_VOLTAGE_CURVE_PERCENT):
        return _VOLTAGE_CURVE_VOLTS[-1]

    low_percent = _VOLTAGE_CURVE_PERCENT[index - 1]
    high_percent = _VOLTAGE_CURVE_PERCENT[index]
    low_volts = _VOLTAGE_CURVE_VOLTS[index - 1]
    high_volts = _VOLTAGE_CURVE_VOLTS[index]
    fraction = (percentage - low_percent) / (high_percent - low_percent)
    return low_volts + fraction * (high_volts - low_volts)


@dataclasses.dataclass
class Robot:
    """One simulated TurtleBot3 that drives a closed path at constant speed.

    The state at any instant is a function of the time since the first call
    to ``step`` (or ``started_ns``, if set), so steps may be sampled at any
    rate. When the battery reaches 0 % the robot stops where it is.
    """

    name: str
    center_x: float
    center_y: float
    radius_m: float
    speed_mps: float
    path: str = CIRCLE
    clockwise: bool = False
    # Fraction of the path length (0..1) already driven at the start.
    phase: float = 0.0
    initial_percentage: float = 100.0
    capacity_wh: float = BATTERY_CAPACITY_WH
    started_ns: int | None = None

    def __post_init__(self) -> None:
        if self.path not in PATHS:
            raise ValueError(f"invalid path {self.path!r} for robot {self.name}: expected one of {PATHS}")
        if not 0.0 <= self.speed_mps <= MAX_SPEED_MPS:
            raise ValueError(
                f"invalid speed {self.speed_mps} m/s for robot {self.name}: expected 0..{MAX_SPEED_MPS} m/s"
            )
        if self.radius_m <= 0.0:
            raise ValueError(f"invalid radius {self.radius_m} m for robot {self.name}: expected a positive value")
        if not 0.0 <= self.initial_percentage <= 100.0:
            raise ValueError(
                f"invalid initial battery percentage {self.initial_percentage} for robot {self.name}: "
                "expected 0..100"
            )
        if self.capacity_wh <= 0.0:
            raise ValueError(f"invalid battery capacity {self.capacity_wh} Wh for robot {self.name}")

    @property
    def power_w(self) -> float:
        """Electrical power in watts that the robot draws while driving."""
        return _IDLE_POWER_W + _DRIVE_POWER_W_PER_MPS * self.speed_mps

    @property
    def path_length_m(self) -> float:
        """Length in metres of one lap of the path."""
        lap = 2.0 * math.pi * self.radius_m
        return 2.0 * lap if self.path == FIGURE_EIGHT else lap

    @property
    def runtime_s(self) -> float:
        """Seconds from the start until the battery is empty."""
        initial_wh = self.capacity_wh * self.initial_percentage / 100.0
        return initial_wh / self.power_w * 3600.0

    def percentage_at(self, elapsed_s: float) -> float:
        """Return the state of charge in percent after ``elapsed_s`` seconds."""
        used_wh = self.power_w * elapsed_s / 3600.0
        remaining = self.initial_percentage - used_wh / self.capacity_wh * 100.0
        return max(remaining, 0.0)

    def position_at(self, elapsed_s: float) -> tuple[float, float]:
        """Return the (x, y) position in metres after ``elapsed_s`` seconds."""
        driving_s = min(elapsed_s, self.runtime_s)
        distance_m = self.phase * self.path_length_m + self.speed_mps * driving_s
        distance_m = math.fmod(distance_m, self.path_length_m)

        if self.path == CIRCLE:
            x, y = self._circle_offset(distance_m)
        else:
            x, y = self._figure_eight_offset(distance_m)

        if self.clockwise:
            y = -y
        return self.center_x + x, self.center_y + y

    def _circle_offset(self, distance_m: float) -> tuple[float, float]:
        angle = distance_m / self.radius_m
        return self.radius_m * math.cos(angle), self.radius_m * math.sin(angle)

    def _figure_eight_offset(self, distance_m: float) -> tuple[float, float]:
        # The figure eight is two circles that touch at the center: the left
        # one driven counterclockwise from its rightmost point, then the right
        # one driven clockwise from its leftmost point. Both laps leave the
        # center heading along +y, so the path has no corner.
        r = self.radius_m
        lap = 2.0 * math.pi * r
        if distance_m < lap:
            angle = distance_m / r
            return -r + r * math.cos(angle), r * math.sin(angle)
        angle = math.pi - (distance_m - lap) / r
        return r + r * math.cos(angle), r * math.sin(angle)

    def step(self, now_ns: int) -> dict[str, Any]:
        """Return the telemetry message for the instant ``now_ns``.

        ``now_ns`` is Unix time in integer nanoseconds and becomes the message
        ``ts``. The first call sets ``started_ns`` when it is unset. Times
        before ``started_ns`` are treated as the start.
        """
        now_ns = int(now_ns)
        if self.started_ns is None:
            self.started_ns = now_ns
        elapsed_s = max(now_ns - self.started_ns, 0) / 1e9

        percentage = self.percentage_at(elapsed_s)
        x, y = self.position_at(elapsed_s)
        return {
            "type": "telemetry",
            "ts": now_ns,
            "bot": self.name,
            "battery": {
                "percentage": round(percentage, 2),
                "voltage": round(battery_voltage(percentage), 3),
                "wh": round(self.capacity_wh * percentage / 100.0, 3),
            },
            "pose": {"x": round(x, 4), "y": round(y, 4)},
        }


def bot_name(number: int) -> str:
    """Return the fleet name of robot ``number`` (1-based), such as ``tb3-007``."""
    return f"tb3-{number:03d}"


def fleet(count: int, seed: int | None = None) -> list[Robot]:
    """Create ``count`` robots named ``tb3-001``, ``tb3-002``, ...

    Each robot gets its own path, speed, starting point on the path and
    battery level, drawn from ``random.Random(seed)``, so the same seed gives
    the same fleet. The path centers lie on a grid with 4 m spacing.
    """
    if count < 1:
        raise ValueError(f"invalid robot count {count}: expected at least 1")

    rng = random.Random(seed)
    columns = math.ceil(math.sqrt(count))
    spacing_m = 4.0
    robots = []
    for index in range(count):
        row, column = divmod(index, columns)
        robots.append(
            Robot(
                name=bot_name(index + 1),
                center_x=column * spacing_m + rng.uniform(-0.3, 0.3),
                center_y=row * spacing_m + rng.uniform(-0.3, 0.3),
                # A figure eight spans 4 radii, so 1.0 m keeps it inside its grid cell.
                radius_m=rng.uniform(0.4, 1.0),
                speed_mps=rng.uniform(0.10, MAX_SPEED_MPS),
                path=rng.choice(PATHS),
                clockwise=rng.random() < 0.5,
                phase=rng.random(),
                initial_percentage=rng.uniform(60.0, 100.0),
            )
        )
    return robots


def encode(message: Mapping[str, Any]) -> bytes:
    """Serialize a message as compact UTF-8 JSON.

    Raises ValueError for NaN or infinite numbers, which JSON cannot express.
    """
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def malformed_body(message: Mapping[str, Any], kind: str) -> bytes:
    """Return a deliberately broken body derived from ``message``.

    ``kind`` is one of MALFORMED_KINDS: ``invalid-json`` drops the closing
    brace, ``wrong-type`` sets ``type`` to ``status``, and ``missing-bot``
    removes the ``bot`` field.
    """
    if kind == "invalid-json":
        return encode(message)[:-1]
    if kind == "wrong-type":
        return encode({**message, "type": "status"})
    if kind == "missing-bot":
        return encode({key: value for key, value in message.items() if key != "bot"})
    raise ValueError(f"invalid malformed message kind {kind!r}: expected one of {MALFORMED_KINDS}")


def message_body(message: Mapping[str, Any], number: int, bad_every: int | None = None) -> tuple[bytes, bool]:
    """Return the body to publish as message ``number`` (1-based) and whether it is malformed.

    With ``bad_every`` N, messages N, 2N, 3N, ... are malformed, rotating
    through MALFORMED_KINDS. Without it every body is valid.
    """
    if bad_every is None or number % bad_every != 0:
        return encode(message), False
    kind = MALFORMED_KINDS[(number // bad_every - 1) % len(MALFORMED_KINDS)]
    return malformed_body(message, kind), True


@dataclasses.dataclass(frozen=True)
class BrokerSettings:
    """RabbitMQ connection settings. The password is left out of ``repr``."""

    host: str = "localhost"
    port: int = 5672
    vhost: str = "/"
    user: str = "guest"
    password: str = dataclasses.field(default="guest", repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BrokerSettings:
        """Read RABBITMQ_HOST, RABBITMQ_PORT, RABBITMQ_VHOST, RABBITMQ_USER and RABBITMQ_PASS.

        Raises ValueError when RABBITMQ_PORT is not a port number.
        """
        if environ is None:
            environ = os.environ
        port_text = environ.get("RABBITMQ_PORT", "5672")
        try:
            port = int(port_text)
        except ValueError:
            port = 0
        if not 1 <= port <= 65535:
            raise ValueError(f"invalid RABBITMQ_PORT {port_text!r}: expected a port number from 1 to 65535")
        return cls(
            host=environ.get("RABBITMQ_HOST", "localhost"),
            port=port,
            vhost=environ.get("RABBITMQ_VHOST", "/"),
            user=environ.get("RABBITMQ_USER", "guest"),
            password=environ.get("RABBITMQ_PASS", "guest"),
        )

    def describe(self) -> str:
        """Return ``user@host:port vhost '/'`` for logs, without the password."""
        return f"{self.user}@{self.host}:{self.port} vhost {self.vhost!r}"

    def connection_parameters(self) -> pika.ConnectionParameters:
        """Build the pika connection parameters for these settings."""
        return pika.ConnectionParameters(
            host=self.host,
            port=self.port,
            virtual_host=self.vhost,
            credentials=pika.PlainCredentials(self.user, self.password),
            blocked_connection_timeout=_BLOCKED_CONNECTION_TIMEOUT_S,
            client_properties={"connection_name": "turtlebot-fleet-simulator"},
        )


def _validate_run_arguments(
    queue: str,
    bots: int,
    rate: float,
    duration: float | None,
    count: int | None,
    bad_every: int | None,
) -> None:
    if not queue or len(queue.encode("utf-8")) > 255:
        raise ValueError(f"invalid queue name {queue!r}: expected 1 to 255 bytes")
    if bots < 1:
        raise ValueError(f"invalid number of robots {bots}: expected at least 1")
    if not (math.isfinite(rate) and rate > 0.0):
        raise ValueError(f"invalid rate {rate} messages per second per robot: expected a positive number")
    if duration is not None and not (math.isfinite(duration) and duration >= 0.0):
        raise ValueError(f"invalid duration {duration} s: expected 0 or more seconds")
    if count is not None and count < 1:
        raise ValueError(f"invalid message count {count}: expected at least 1")
    if bad_every is not None and bad_every < 1:
        raise ValueError(f"invalid --bad-every {bad_every}: expected at least 1")


def _count_noun(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _describe_limit(duration: float | None, count: int | None) -> str:
    limits = []
    if count is not None:
        limits.append(_count_noun(count, "message"))
    if duration is not None:
        limits.append(f"{duration:g} s")
    if not limits:
        return "runs until SIGINT or SIGTERM"
    return "stops after " + " or ".join(limits)


@dataclasses.dataclass
class _RunCounters:
    """Message counts of one simulator run, for the summary log line."""

    published: int = 0
    malformed: int = 0
    rejected: int = 0
    lag_resets: int = 0


def _publish_until_stopped(
    connection: pika.BlockingConnection,
    channel: BlockingChannel,
    robots: Sequence[Robot],
    queue: str,
    rate: float,
    duration: float | None,
    count: int | None,
    bad_every: int | None,
    signals: StopOnSignal,
    counters: _RunCounters,
) -> str:
    """Publish paced messages until a stop condition is met and return the reason for stopping.

    Message k (0-based) is due ``k / (len(robots) * rate)`` seconds after the
    start. ``duration`` is measured from the same start.
    """
    total_rate = len(robots) * rate
    interval_s = 1.0 / total_rate
    properties = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
    )
    started = time.monotonic()
    schedule_start = started
    number = 0

    while True:
        if signals.event.is_set():
            return f"{signals.signal_name} received" if signals.signal_name else "stop requested"
        if count is not None and number >= count:
            return "message count reached"
        due = schedule_start + number * interval_s
        if duration is not None and due - started >= duration:
            return "duration elapsed"

        now = time.monotonic()
        if now < due:
            connection.sleep(min(due - now, _MAX_SLEEP_S))
            continue
        if now - due > _MAX_LAG_S:
            # Restart the schedule from now, so the simulator keeps the
            # requested rate instead of bursting to catch up.
            if counters.lag_resets == 0:
                logger.warning(
                    "Publishing is %.1f s behind schedule at message %d because confirmed publishing is "
                    "slower than the requested %g messages/s. Dropping the backlog and continuing.",
                    now - due,
                    number + 1,
                    total_rate,
                )
            counters.lag_resets += 1
            schedule_start = now - number * interval_s

        number += 1
        robot = robots[(number - 1) % len(robots)]
        body, is_malformed = message_body(robot.step(time.time_ns()), number, bad_every)
        try:
            channel.basic_publish(
                exchange="",
                routing_key=queue,
                body=body,
                properties=properties,
                mandatory=True,
            )
        except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as exc:
            counters.rejected += 1
            # Log the first rejection and then every 100th.
            if counters.rejected % 100 == 1:
                logger.error(
                    "Broker rejected message %d from %s on queue %r (%d rejected so far): %r",
                    number,
                    robot.name,
                    queue,
                    counters.rejected,
                    exc,
                )
            continue

        counters.published += 1
        if is_malformed:
            counters.malformed += 1


def run(
    broker: BrokerSettings,
    *,
    queue: str = DEFAULT_QUEUE,
    bots: int = DEFAULT_BOTS,
    rate: float = DEFAULT_RATE,
    duration: float | None = None,
    count: int | None = None,
    seed: int | None = None,
    bad_every: int | None = None,
    stop_event: threading.Event | None = None,
) -> int:
    """Publish fleet telemetry to ``queue`` and return the number of messages published.

    ``rate`` is messages per second per robot. Messages go round-robin over
    the robots, evenly spaced at ``bots * rate`` messages per second in total.
    The run stops after ``count`` messages (including any that the broker
    rejects) or ``duration`` seconds, whichever comes first, or else on
    SIGINT, SIGTERM or ``stop_event``.

    The queue is declared durable with no other arguments, the messages are
    persistent, and each publish waits for the broker's publisher confirm.
    A message that the broker rejects (nack or unroutable) is logged and not
    counted as published. Connection and channel errors are raised after the
    summary line is logged.
    """
    _validate_run_arguments(queue, bots, rate, duration, count, bad_every)
    if stop_event is None:
        stop_event = threading.Event()
    robots = fleet(bots, seed)

    logger.info(
        "Simulator starting: %s at %g messages/s each (%g messages/s in total) to queue %r on %s, %s",
        _count_noun(bots, "robot"),
        rate,
        bots * rate,
        queue,
        broker.describe(),
        _describe_limit(duration, count),
    )

    counters = _RunCounters()
    stop_reason = "error"
    started = time.monotonic()
    with StopOnSignal(stop_event) as signals:
        try:
            connection = pika.BlockingConnection(broker.connection_parameters())
            try:
                channel = connection.channel()
                channel.queue_declare(queue=queue, durable=True)
                channel.confirm_delivery()
                started = time.monotonic()
                stop_reason = _publish_until_stopped(
                    connection, channel, robots, queue, rate, duration, count, bad_every, signals, counters
                )
            finally:
                if connection.is_open:
                    connection.close()
        finally:
            elapsed = time.monotonic() - started
            logger.info(
                "Simulator stopped (%s): published %s (%d malformed, %d rejected by the broker, "
                "%d schedule resets) to queue %r in %.1f s (%.1f messages/s)",
                stop_reason,
                _count_noun(counters.published, "message"),
                counters.malformed,
                counters.rejected,
                counters.lag_resets,
                queue,
                elapsed,
                counters.published / elapsed if elapsed > 0 else 0.0,
            )
    return counters.published


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected an integer of 1 or more")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0.0):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a number greater than 0")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0.0):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a number of 0 or more")
    return value


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected an integer") from None


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """Build the argument parser of ``ingester.py simulate``.

    The ``--queue`` default comes from RABBITMQ_QUEUE in ``environ``
    (``os.environ`` when None).
    """
    if environ is None:
        environ = os.environ
    default_queue = environ.get("RABBITMQ_QUEUE", DEFAULT_QUEUE)

    parser = argparse.ArgumentParser(
        prog="ingester.py simulate",
        description=(
            "Publish simulated TurtleBot3 telemetry to a RabbitMQ queue. Each robot drives a circle or a "
            "figure eight at up to 0.22 m/s while its 3-cell LiPo battery drains. Without --count or "
            "--duration the simulator runs until SIGINT (Ctrl-C) or SIGTERM."
        ),
        epilog=(
            "The broker connection comes from the environment: RABBITMQ_HOST (default localhost), "
            "RABBITMQ_PORT (5672), RABBITMQ_VHOST (/), RABBITMQ_USER (guest) and RABBITMQ_PASS (guest)."
        ),
    )
    parser.add_argument(
        "--bots",
        type=_positive_int,
        default=DEFAULT_BOTS,
        metavar="N",
        help="number of simulated robots, named tb3-001, tb3-002, ... (default: %(default)s)",
    )
    parser.add_argument(
        "--rate",
        type=_positive_float,
        default=DEFAULT_RATE,
        metavar="HZ",
        help="messages per second per robot; the total rate is bots * rate (default: %(default)s)",
    )
    parser.add_argument(
        "--duration",
        type=_non_negative_float,
        metavar="SECONDS",
        help="stop after this many seconds (default: no time limit)",
    )
    parser.add_argument(
        "--count",
        type=_positive_int,
        metavar="N",
        help="stop after publishing this many messages in total over all robots (default: no limit)",
    )
    parser.add_argument(
        "--queue",
        default=default_queue,
        help="queue to declare (durable) and publish to (default: RABBITMQ_QUEUE or %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=_seed,
        metavar="INT",
        help="random seed for the robots' paths, speeds and battery levels (default: a different fleet each run)",
    )
    parser.add_argument(
        "--bad-every",
        type=_positive_int,
        metavar="N",
        help=(
            "make every Nth message malformed, rotating through invalid JSON, a message with type "
            "'status' and a message without 'bot', so the consumer's dead-letter handling can be seen "
            "(default: all messages valid)"
        ),
    )
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run ``ingester.py simulate`` with ``argv`` and return the exit status.

    Returns 0 after a normal stop (including SIGINT and SIGTERM), and 1 when
    the broker connection fails or the broker closes the channel. Invalid
    arguments and an invalid RABBITMQ_PORT exit with status 2.
    """
    if environ is None:
        environ = os.environ
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    try:
        broker = BrokerSettings.from_env(environ)
    except ValueError as exc:
        parser.error(str(exc))

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # pika logs every connection step at INFO, which would bury the simulator's own lines.
    logging.getLogger("pika").setLevel(logging.WARNING)
    try:
        run(
            broker,
            queue=args.queue,
            bots=args.bots,
            rate=args.rate,
            duration=args.duration,
            count=args.count,
            seed=args.seed,
            bad_every=args.bad_every,
        )
    except pika.exceptions.ChannelClosedByBroker as exc:
        hint = ""
        if exc.reply_code == 406:
            hint = " The queue probably exists with other arguments. Delete it or use --queue with another name."
        logger.error("RabbitMQ closed the channel on %s: %s.%s", broker.describe(), exc, hint)
        return 1
    except pika.exceptions.AMQPError as exc:
        logger.error("RabbitMQ connection to %s failed: %r", broker.describe(), exc)
        return 1
    return 0
