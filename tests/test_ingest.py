"""Integration tests: the ingester process between real RabbitMQ and a real store.

VictoriaMetrics replaces InfluxDB 2.x here: it serves the same
``/api/v2/write`` API, stores a field as ``{measurement}_{field}`` and keeps
millisecond timestamps. Nanosecond exactness is checked on InfluxDB 1.6.
"""

import os
import signal
import time

import pytest

from services import IngesterProcess, free_port, http_request, unique_queue_name, wait_until
from workload import BASE_NS, MS, encode, ingester_env, telemetry

pytestmark = pytest.mark.integration


@pytest.fixture
def queue(broker):
    name = unique_queue_name("telemetry")
    broker.declare_queue(name)
    yield name
    broker.delete(name + ".dead")


def wait_for_drain(broker, queue, timeout=30.0):
    wait_until(lambda: broker.depth(queue) == 0, timeout, message=f"queue {queue} to drain")


def stored_points(store, metric, bot):
    return store.points(metric, bot=bot)


def dead_letters(broker, queue):
    return broker.drain(queue + ".dead")


# Extra settings for each way of mapping: with PREFETCH_COUNT 200 or more,
# MAPPING_PROCESS=auto maps in a helper process.
MAPPING_MODES = {"in_process": {}, "helper_process": {"PREFETCH_COUNT": "500"}}
HELPER_STARTED_LOG = "Started the mapping process"


def test_readme_message_arrives_exactly(broker, queue, victoria, tmp_path):
    ts = BASE_NS + 123456789
    broker.publish(queue, encode(telemetry("tb3-007", ts)))

    with IngesterProcess(ingester_env(queue, victoria.url), tmp_path) as ingester:
        ingester.wait_for_log("ingest ok")
        wait_for_drain(broker, queue)

    expected = {
        "battery_percentage": 80.0,
        "battery_voltage": 12.6,
        "battery_wh": 50.0,
        "pose_x": 1.5,
        "pose_y": 2.3,
    }
    for metric, value in expected.items():
        assert stored_points(victoria, metric, "tb3-007") == [(ts // MS, value)], metric
    assert dead_letters(broker, queue) == []


def test_readme_message_keeps_nanoseconds_on_influxdb1(broker, queue, influxdb1, tmp_path):
    influxdb1.create_database("exact")
    ts = BASE_NS + 123456789
    broker.publish(queue, encode(telemetry("tb3 007,한=1", ts)))
    env = ingester_env(
        queue, influxdb1.url, INFLUX_API="v1", INFLUX_BUCKET="exact", INFLUX_TOKEN=":"
    )

    with IngesterProcess(env, tmp_path) as ingester:
        ingester.wait_for_log("ingest ok")

    result = influxdb1.query("exact", 'SELECT * FROM "battery"')
    (series,) = result["results"][0]["series"]
    row = dict(zip(series["columns"], series["values"][0]))
    assert row["time"] == ts
    assert row["bot"] == "tb3 007,한=1"
    assert row["percentage"] == 80.0
    assert row["voltage"] == 12.6
    assert row["wh"] == 50.0


def test_fleet_of_twenty_all_arrive(broker, queue, victoria, tmp_path):
    bots = [f"fleet-{queue[-6:]}-{n:02d}" for n in range(20)]
    for i in range(100):
        for n, bot in enumerate(bots):
            broker.publish(queue, encode(telemetry(bot, BASE_NS + i * MS, percentage=i + n / 4)))

    with IngesterProcess(ingester_env(queue, victoria.url), tmp_path):
        wait_for_drain(broker, queue, timeout=60)
        for bot in bots:
            wait_until(
                lambda: len(stored_points(victoria, "battery_percentage", bot)) == 100,
                timeout=20,
                message=f"100 points of {bot}",
            )

    for n, bot in enumerate(bots):
        points = stored_points(victoria, "battery_percentage", bot)
        assert points == [(BASE_NS // MS + i, i + n / 4) for i in range(100)]
    assert dead_letters(broker, queue) == []


BAD_MESSAGES = [
    (b"\xff\xfe not utf-8", "not_utf8"),
    (b"{not json", "not_json"),
    (b"[1, 2, 3]", "not_object"),
    (encode({"type": "status", "bot": "tb3-001", "pose": {"x": 1}}), "unknown_type"),
    (encode({"type": "telemetry", "pose": {"x": 1}}), "invalid_bot"),
    (encode({"type": "telemetry", "bot": "tb3-001", "ts": "yesterday", "pose": {"x": 1}}),
     "invalid_ts"),
    (encode({"type": "telemetry", "bot": "tb3-001", "battery": {"voltage": "12.6"}}),
     "invalid_field"),
    (encode({"type": "telemetry", "bot": "tb3-001", "ts": BASE_NS}), "no_data"),
]


@pytest.mark.parametrize("mode", MAPPING_MODES)
def test_bad_messages_go_to_dead_letter_queue(broker, queue, victoria, tmp_path, mode):
    bot = "mix-" + queue[-6:]
    good = 0
    for i, (body, _) in enumerate(BAD_MESSAGES):
        for j in range(3):
            broker.publish(queue, encode(telemetry(bot, BASE_NS + (good + 1) * MS, x=float(good))))
            good += 1
        broker.publish(
            queue,
            body,
            headers={"origin": f"bad-{i}"},
            content_type="application/json",
            expiration="600000",
        )

    env = ingester_env(queue, victoria.url, **MAPPING_MODES[mode])
    with IngesterProcess(env, tmp_path) as ingester:
        wait_for_drain(broker, queue)
        wait_until(lambda: len(stored_points(victoria, "pose_x", bot)) == good, timeout=20)
        # A batch's points can be queryable before its invalid messages are settled.
        wait_until(
            lambda: ingester.log_text().count("moved to") == len(BAD_MESSAGES),
            timeout=10,
            message=f"{len(BAD_MESSAGES)} dead-letter log lines",
        )
        log = ingester.log_text()

    assert stored_points(victoria, "pose_x", bot) == [
        (BASE_NS // MS + n + 1, float(n)) for n in range(good)
    ]
    letters = dead_letters(broker, queue)
    assert [body for _, body in letters] == [body for body, _ in BAD_MESSAGES]
    for (properties, _), (_, reason), i in zip(letters, BAD_MESSAGES, range(len(BAD_MESSAGES))):
        assert properties.headers["x-ingester-reason"] == reason
        assert properties.headers["x-ingester-detail"]
        assert properties.headers["x-ingester-queue"] == queue
        assert properties.headers["origin"] == f"bad-{i}"
        assert properties.content_type == "application/json"
        assert properties.delivery_mode == 2
        assert properties.expiration is None
    assert "Unknown message type 'status'" in log
    assert log.count("ingest error") == len(BAD_MESSAGES)
    assert (HELPER_STARTED_LOG in log) == (mode == "helper_process")


@pytest.mark.parametrize("mode", MAPPING_MODES)
def test_batches_of_only_invalid_messages(broker, queue, victoria, tmp_path, mode):
    """A batch with nothing to write is dead-lettered and acked without a batch ack."""
    bot = "invalid-" + queue[-6:]
    bad = [b"not json %d" % i for i in range(40)]
    for body in bad:
        broker.publish(queue, body)
    broker.publish(queue, encode(telemetry(bot, BASE_NS)))

    env = ingester_env(queue, victoria.url, **MAPPING_MODES[mode])
    with IngesterProcess(env, tmp_path) as ingester:
        wait_for_drain(broker, queue)
        wait_until(lambda: len(stored_points(victoria, "pose_x", bot)) == 1, timeout=20)
        wait_until(lambda: broker.depth(queue + ".dead") == len(bad), timeout=10)
        log = ingester.log_text()
        code = ingester.stop()

    letters = dead_letters(broker, queue)
    assert sorted(body for _, body in letters) == sorted(bad)
    assert all(p.headers["x-ingester-reason"] == "not_json" for p, _ in letters)
    assert "Lost the RabbitMQ connection" not in log
    assert code == 0


@pytest.mark.parametrize("mode", MAPPING_MODES)
def test_store_outage_loses_nothing(broker, queue, own_victoria, tmp_path, mode):
    bot = "outage-" + queue[-6:]
    env = ingester_env(
        queue, own_victoria.url, INFLUX_TIMEOUT_SECONDS="2", **MAPPING_MODES[mode]
    )

    with IngesterProcess(env, tmp_path) as ingester:
        for i in range(50):
            broker.publish(queue, encode(telemetry(bot, BASE_NS + i * MS, percentage=float(i))))
        wait_until(lambda: len(stored_points(own_victoria, "battery_percentage", bot)) == 50, 20)

        own_victoria.stop()
        for i in range(50, 150):
            broker.publish(queue, encode(telemetry(bot, BASE_NS + i * MS, percentage=float(i))))
        ingester.wait_for_log("connection refused", timeout=10)
        time.sleep(3)
        own_victoria.restart()

        ingester.wait_for_log("ingest resumed", timeout=40)
        wait_for_drain(broker, queue)
        wait_until(lambda: len(stored_points(own_victoria, "battery_percentage", bot)) == 150, 20)

    points = stored_points(own_victoria, "battery_percentage", bot)
    assert points == [(BASE_NS // MS + i, float(i)) for i in range(150)]
    assert dead_letters(broker, queue) == []


def test_sigterm_writes_what_is_in_hand(broker, queue, victoria, tmp_path):
    bot = "term-" + queue[-6:]
    for i in range(200):
        broker.publish(queue, encode(telemetry(bot, BASE_NS + i * MS)))

    ingester = IngesterProcess(ingester_env(queue, victoria.url), tmp_path).start()
    ingester.wait_for_log("ingest ok")
    ingester.terminate()
    assert ingester.wait(timeout=25) == 0

    stored = len(stored_points(victoria, "battery_percentage", bot))
    assert stored + broker.depth(queue) == 200
    assert stored > 0
    assert "Drained" in ingester.log_text()


def test_ctrl_c_drains_with_helper_process(broker, queue, victoria, tmp_path):
    """SIGINT to the whole process group, as a Ctrl-C in a terminal sends it."""
    bot = "ctrlc-" + queue[-6:]
    for i in range(2000):
        broker.publish(queue, encode(telemetry(bot, BASE_NS + i * MS)))

    env = ingester_env(queue, victoria.url, **MAPPING_MODES["helper_process"])
    ingester = IngesterProcess(env, tmp_path).start()
    ingester.wait_for_log("ingest ok")
    os.killpg(ingester.pid, signal.SIGINT)
    assert ingester.wait(timeout=25) == 0
    log = ingester.log_text()

    assert "Drained" in log
    assert "ingest error" not in log
    assert log.count(HELPER_STARTED_LOG) == 1

    stored = len(stored_points(victoria, "battery_percentage", bot))
    assert stored + broker.depth(queue) == 2000
    assert stored > 0


def test_sigterm_during_outage_acks_nothing_unstored(broker, queue, own_victoria, tmp_path):
    bot = "term-out-" + queue[-6:]
    env = ingester_env(queue, own_victoria.url, SHUTDOWN_TIMEOUT_SECONDS="3")
    own_victoria.stop()
    for i in range(30):
        broker.publish(queue, encode(telemetry(bot, BASE_NS + i * MS)))

    ingester = IngesterProcess(env, tmp_path).start()
    ingester.wait_for_log("connection refused", timeout=15)
    started = time.monotonic()
    ingester.terminate()
    assert ingester.wait(timeout=15) == 0
    assert time.monotonic() - started < 10

    wait_until(lambda: broker.depth(queue) == 30, 10, message="all 30 messages back in the queue")
    own_victoria.start()
    assert stored_points(own_victoria, "battery_percentage", bot) == []
    assert dead_letters(broker, queue) == []


def test_health_and_metrics_endpoint(broker, queue, victoria, tmp_path):
    port = free_port()
    bot = "metrics-" + queue[-6:]
    for i in range(10):
        broker.publish(queue, encode(telemetry(bot, BASE_NS + i * MS)))
    broker.publish(queue, b"{broken")

    with IngesterProcess(ingester_env(queue, victoria.url, HTTP_PORT=str(port)), tmp_path):
        wait_for_drain(broker, queue)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_request("GET", url + "/readyz").status == 200, 10)
        assert http_request("GET", url + "/healthz").status == 200
        metrics = wait_until(
            lambda: _metric_lines(url, "ingester_messages_written_total 10.0"), 10
        )

    assert "ingester_messages_received_total 11.0" in metrics
    assert "ingester_points_written_total 20.0" in metrics
    assert 'ingester_dead_letters_total{reason="not_json"} 1.0' in metrics
    assert f'ingester_robot_last_seen_timestamp_seconds{{bot="{bot}"}}' in metrics
    dead_letters(broker, queue)


def _metric_lines(url, expected):
    text = http_request("GET", url + "/metrics").text()
    return text if expected in text else None


def test_deleted_queue_is_consumed_again(broker, queue, victoria, tmp_path):
    bot = "deleted-" + queue[-6:]

    with IngesterProcess(ingester_env(queue, victoria.url), tmp_path) as ingester:
        ingester.wait_for_log("Connected to RabbitMQ")
        broker.delete(queue)
        ingester.wait_for_log("cancelled the consumer", timeout=10)
        wait_until(
            lambda: ingester.log_text().count("Connected to RabbitMQ") == 2,
            timeout=15,
            message="the ingester to reconnect and consume again",
        )

        broker.declare_queue(queue)
        broker.publish(queue, encode(telemetry(bot, BASE_NS)))
        wait_until(lambda: stored_points(victoria, "battery_percentage", bot), 20)

    assert stored_points(victoria, "battery_percentage", bot) == [(BASE_NS // MS, 80.0)]
