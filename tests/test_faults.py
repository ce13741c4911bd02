"""Fault suite: the ingester loses no message while its store or broker fails.

Each test publishes a known set of good and bad messages (see ``workload``),
injects one fault into real processes and waits. Then it checks that every
good message is stored with its exact series, time and values, and that every
bad one is in the dead-letter queue with its reason and nothing else is there.
It also checks that the ingester still runs or exited as designed. Each test
prints one ``FAULT-SUMMARY`` line, which ``pytest -s`` shows.

VictoriaMetrics serves the InfluxDB 2.x write API. Tests that need what only
InfluxDB does (writes that survive SIGKILL, a missing database, a field type
conflict) run on InfluxDB 1.6.

The broker restart and the consumer_timeout tests change the machine's
RabbitMQ for everyone connected to it, so they wait for other clients to leave
and skip when they stay.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from services import (
    LOOPBACK_HOST,
    RABBITMQ_PORT,
    InfluxDB1,
    IngesterProcess,
    VictoriaMetrics,
    find_program,
    free_port,
    http_request,
    unique_queue_name,
    wait_until,
)
from workload import (
    BASE_NS,
    DETAIL_HEADER,
    MS,
    REASON_HEADER,
    Workload,
    assert_nothing_lost,
    duplicates,
    ingester_env,
)

pytestmark = pytest.mark.integration

RABBITMQCTL_TIMEOUT_SECONDS = 60.0
# How long a test that restarts or reconfigures the broker waits for other
# clients to disconnect before it skips.
QUIET_BROKER_TIMEOUT_SECONDS = 30.0
# Time to store everything once the fault is gone. Backoff after a long
# failure waits up to 30 s between attempts, but every fault here is short.
STORE_ALL_TIMEOUT_SECONDS = 45.0

LOST_CONNECTION_LOG = "Lost the RabbitMQ connection"
CONNECTED_LOG = "Connected to RabbitMQ"


@pytest.fixture
def queue(broker):
    name = unique_queue_name("telemetry")
    broker.declare_queue(name)
    yield name
    broker.delete(name + ".dead")


@pytest.fixture
def own_influxdb1(tmp_path: Path) -> Iterator[InfluxDB1]:
    """InfluxDB 1.x for one test, which may kill and restart it."""
    with InfluxDB1(tmp_path / "influxdb1") as server:
        yield server


# ---------------------------------------------------------------------------
# RabbitMQ control through rabbitmqctl


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl -q ARGS`` and return its output, without table headers."""
    program = find_program("rabbitmqctl", "rabbitmq-server")
    # Only the list_* commands accept --no-table-headers.
    options = ["-q", "--no-table-headers"] if args[0].startswith("list_") else ["-q"]
    result = subprocess.run(
        [program, *options, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=RABBITMQCTL_TIMEOUT_SECONDS,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"rabbitmqctl {' '.join(args)} failed with code {result.returncode}: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout


def _rows(output: str) -> list[list[str]]:
    return [line.split("\t") for line in output.splitlines() if line.strip()]


def consumer_channel(queue: str) -> str | None:
    """Return the pid of the channel that consumes ``queue``, or None."""
    for row in _rows(rabbitmqctl("list_consumers", "queue_name", "channel_pid")):
        if row[0] == queue:
            return row[1]
    return None


def ingester_connection(queue: str) -> str:
    """Return the pid of the ingester's connection that consumes ``queue``.

    Going through the consumer of this test's own queue finds this test's
    ingester even when other ingesters are connected to the broker.
    """
    channel = wait_until(lambda: consumer_channel(queue), 10, message=f"a consumer on {queue}")
    for pid, connection in _rows(rabbitmqctl("list_channels", "pid", "connection")):
        if pid == channel:
            break
    else:
        raise AssertionError(f"channel {channel} of the consumer on {queue} is not listed")
    for row in _rows(rabbitmqctl("list_connections", "pid", "client_properties")):
        if row[0] == connection:
            assert '{"connection_name","metrics-ingester"}' in row[1]
            return connection
    raise AssertionError(f"connection {connection} of the consumer on {queue} is not listed")


def queue_counts(queue: str) -> tuple[int, int]:
    """Return (ready, unacknowledged) message counts of ``queue``."""
    output = rabbitmqctl("list_queues", "name", "messages_ready", "messages_unacknowledged")
    for row in _rows(output):
        if row[0] == queue:
            return int(row[1]), int(row[2])
    raise AssertionError(f"queue {queue} is not listed")


def wait_for_quiet_broker(own_connections: int) -> None:
    """Wait until only this test's ``own_connections`` are open, or skip the test."""
    def quiet() -> bool:
        return len(_rows(rabbitmqctl("list_connections", "pid"))) <= own_connections

    try:
        wait_until(quiet, QUIET_BROKER_TIMEOUT_SECONDS, interval=2.0)
    except AssertionError:
        others = rabbitmqctl("list_connections", "name", "client_properties")
        pytest.skip(
            "other clients stay connected to the machine's RabbitMQ, and this test would "
            f"disturb them:\n{others}"
        )


@contextlib.contextmanager
def broker_settings(**values: int) -> Iterator[None]:
    """Set ``rabbit`` application variables at run time and restore them afterwards."""
    originals = {}
    for key in values:
        originals[key] = rabbitmqctl("eval", f"application:get_env(rabbit, {key}).").strip()
    try:
        for key, value in values.items():
            rabbitmqctl("eval", f"application:set_env(rabbit, {key}, {int(value)}).")
        yield
    finally:
        for key, original in originals.items():
            if original.startswith("{ok,"):
                rabbitmqctl("eval", f"application:set_env(rabbit, {key}, {original[4:-1]}).")
            else:
                rabbitmqctl("eval", f"application:unset_env(rabbit, {key}).")


# ---------------------------------------------------------------------------
# Waiting


def wait_for_victoria(workload: Workload, store, count: int | None = None) -> None:
    expected = workload.good_count if count is None else count
    wait_until(
        lambda: workload.stored_count(workload.victoria_points(store), MS) >= expected,
        STORE_ALL_TIMEOUT_SECONDS,
        interval=0.5,
        message=f"{expected} messages of {workload.bot} stored",
    )


def wait_for_influx(workload: Workload, store: InfluxDB1, database: str) -> None:
    wait_until(
        lambda: workload.stored_count(workload.influx_points(store, database))
        == workload.good_count,
        STORE_ALL_TIMEOUT_SECONDS,
        interval=0.5,
        message=f"{workload.good_count} messages of {workload.bot} stored",
    )


def wait_for_drain(broker, queue: str) -> None:
    wait_until(
        lambda: queue_counts(queue) == (0, 0),
        STORE_ALL_TIMEOUT_SECONDS,
        interval=0.5,
        message=f"queue {queue} empty and nothing unacked",
    )


def dead_letters(broker, queue: str):
    return broker.drain(queue + ".dead")


# ---------------------------------------------------------------------------
# The store fails


def test_store_killed_mid_stream(broker, queue, own_influxdb1, tmp_path):
    """SIGKILL InfluxDB 1.6 while messages flow, then start it again.

    InfluxDB 1.x writes its WAL before it responds with 204, so a write it
    confirmed survives the kill. VictoriaMetrics 1.79 (Debian bookworm) lost
    samples that it had confirmed and flushed for queries when killed this
    way, and such a loss would count against the ingester.
    """
    database = "killed"
    own_influxdb1.create_database(database)
    workload = Workload(
        "killed-" + queue[-6:], good=150,
        bad_at={10: "not_json", 75: "unknown_type", 140: "invalid_ts"},
    )
    env = ingester_env(
        queue, own_influxdb1.url, INFLUX_API="v1", INFLUX_BUCKET=database, INFLUX_TOKEN=":",
        INFLUX_TIMEOUT_SECONDS="2",
    )

    with IngesterProcess(env, tmp_path) as ingester:
        ingester.wait_for_log(CONNECTED_LOG)
        workload.publish(broker, queue, 0, 50, pause=0.005)
        own_influxdb1.kill()
        workload.publish(broker, queue, 50, 100, pause=0.005)
        ingester.wait_for_log("ingest error: write to", timeout=10)
        own_influxdb1.start()
        workload.publish(broker, queue, 100, None, pause=0.005)

        ingester.wait_for_log("ingest resumed", timeout=STORE_ALL_TIMEOUT_SECONDS)
        wait_for_influx(workload, own_influxdb1, database)
        wait_for_drain(broker, queue)
        running = ingester.returncode is None
        code = ingester.stop()

    assert_nothing_lost(
        "store_killed", workload, workload.influx_points(own_influxdb1, database),
        dead_letters(broker, queue), queue,
    )
    assert running
    assert code == 0


FREEZE_SECONDS = 30.0


def test_store_frozen_keeps_amqp_connection(broker, queue, own_victoria, tmp_path):
    """SIGSTOP the store for 30 s: writes time out, heartbeats keep the connection."""
    workload = Workload(
        "frozen-" + queue[-6:], good=80, bad_at={5: "not_json", 60: "unknown_type"}
    )
    env = ingester_env(
        queue, own_victoria.url, RABBITMQ_HEARTBEAT_SECONDS="5", INFLUX_TIMEOUT_SECONDS="2"
    )

    with IngesterProcess(env, tmp_path) as ingester:
        ingester.wait_for_log(CONNECTED_LOG)
        connection_before = ingester_connection(queue)
        workload.publish(broker, queue, 0, 40, pause=0.005)
        wait_for_victoria(workload, own_victoria, count=39)

        own_victoria.freeze()
        frozen_at = time.monotonic()
        try:
            workload.publish(broker, queue, 40, None, pause=0.005)
            ingester.wait_for_log("timed out", timeout=10)
            time.sleep(max(0.0, FREEZE_SECONDS - (time.monotonic() - frozen_at)))
            running_while_frozen = ingester.returncode is None
            connection_while_frozen = ingester_connection(queue)
        finally:
            own_victoria.thaw()

        wait_for_victoria(workload, own_victoria)
        wait_for_drain(broker, queue)
        log = ingester.log_text()
        code = ingester.stop()

    assert_nothing_lost(
        "store_frozen_30s", workload, workload.victoria_points(own_victoria),
        dead_letters(broker, queue), queue, MS,
        duplicates=duplicates(own_victoria, workload.bot),
    )
    assert running_while_frozen
    assert connection_while_frozen == connection_before
    assert LOST_CONNECTION_LOG not in log
    assert log.count(CONNECTED_LOG) == 1
    assert code == 0


def test_wrong_token_then_fixed(broker, queue, tmp_path):
    """VictoriaMetrics with basic auth rejects the token with 401; without auth, it accepts."""
    port = free_port()
    readyz = f"http://{LOOPBACK_HOST}:{port}/readyz"
    workload = Workload("token-" + queue[-6:], good=30, bad_at={3: "not_json", 15: "invalid_ts"})

    with VictoriaMetrics(tmp_path / "victoria", username="ingester", password="secret") as store:
        env = ingester_env(queue, store.url, HTTP_PORT=str(port), INFLUX_TIMEOUT_SECONDS="2")
        with IngesterProcess(env, tmp_path) as ingester:
            ingester.wait_for_log(CONNECTED_LOG)
            workload.publish(broker, queue)
            ingester.wait_for_log("check INFLUX_TOKEN", timeout=15)
            wait_until(lambda: broker.depth(queue + ".dead") == 2, 10, message="2 dead letters")
            # Let it retry a few times, then check that it still keeps every good message unacked.
            wait_until(
                lambda: config_failures(port) >= 3, 15, message="3 failed writes"
            )
            unacked_during_outage = sum(queue_counts(queue))
            dead_during_outage = broker.depth(queue + ".dead")
            readiness_during_outage = http_request("GET", readyz)

            # The operator fixes the credentials; here the store drops its auth.
            store.auth = None
            store.restart()

            ingester.wait_for_log("ingest resumed", timeout=STORE_ALL_TIMEOUT_SECONDS)
            wait_for_victoria(workload, store)
            wait_for_drain(broker, queue)
            readiness_after = wait_until(
                lambda: (response := http_request("GET", readyz)).status == 200 and response,
                10,
                message="/readyz 200",
            )
            log = ingester.log_text()
            code = ingester.stop()

        assert_nothing_lost(
            "wrong_token_401", workload, workload.victoria_points(store),
            dead_letters(broker, queue), queue, MS,
        )

    assert unacked_during_outage == workload.good_count
    assert dead_during_outage == len(workload.bad)
    assert readiness_during_outage.status == 503
    assert "unauthorized" in readiness_during_outage.text()
    assert readiness_after.status == 200
    # Logged once: the error is rate-limited to one line a minute.
    assert log.count("check INFLUX_TOKEN") == 1
    assert code == 0


def config_failures(port: int) -> float:
    """Return the ingester's count of writes that failed for a configuration error."""
    metrics = http_request("GET", f"http://{LOOPBACK_HOST}:{port}/metrics").text()
    for line in metrics.splitlines():
        if line.startswith('ingester_write_failures_total{class="config"} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_missing_bucket_then_created(broker, queue, influxdb1, tmp_path):
    """InfluxDB 1.6 responds with 404 to a missing database; once it exists, writes resume."""
    database = "missing_" + queue[-6:]
    workload = Workload(
        "bucket-" + queue[-6:], good=30, bad_at={0: "unknown_type", 12: "not_json"}
    )
    env = ingester_env(
        queue, influxdb1.url, INFLUX_API="v1", INFLUX_BUCKET=database, INFLUX_TOKEN=":",
        INFLUX_TIMEOUT_SECONDS="2",
    )

    with IngesterProcess(env, tmp_path) as ingester:
        ingester.wait_for_log(CONNECTED_LOG)
        workload.publish(broker, queue)
        ingester.wait_for_log("check INFLUX_BUCKET", timeout=15)
        wait_until(lambda: broker.depth(queue + ".dead") == 2, 10, message="2 dead letters")
        unacked_during_outage = sum(queue_counts(queue))
        dead_during_outage = broker.depth(queue + ".dead")

        influxdb1.create_database(database)

        ingester.wait_for_log("ingest resumed", timeout=STORE_ALL_TIMEOUT_SECONDS)
        wait_for_influx(workload, influxdb1, database)
        wait_for_drain(broker, queue)
        log = ingester.log_text()
        code = ingester.stop()

    assert_nothing_lost(
        "missing_bucket_404", workload, workload.influx_points(influxdb1, database),
        dead_letters(broker, queue), queue,
    )
    assert unacked_during_outage == workload.good_count
    assert dead_during_outage == len(workload.bad)
    assert "database not found" in log
    assert log.count("check INFLUX_BUCKET") == 1
    assert code == 0


def test_type_conflict_mid_batch(broker, queue, influxdb1, tmp_path):
    """A field type conflict in message 5 of a batch of 10: only it is dead-lettered."""
    database = "conflict_" + queue[-6:]
    bot = "conflict-" + queue[-6:]
    influxdb1.create_database(database)
    # status.mode contains floats, so the culprit's string is a type conflict.
    influxdb1.write(database, f"status,bot={bot} mode=1 {BASE_NS - 2 * 10**9}")
    workload = Workload(bot, good=9, bad_at={4: "rejected_by_store", 10: "not_json"})
    # Ten messages reach the batch: the first flush happens at half the
    # prefetch of 20, before the 2 s interval runs out.
    env = ingester_env(
        queue, influxdb1.url, INFLUX_API="v1", INFLUX_BUCKET=database, INFLUX_TOKEN=":",
        FLUSH_INTERVAL_SECONDS="2",
    )
    workload.publish(broker, queue)

    with IngesterProcess(env, tmp_path) as ingester:
        wait_for_influx(workload, influxdb1, database)
        wait_for_drain(broker, queue)
        log = ingester.log_text()
        code = ingester.stop()

    letters = dead_letters(broker, queue)
    assert_nothing_lost(
        "type_conflict_v1", workload, workload.influx_points(influxdb1, database), letters, queue
    )
    (culprit,) = [properties for properties, _ in letters
                  if properties.headers[REASON_HEADER] == "rejected_by_store"]
    assert "HTTP 400" in culprit.headers[DETAIL_HEADER]
    assert "field type conflict" in culprit.headers[DETAIL_HEADER]
    modes = influxdb1.query(database, "SELECT \"mode\" FROM \"status\"")["results"][0]["series"]
    assert modes[0]["values"] == [[BASE_NS - 2 * 10**9, 1]]
    assert "rejected a batch of 10 messages" in log
    assert code == 0


# ---------------------------------------------------------------------------
# The broker fails


def test_broker_restarted(broker, queue, victoria, tmp_path):
    """``rabbitmqctl stop_app`` and ``start_app`` while messages flow."""
    wait_for_quiet_broker(own_connections=1)
    workload = Workload(
        "restart-" + queue[-6:], good=120,
        bad_at={5: "not_json", 30: "unknown_type", 100: "invalid_ts"},
    )
    env = ingester_env(queue, victoria.url)

    with IngesterProcess(env, tmp_path) as ingester:
        ingester.wait_for_log(CONNECTED_LOG)
        workload.publish(broker, queue, 0, 60, pause=0.01)
        try:
            rabbitmqctl("stop_app")
            ingester.wait_for_log(LOST_CONNECTION_LOG, timeout=15)
        finally:
            rabbitmqctl("start_app")
            broker.reconnect()
        workload.publish(broker, queue, 60, None, pause=0.005)

        wait_until(
            lambda: ingester.log_text().count(CONNECTED_LOG) == 2,
            STORE_ALL_TIMEOUT_SECONDS,
            message="the ingester to reconnect",
        )
        wait_for_victoria(workload, victoria)
        wait_for_drain(broker, queue)
        running = ingester.returncode is None
        code = ingester.stop()

    assert_nothing_lost(
        "broker_restarted", workload, workload.victoria_points(victoria),
        dead_letters(broker, queue), queue, MS,
        duplicates=duplicates(victoria, workload.bot),
    )
    assert running
    assert code == 0


def test_connection_cut(broker, queue, victoria, tmp_path):
    """``rabbitmqctl close_connection`` on the ingester's connection while messages flow."""
    workload = Workload(
        "cut-" + queue[-6:], good=120, bad_at={5: "not_json", 30: "unknown_type", 90: "invalid_ts"}
    )
    env = ingester_env(queue, victoria.url)

    with IngesterProcess(env, tmp_path) as ingester:
        ingester.wait_for_log(CONNECTED_LOG)
        workload.publish(broker, queue, 0, 60, pause=0.01)
        rabbitmqctl("close_connection", ingester_connection(queue), "fault test: connection cut")
        workload.publish(broker, queue, 60, None, pause=0.005)

        ingester.wait_for_log(LOST_CONNECTION_LOG, timeout=10)
        wait_until(
            lambda: ingester.log_text().count(CONNECTED_LOG) == 2,
            STORE_ALL_TIMEOUT_SECONDS,
            message="the ingester to reconnect",
        )
        wait_for_victoria(workload, victoria)
        wait_for_drain(broker, queue)
        log = ingester.log_text()
        code = ingester.stop()

    assert_nothing_lost(
        "connection_cut", workload, workload.victoria_points(victoria),
        dead_letters(broker, queue), queue, MS,
        duplicates=duplicates(victoria, workload.bot),
    )
    assert "fault test: connection cut" in log
    assert code == 0


# RabbitMQ 3.10 checks consumer_timeout when a channel's tick fires, every
# channel_tick_interval (60 s by default), so a 6 s timeout closes a channel
# 6 to 7 s after the delivery once the tick is 1 s. A channel reads
# consumer_timeout when it opens, and the tick interval each time it ticks.
CONSUMER_TIMEOUT_MS = 6000
CHANNEL_TICK_MS = 1000
MAX_HOLD_SECONDS = 2


def test_give_back_before_consumer_timeout(broker, queue, own_victoria, tmp_path):
    """With the store down, a plain consumer loses its channel; the ingester gives back first."""
    wait_for_quiet_broker(own_connections=1)
    control_queue = unique_queue_name("control")
    broker.declare_queue(control_queue)
    broker.publish(control_queue, b"held and never acked")
    workload = Workload(
        "timeout-" + queue[-6:], good=30, bad_at={2: "not_json", 17: "unknown_type"}
    )
    env = ingester_env(
        queue, own_victoria.url, MAX_HOLD_SECONDS=str(MAX_HOLD_SECONDS),
        INFLUX_TIMEOUT_SECONDS="1",
    )
    own_victoria.stop()

    with broker_settings(consumer_timeout=CONSUMER_TIMEOUT_MS,
                         channel_tick_interval=CHANNEL_TICK_MS):
        control = pika.BlockingConnection(
            pika.ConnectionParameters(LOOPBACK_HOST, RABBITMQ_PORT, heartbeat=0)
        )
        try:
            control_channel = control.channel()
            control_channel.basic_qos(prefetch_count=1)
            control_channel.basic_consume(control_queue, lambda *delivery: None)

            with IngesterProcess(env, tmp_path) as ingester:
                ingester.wait_for_log(CONNECTED_LOG)
                channel_before = consumer_channel(queue)
                workload.publish(broker, queue)
                published_at = time.monotonic()

                # The control consumer never acks, so the broker closes its channel.
                deadline = published_at + 3 * CONSUMER_TIMEOUT_MS / 1000
                while not control_channel.is_closed and time.monotonic() < deadline:
                    control.process_data_events(time_limit=0.2)
                control_closed_after = time.monotonic() - published_at
                # Keep the store down for one more timeout, so that the broker
                # would also close the ingester's channel if it kept a delivery too long.
                time.sleep(CONSUMER_TIMEOUT_MS / 1000 + 2 * CHANNEL_TICK_MS / 1000)
                channel_during = consumer_channel(queue)
                given_back = ingester.log_text().count("gave back")

                own_victoria.start()
                wait_for_victoria(workload, own_victoria)
                wait_for_drain(broker, queue)
                log = ingester.log_text()
                code = ingester.stop()
        finally:
            if control.is_open:
                control.close()

    assert_nothing_lost(
        "consumer_timeout", workload, workload.victoria_points(own_victoria),
        dead_letters(broker, queue), queue, MS,
        given_back=given_back, control_closed_after=f"{control_closed_after:.1f}s",
    )
    assert control_channel.is_closed
    assert control_closed_after < 2 * CONSUMER_TIMEOUT_MS / 1000
    assert given_back >= 3
    assert channel_during == channel_before
    assert LOST_CONNECTION_LOG not in log
    assert log.count(CONNECTED_LOG) == 1
    assert code == 0


# ---------------------------------------------------------------------------
# The ingester is stopped or killed


SHUTDOWN_TIMEOUT_SECONDS = 3.0
# Time from SIGTERM to exit beyond the drain bound: the consume loop wakes
# every 0.2 s and then closes the connection.
EXIT_MARGIN_SECONDS = 2.0


def _start_hung_write(broker, queue, store, workload, ingester, stored_first: int) -> None:
    """Store the first messages, freeze the store, and publish the rest.

    Returns when the ingester keeps all the rest unacked in one write that
    cannot finish.
    """
    ingester.wait_for_log(CONNECTED_LOG)
    workload.publish(broker, queue, 0, stored_first + len(workload.bad))
    wait_for_victoria(workload, store, count=stored_first)
    wait_for_drain(broker, queue)

    store.freeze()
    workload.publish(broker, queue, stored_first + len(workload.bad), None)
    unacked = workload.good_count - stored_first
    wait_until(
        lambda: queue_counts(queue) == (0, unacked), 10, message=f"{unacked} messages unacked"
    )
    # The batch flushes 0.1 s after its first delivery; then its write hangs.
    time.sleep(0.5)


def wait_for_requeued(queue: str, count: int) -> int:
    """Wait until ``count`` messages are back in the queue, none unacked, and return ``count``."""
    return wait_until(
        lambda: queue_counts(queue) == (count, 0) and count,
        10,
        message=f"{count} messages requeued",
    )


def store_rest_with_new_ingester(broker, queue, store, workload, env, tmp_path) -> int | None:
    """Run a new ingester until the store contains the workload and the queue is empty, and return its exit code."""
    with IngesterProcess(env, tmp_path) as second:
        wait_for_victoria(workload, store)
        wait_for_drain(broker, queue)
        return second.stop()


def test_sigterm_during_write(broker, queue, own_victoria, tmp_path):
    """SIGTERM while a write hangs: exit 0 within the bound, nothing unstored acked."""
    workload = Workload(
        "sigterm-" + queue[-6:], good=70, bad_at={5: "not_json", 20: "unknown_type"}
    )
    env = ingester_env(
        queue, own_victoria.url, SHUTDOWN_TIMEOUT_SECONDS=str(SHUTDOWN_TIMEOUT_SECONDS),
        INFLUX_TIMEOUT_SECONDS="10", PREFETCH_COUNT="100",
    )

    ingester = IngesterProcess(env, tmp_path).start()
    try:
        _start_hung_write(broker, queue, own_victoria, workload, ingester, stored_first=40)
        stopping_at = time.monotonic()
        ingester.terminate()
        code = ingester.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS + 10)
        stopped_after = time.monotonic() - stopping_at
        # Only the 40 messages stored before the freeze and the 2 dead letters were acked.
        returned = wait_for_requeued(queue, 30)
    finally:
        own_victoria.thaw()
        ingester.stop()
    log = ingester.log_text()

    second_code = store_rest_with_new_ingester(broker, queue, own_victoria, workload, env, tmp_path)

    assert_nothing_lost(
        "sigterm_during_write", workload, workload.victoria_points(own_victoria),
        dead_letters(broker, queue), queue, MS,
        requeued=returned, exit_code=code, exit_seconds=f"{stopped_after:.1f}",
    )
    assert code == 0
    assert stopped_after < SHUTDOWN_TIMEOUT_SECONDS + EXIT_MARGIN_SECONDS
    assert "the shutdown time limit was reached" in log
    assert second_code == 0


FORCED_EXIT_CODE = 143


def test_second_sigterm_exits_at_once(broker, queue, own_victoria, tmp_path):
    """A second SIGTERM during the drain exits with 143 at once; the broker requeues."""
    workload = Workload(
        "sigterm2-" + queue[-6:], good=70, bad_at={5: "not_json", 20: "invalid_ts"}
    )
    # The default 20 s drain bound, which the second signal cuts short.
    env = ingester_env(
        queue, own_victoria.url, INFLUX_TIMEOUT_SECONDS="10", PREFETCH_COUNT="100"
    )

    ingester = IngesterProcess(env, tmp_path).start()
    try:
        _start_hung_write(broker, queue, own_victoria, workload, ingester, stored_first=40)
        ingester.terminate()
        ingester.wait_for_log("Stopping:", timeout=5)
        stopping_at = time.monotonic()
        ingester.terminate()
        code = ingester.wait(timeout=5)
        stopped_after = time.monotonic() - stopping_at
        returned = wait_for_requeued(queue, 30)
    finally:
        own_victoria.thaw()
        ingester.stop()

    second_code = store_rest_with_new_ingester(broker, queue, own_victoria, workload, env, tmp_path)

    assert_nothing_lost(
        "second_sigterm", workload, workload.victoria_points(own_victoria),
        dead_letters(broker, queue), queue, MS,
        requeued=returned, exit_code=code, exit_seconds=f"{stopped_after:.1f}",
    )
    assert code == FORCED_EXIT_CODE
    assert stopped_after < EXIT_MARGIN_SECONDS
    assert second_code == 0


def test_sigkill_during_write(broker, queue, own_victoria, tmp_path):
    """SIGKILL while a write hangs: the broker requeues, a new ingester stores all."""
    workload = Workload("sigkill-" + queue[-6:], good=70, bad_at={5: "not_json", 20: "invalid_ts"})
    env = ingester_env(
        queue, own_victoria.url, INFLUX_TIMEOUT_SECONDS="10", PREFETCH_COUNT="100"
    )

    ingester = IngesterProcess(env, tmp_path).start()
    try:
        _start_hung_write(broker, queue, own_victoria, workload, ingester, stored_first=40)
        ingester.kill()
        code = ingester.wait(timeout=10)
        returned = wait_for_requeued(queue, 30)
    finally:
        own_victoria.thaw()
        ingester.stop()

    second_code = store_rest_with_new_ingester(broker, queue, own_victoria, workload, env, tmp_path)

    assert_nothing_lost(
        "sigkill_during_write", workload, workload.victoria_points(own_victoria),
        dead_letters(broker, queue), queue, MS,
        requeued=returned, duplicates=duplicates(own_victoria, workload.bot),
    )
    assert code == -9
    assert second_code == 0


def test_two_ingesters_one_killed(broker, queue, victoria, tmp_path):
    """Two ingesters share the queue; one gets SIGKILL mid-stream; the other stores all."""
    workload = Workload(
        "pair-" + queue[-6:], good=300,
        bad_at={20: "not_json", 120: "unknown_type", 280: "invalid_ts"},
    )
    env = ingester_env(queue, victoria.url)
    first = IngesterProcess(env, tmp_path / "first")
    second = IngesterProcess(env, tmp_path / "second")

    with first, second:
        first.wait_for_log(CONNECTED_LOG)
        second.wait_for_log(CONNECTED_LOG)
        workload.publish(broker, queue, 0, 150, pause=0.005)
        first.wait_for_log("ingest ok")
        first.kill()
        killed_code = first.wait(timeout=10)
        workload.publish(broker, queue, 150, None, pause=0.005)

        wait_for_victoria(workload, victoria)
        wait_for_drain(broker, queue)
        survivor_running = second.returncode is None
        survivor_log = second.log_text()
        survivor_code = second.stop()

    assert_nothing_lost(
        "two_ingesters_one_killed", workload, workload.victoria_points(victoria),
        dead_letters(broker, queue), queue, MS,
        duplicates=duplicates(victoria, workload.bot),
    )
    assert killed_code == -9
    assert survivor_running
    assert "ingest ok" in survivor_log
    assert survivor_code == 0


# ---------------------------------------------------------------------------
# The mapping process fails


def test_mapping_process_killed_mid_stream(broker, queue, victoria, tmp_path):
    """SIGKILL to the helper that maps batches: a new one starts, nothing is lost."""
    workload = Workload(
        "mapper-" + queue[-6:], good=300, bad_at={30: "not_json", 200: "unknown_type"}
    )
    # PREFETCH_COUNT 200 maps in the helper process (MAPPING_PROCESS=auto).
    env = ingester_env(queue, victoria.url, PREFETCH_COUNT="200")

    with IngesterProcess(env, tmp_path) as ingester:
        log = ingester.wait_for_log("Started the mapping process")
        helper_pid = int(re.search(r"Started the mapping process \(pid (\d+)\)", log)[1])
        workload.publish(broker, queue, 0, 150, pause=0.002)
        ingester.wait_for_log("ingest ok")
        os.kill(helper_pid, signal.SIGKILL)
        workload.publish(broker, queue, 150, None, pause=0.002)

        wait_for_victoria(workload, victoria)
        wait_for_drain(broker, queue)
        log = ingester.log_text()
        code = ingester.stop()

    assert_nothing_lost(
        "mapping_process_killed", workload, workload.victoria_points(victoria),
        dead_letters(broker, queue), queue, MS,
        duplicates=duplicates(victoria, workload.bot),
    )
    assert f"the mapping process (pid {helper_pid}) exited with code -9" in log
    assert log.count("Started the mapping process") == 2
    assert code == 0
