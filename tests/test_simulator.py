"""Tests of the fleet simulator: the robot model, the CLI parser and publishing to RabbitMQ.

The tests marked ``integration`` publish to the machine's RabbitMQ on
127.0.0.1:5672 (guest/guest), which the ``rabbitmq`` fixture starts when it is down.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import threading
import time
import uuid

import pika.exceptions
import pytest

from services import LOOPBACK_HOST, RABBITMQ_PASSWORD, RABBITMQ_PORT, RABBITMQ_USER
from telemetry_ingester import simulator
from telemetry_ingester.signals import StopOnSignal
from telemetry_ingester.simulator import (
    BATTERY_CAPACITY_WH,
    MAX_SPEED_MPS,
    BrokerSettings,
    Robot,
    battery_voltage,
    bot_name,
    build_parser,
    encode,
    fleet,
    malformed_body,
    message_body,
    run,
)

START_NS = 1_733_300_000_123_456_789
HOUR_S = 3600
# Poses are rounded to 0.1 mm, so a speed computed from two poses 1 s apart
# can exceed the true speed by about 1.5e-4 m/s.
SPEED_TOLERANCE_MPS = 1e-3


def simulate_hour(robot: Robot, step_s: int = 1) -> list[dict]:
    return [robot.step(START_NS + second * 1_000_000_000) for second in range(0, HOUR_S + 1, step_s)]


def distance(first: dict, second: dict) -> float:
    return math.hypot(second["pose"]["x"] - first["pose"]["x"], second["pose"]["y"] - first["pose"]["y"])


# Robot model


def test_bot_name_zero_padded():
    assert bot_name(1) == "tb3-001"
    assert bot_name(7) == "tb3-007"
    assert bot_name(123) == "tb3-123"


def test_fleet_names_in_order():
    robots = fleet(12, seed=1)

    assert [robot.name for robot in robots] == [f"tb3-{number:03d}" for number in range(1, 13)]


def test_fleet_rejects_zero_robots():
    with pytest.raises(ValueError, match="robot count 0"):
        fleet(0)


def test_fleet_same_seed_same_messages():
    first = fleet(5, seed=42)
    second = fleet(5, seed=42)

    assert first == second
    for moment_s in (0, 10, 600):
        now_ns = START_NS + moment_s * 1_000_000_000
        assert [robot.step(now_ns) for robot in first] == [robot.step(now_ns) for robot in second]


def test_fleet_different_seeds_differ():
    assert fleet(5, seed=1) != fleet(5, seed=2)


def test_fleet_parameters_in_range():
    for robot in fleet(50, seed=3):
        assert 0.0 < robot.speed_mps <= MAX_SPEED_MPS
        assert 60.0 <= robot.initial_percentage <= 100.0
        assert robot.path in simulator.PATHS
        assert robot.capacity_wh == BATTERY_CAPACITY_WH


def test_fleet_uses_both_paths():
    paths = {robot.path for robot in fleet(50, seed=3)}

    assert paths == {simulator.CIRCLE, simulator.FIGURE_EIGHT}


def test_step_message_format():
    robot = fleet(3, seed=5)[2]

    message = robot.step(START_NS)

    assert set(message) == {"type", "ts", "bot", "battery", "pose"}
    assert message["type"] == "telemetry"
    assert message["bot"] == "tb3-003"
    assert set(message["battery"]) == {"percentage", "voltage", "wh"}
    assert set(message["pose"]) == {"x", "y"}


def test_hour_timestamps_are_integer_ns():
    robot = fleet(1, seed=7)[0]

    for minute, message in enumerate(simulate_hour(robot, step_s=60)):
        assert type(message["ts"]) is int
        assert message["ts"] == START_NS + minute * 60 * 1_000_000_000


def test_hour_battery_values_in_range():
    for robot in fleet(20, seed=11):
        for message in simulate_hour(robot):
            battery = message["battery"]
            assert 10.5 <= battery["voltage"] <= 12.7, (robot.name, battery)
            assert 0.0 <= battery["percentage"] <= 100.0, (robot.name, battery)
            assert 0.0 <= battery["wh"] <= BATTERY_CAPACITY_WH, (robot.name, battery)
            assert battery["wh"] == pytest.approx(BATTERY_CAPACITY_WH * battery["percentage"] / 100, abs=2e-3)


def test_hour_battery_drains_monotonically():
    for robot in fleet(20, seed=11):
        messages = simulate_hour(robot)
        for previous, current in zip(messages, messages[1:]):
            assert current["battery"]["percentage"] <= previous["battery"]["percentage"], robot.name
            assert current["battery"]["voltage"] <= previous["battery"]["voltage"], robot.name
        # A robot draws 7 to 8.2 W, so an hour uses 35 % to 41 % of 19.98 Wh.
        drained = messages[0]["battery"]["percentage"] - messages[-1]["battery"]["percentage"]
        assert 30.0 < drained < 45.0, (robot.name, drained)


def test_hour_speed_within_limit():
    for robot in fleet(20, seed=11):
        messages = simulate_hour(robot)
        for previous, current in zip(messages, messages[1:]):
            dt_s = (current["ts"] - previous["ts"]) / 1e9
            speed = distance(previous, current) / dt_s
            assert speed <= MAX_SPEED_MPS + SPEED_TOLERANCE_MPS, (robot.name, previous["ts"], speed)


def test_hour_pose_keeps_moving():
    for robot in fleet(20, seed=11):
        messages = simulate_hour(robot)
        steps = [distance(previous, current) for previous, current in zip(messages, messages[1:])]
        # A 1 s chord on a curve of radius 0.4 m or more is at least 98 % of
        # the distance driven, and the speed is at least 0.10 m/s.
        assert min(steps) > 0.09, robot.name


@pytest.mark.parametrize("path", simulator.PATHS)
@pytest.mark.parametrize("clockwise", [False, True])
def test_path_continuous_at_fine_steps(path, clockwise):
    robot = Robot(
        name="tb3-001", center_x=1.0, center_y=-2.0, radius_m=0.5, speed_mps=0.2, path=path, clockwise=clockwise
    )
    lap_s = robot.path_length_m / robot.speed_mps
    step_s = 0.05
    positions = [robot.position_at(index * step_s) for index in range(int(lap_s / step_s) + 2)]

    for previous, current in zip(positions, positions[1:]):
        step_m = math.dist(previous, current)
        assert step_m <= robot.speed_mps * step_s + 1e-9
        assert step_m > 0.99 * robot.speed_mps * step_s


def test_circle_stays_on_radius():
    robot = Robot(name="tb3-001", center_x=3.0, center_y=4.0, radius_m=0.8, speed_mps=0.15)

    for second in range(0, 120, 7):
        x, y = robot.position_at(second)
        assert math.hypot(x - 3.0, y - 4.0) == pytest.approx(0.8)


def test_figure_eight_passes_center_each_half_lap():
    robot = Robot(
        name="tb3-001", center_x=0.0, center_y=0.0, radius_m=0.5, speed_mps=0.2, path=simulator.FIGURE_EIGHT
    )
    half_lap_s = robot.path_length_m / 2 / robot.speed_mps

    for half_laps in range(4):
        x, y = robot.position_at(half_laps * half_lap_s)
        assert x == pytest.approx(0.0, abs=1e-9)
        assert y == pytest.approx(0.0, abs=1e-9)


def test_figure_eight_spans_four_radii():
    robot = Robot(
        name="tb3-001", center_x=0.0, center_y=0.0, radius_m=0.5, speed_mps=0.2, path=simulator.FIGURE_EIGHT
    )
    lap_s = robot.path_length_m / robot.speed_mps
    xs = [robot.position_at(lap_s * index / 400)[0] for index in range(400)]

    assert min(xs) == pytest.approx(-1.0, abs=1e-3)
    assert max(xs) == pytest.approx(1.0, abs=1e-3)


def test_empty_battery_stops_robot():
    robot = Robot(name="tb3-001", center_x=0.0, center_y=0.0, radius_m=1.0, speed_mps=0.2, initial_percentage=1.0)
    empty_ns = START_NS + int(robot.runtime_s * 1e9)

    robot.step(START_NS)
    at_empty = robot.step(empty_ns)
    later = robot.step(empty_ns + 600 * 1_000_000_000)

    assert at_empty["battery"]["percentage"] == 0.0
    assert later["battery"] == {"percentage": 0.0, "voltage": 10.5, "wh": 0.0}
    assert later["pose"] == at_empty["pose"]


def test_step_before_start_uses_start_state():
    robot = fleet(1, seed=9)[0]

    first = robot.step(START_NS)
    earlier = robot.step(START_NS - 5_000_000_000)

    assert earlier["battery"] == first["battery"]
    assert earlier["pose"] == first["pose"]
    assert earlier["ts"] == START_NS - 5_000_000_000


def test_robot_rejects_speed_over_limit():
    with pytest.raises(ValueError, match="invalid speed 0.3"):
        Robot(name="tb3-001", center_x=0.0, center_y=0.0, radius_m=1.0, speed_mps=0.3)


def test_robot_rejects_unknown_path():
    with pytest.raises(ValueError, match="invalid path 'square'"):
        Robot(name="tb3-001", center_x=0.0, center_y=0.0, radius_m=1.0, speed_mps=0.2, path="square")


def test_battery_voltage_curve_endpoints():
    assert battery_voltage(0.0) == pytest.approx(10.5)
    assert battery_voltage(100.0) == pytest.approx(12.6)
    assert battery_voltage(-5.0) == pytest.approx(10.5)
    assert battery_voltage(150.0) == pytest.approx(12.6)


def test_battery_voltage_curve_increasing():
    volts = [battery_voltage(tenth / 10) for tenth in range(1001)]

    for lower, higher in zip(volts, volts[1:]):
        assert higher > lower


# Encoding and malformed messages


def test_encode_compact_utf8_json():
    message = fleet(1, seed=1)[0].step(START_NS)

    body = encode(message)

    assert isinstance(body, bytes)
    assert b" " not in body
    assert json.loads(body.decode("utf-8")) == message


def test_encode_keeps_non_ascii_as_utf8():
    assert encode({"bot": "tb3-ü"}) == '{"bot":"tb3-ü"}'.encode("utf-8")


def test_encode_rejects_nan():
    with pytest.raises(ValueError):
        encode({"battery": {"voltage": math.nan}})


def test_message_body_without_bad_every_valid():
    message = fleet(1, seed=1)[0].step(START_NS)

    for number in range(1, 20):
        body, is_malformed = message_body(message, number)
        assert is_malformed is False
        assert body == encode(message)


def test_message_body_bad_every_rotates_kinds():
    message = fleet(1, seed=1)[0].step(START_NS)
    bodies = {number: message_body(message, number, bad_every=2) for number in range(1, 15)}

    for number in (1, 3, 5, 7, 9, 11, 13):
        assert bodies[number] == (encode(message), False)
    for number in (2, 8, 14):
        body, is_malformed = bodies[number]
        assert is_malformed is True
        with pytest.raises(json.JSONDecodeError):
            json.loads(body)
    for number in (4, 10):
        body, is_malformed = bodies[number]
        assert is_malformed is True
        assert json.loads(body) == {**message, "type": "status"}
    for number in (6, 12):
        body, is_malformed = bodies[number]
        assert is_malformed is True
        decoded = json.loads(body)
        assert "bot" not in decoded
        assert decoded["type"] == "telemetry"


def test_message_body_bad_every_one_all_malformed():
    message = fleet(1, seed=1)[0].step(START_NS)

    assert all(message_body(message, number, bad_every=1)[1] for number in range(1, 10))


def test_malformed_body_rejects_unknown_kind():
    with pytest.raises(ValueError, match="invalid malformed message kind 'empty'"):
        malformed_body({}, "empty")


# Broker settings and argument parsing


def test_broker_settings_defaults():
    assert BrokerSettings.from_env({}) == BrokerSettings("localhost", 5672, "/", "guest", "guest")


def test_broker_settings_from_env():
    environ = {
        "RABBITMQ_HOST": "::1",
        "RABBITMQ_PORT": "5673",
        "RABBITMQ_VHOST": "fleet",
        "RABBITMQ_USER": "sim",
        "RABBITMQ_PASS": "s3cret-pass",
    }

    assert BrokerSettings.from_env(environ) == BrokerSettings("::1", 5673, "fleet", "sim", "s3cret-pass")


@pytest.mark.parametrize("port", ["abc", "0", "70000", ""])
def test_broker_settings_invalid_port(port):
    with pytest.raises(ValueError, match="invalid RABBITMQ_PORT"):
        BrokerSettings.from_env({"RABBITMQ_PORT": port})


def test_broker_settings_hide_password():
    broker = BrokerSettings(user="sim", password="s3cret-pass")

    assert "s3cret-pass" not in repr(broker)
    assert "s3cret-pass" not in broker.describe()
    assert "sim@localhost:5672" in broker.describe()


def test_parser_defaults():
    args = build_parser({}).parse_args([])

    assert args.bots == 10
    assert args.rate == 1.0
    assert args.duration is None
    assert args.count is None
    assert args.queue == "turtlebot.telemetry"
    assert args.seed is None
    assert args.bad_every is None


def test_parser_queue_default_from_env():
    args = build_parser({"RABBITMQ_QUEUE": "fleet.telemetry"}).parse_args([])

    assert args.queue == "fleet.telemetry"


def test_parser_reads_all_options():
    argv = ["--bots", "3", "--rate", "2.5", "--duration", "0", "--count", "40", "--queue", "q1", "--seed", "-4"]
    argv += ["--bad-every", "7"]

    args = build_parser({}).parse_args(argv)

    assert (args.bots, args.rate, args.duration, args.count) == (3, 2.5, 0.0, 40)
    assert (args.queue, args.seed, args.bad_every) == ("q1", -4, 7)


def test_parser_prog_and_help_units(capsys):
    parser = build_parser({})

    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    output = capsys.readouterr().out

    assert parser.prog == "ingester.py simulate"
    assert "messages per second per robot" in output
    assert "seconds" in output
    assert "invalid JSON" in output
    assert "RABBITMQ_PASS" in output


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--bots", "0"),
        ("--bots", "-3"),
        ("--bots", "two"),
        ("--rate", "0"),
        ("--rate", "-1.5"),
        ("--rate", "nan"),
        ("--rate", "inf"),
        ("--duration", "-5"),
        ("--count", "0"),
        ("--bad-every", "0"),
        ("--seed", "x"),
    ],
)
def test_parser_rejects_invalid_value(capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        build_parser({}).parse_args([option, value])
    error = capsys.readouterr().err

    assert exit_info.value.code == 2
    assert f"argument {option}" in error
    assert f"invalid value '{value}'" in error


def test_main_rejects_invalid_port_env(capsys):
    with pytest.raises(SystemExit) as exit_info:
        simulator.main(["--count", "1"], environ={"RABBITMQ_PORT": "amqp"})
    error = capsys.readouterr().err

    assert exit_info.value.code == 2
    assert "invalid RABBITMQ_PORT 'amqp'" in error


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"bots": 0}, "invalid number of robots 0"),
        ({"rate": 0.0}, "invalid rate 0.0"),
        ({"duration": -1.0}, "invalid duration -1.0"),
        ({"count": 0}, "invalid message count 0"),
        ({"bad_every": 0}, "invalid --bad-every 0"),
        ({"queue": ""}, "invalid queue name ''"),
    ],
)
def test_run_rejects_invalid_arguments(arguments, message):
    # Validation happens before connecting, so the unused port is never contacted.
    with pytest.raises(ValueError, match=message):
        run(BrokerSettings(host="127.0.0.1", port=1), **arguments)


# Pacing, with a fake connection and channel


class FakeConnection:
    def sleep(self, duration):
        time.sleep(duration)


class FakeChannel:
    """Channel that records bodies, stalls on one publish and nacks another."""

    def __init__(self, stall_on=None, stall_s=0.0, nack_on=None):
        self.stall_on = stall_on
        self.stall_s = stall_s
        self.nack_on = nack_on
        self.calls = 0
        self.bodies = []

    def basic_publish(self, exchange, routing_key, body, properties, mandatory):
        self.calls += 1
        if self.calls == self.stall_on:
            time.sleep(self.stall_s)
        if self.calls == self.nack_on:
            raise pika.exceptions.NackError([])
        self.bodies.append(body)


def publish_with_fakes(channel, count, rate=100.0, stop_event=None):
    counters = simulator._RunCounters()
    signals = StopOnSignal(stop_event or threading.Event())
    reason = simulator._publish_until_stopped(
        FakeConnection(), channel, fleet(2, seed=1), "q", rate, None, count, None, signals, counters
    )
    return reason, counters


def test_pacing_drops_backlog_after_stall(caplog):
    channel = FakeChannel(stall_on=1, stall_s=1.2)

    with caplog.at_level(logging.WARNING, logger=simulator.__name__):
        started = time.monotonic()
        reason, counters = publish_with_fakes(channel, count=6)
        elapsed = time.monotonic() - started

    assert reason == "message count reached"
    assert counters.published == 6
    assert counters.lag_resets == 1
    assert "behind schedule at message 2" in caplog.text
    # After the reset, messages 3 to 6 are paced at 200 messages/s again.
    assert elapsed >= 1.2 + 4 / 200


def test_pacing_counts_nacked_message(caplog):
    channel = FakeChannel(nack_on=2)

    with caplog.at_level(logging.ERROR, logger=simulator.__name__):
        reason, counters = publish_with_fakes(channel, count=4)

    assert reason == "message count reached"
    assert counters.published == 3
    assert counters.rejected == 1
    assert len(channel.bodies) == 3
    assert "Broker rejected message 2 from tb3-002" in caplog.text


def test_pacing_stops_on_event():
    stop_event = threading.Event()
    stop_event.set()

    reason, counters = publish_with_fakes(FakeChannel(), count=None, stop_event=stop_event)

    assert reason == "stop requested"
    assert counters.published == 0


# Publishing to RabbitMQ


def unused_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK_HOST, 0))
        return sock.getsockname()[1]


def test_main_returns_1_when_broker_unreachable(caplog):
    environ = {"RABBITMQ_HOST": LOOPBACK_HOST, "RABBITMQ_PORT": str(unused_loopback_port()), "RABBITMQ_PASS": "pw-9"}

    with caplog.at_level(logging.INFO, logger=simulator.__name__):
        status = simulator.main(["--count", "5"], environ=environ)

    assert status == 1
    assert "connection to guest@127.0.0.1" in caplog.text
    assert "published 0 messages" in caplog.text
    assert "pw-9" not in caplog.text


@pytest.fixture
def broker_settings(rabbitmq) -> BrokerSettings:
    return BrokerSettings(host=LOOPBACK_HOST, port=RABBITMQ_PORT, user=RABBITMQ_USER, password=RABBITMQ_PASSWORD)


@pytest.fixture
def queue_name(broker) -> str:
    """Unique queue name that the ``broker`` fixture deletes at teardown."""
    name = f"test.simulator.{uuid.uuid4().hex}"
    broker.declared_queues.add(name)
    return name


@pytest.mark.integration
def test_run_publishes_count_persistent_messages(broker_settings, broker, queue_name, caplog):
    with caplog.at_level(logging.INFO, logger=simulator.__name__):
        started = time.monotonic()
        published = run(broker_settings, queue=queue_name, bots=5, rate=50.0, count=50, seed=1)
        elapsed = time.monotonic() - started

    assert published == 50
    # 5 robots at 50 messages/s each is 250 messages/s, so 50 messages span at least 49 / 250 s.
    assert elapsed >= 49 / 250
    assert "Simulator starting: 5 robots" in caplog.text
    assert "message count reached" in caplog.text
    assert "published 50 messages" in caplog.text

    messages = broker.drain(queue_name)
    assert len(messages) == 50
    bots_seen = set()
    for properties, body in messages:
        assert properties.delivery_mode == 2
        decoded = json.loads(body.decode("utf-8"))
        assert decoded["type"] == "telemetry"
        assert type(decoded["ts"]) is int
        bots_seen.add(decoded["bot"])
    assert bots_seen == {f"tb3-{number:03d}" for number in range(1, 6)}


@pytest.mark.integration
def test_run_declares_queue_like_publisher(broker_settings, broker, queue_name):
    run(broker_settings, queue=queue_name, bots=1, rate=100.0, count=1)

    # A redeclare with other arguments than the existing queue's would close the channel.
    broker.declare_queue(queue_name)
    assert broker.depth(queue_name) == 1


@pytest.mark.integration
def test_run_duration_limit(broker_settings, broker, queue_name):
    started = time.monotonic()
    published = run(broker_settings, queue=queue_name, bots=2, rate=10.0, duration=0.5)
    elapsed = time.monotonic() - started

    # 20 messages/s for 0.5 s is due at 0, 0.05, ..., 0.45 s.
    assert published == 10
    assert elapsed < 5.0
    assert broker.depth(queue_name) == 10


@pytest.mark.integration
def test_run_bad_every_publishes_malformed(broker_settings, broker, queue_name):
    published = run(broker_settings, queue=queue_name, bots=2, rate=100.0, count=6, bad_every=2)

    bodies = [body for _, body in broker.drain(queue_name)]
    assert published == 6
    assert len(bodies) == 6
    with pytest.raises(json.JSONDecodeError):
        json.loads(bodies[1])
    assert json.loads(bodies[3])["type"] == "status"
    assert "bot" not in json.loads(bodies[5])
    for index in (0, 2, 4):
        assert json.loads(bodies[index])["type"] == "telemetry"


@pytest.mark.integration
@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signal handlers need the main thread"
)
def test_run_stops_cleanly_on_sigint(broker_settings, broker, queue_name, caplog):
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with caplog.at_level(logging.INFO, logger=simulator.__name__):
            published = run(broker_settings, queue=queue_name, bots=2, rate=10.0)
    finally:
        timer.cancel()

    assert published > 0
    assert "runs until SIGINT or SIGTERM" in caplog.text
    assert "SIGINT received" in caplog.text
    assert f"published {published} message" in caplog.text
    assert broker.depth(queue_name) == published
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.integration
def test_main_reports_queue_argument_mismatch(broker, queue_name, caplog):
    broker.channel.queue_declare(queue=queue_name, durable=True, arguments={"x-max-length": 10})
    environ = {
        "RABBITMQ_HOST": LOOPBACK_HOST,
        "RABBITMQ_PORT": str(RABBITMQ_PORT),
        "RABBITMQ_USER": RABBITMQ_USER,
        "RABBITMQ_PASS": RABBITMQ_PASSWORD,
    }

    with caplog.at_level(logging.INFO, logger=simulator.__name__):
        status = simulator.main(["--count", "1", "--queue", queue_name], environ=environ)

    assert status == 1
    assert "PRECONDITION_FAILED" in caplog.text
    assert "exists with other arguments" in caplog.text
    assert "published 0 messages" in caplog.text


@pytest.mark.integration
def test_run_stops_on_stop_event(broker_settings, broker, queue_name):
    stop_event = threading.Event()
    threading.Timer(0.3, stop_event.set).start()

    published = run(broker_settings, queue=queue_name, bots=1, rate=20.0, stop_event=stop_event)

    assert 1 <= published <= 20
    assert broker.depth(queue_name) == published
