"""Tests of the operability features on real services.

TLS to RabbitMQ (AMQPS) and to the store (HTTPS with a custom CA), secrets
read from files, the ``/healthz``, ``/readyz`` and ``/metrics`` endpoint, JSON
log lines and configuration errors. The TLS tests make their own CA with the
``openssl`` command and add a TLS listener to the machine's running RabbitMQ
for the length of this module.
"""

import json
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services import (
    IngesterProcess,
    RabbitTlsListener,
    VictoriaMetrics,
    add_rabbitmq_user,
    delete_rabbitmq_user,
    free_port,
    http_request,
    make_certificates,
    unique_queue_name,
    wait_until,
)
from workload import BASE_NS, MS, encode, ingester_env, telemetry

from telemetry_ingester.metrics import MAX_TRACKED_ROBOTS, HealthState, Metrics
from telemetry_ingester.settings import Settings, SettingsError
from telemetry_ingester.writer import RETRY, InfluxWriter

integration = pytest.mark.integration

# One hour ago, on a whole second, so that every test's points lie in the past.

# Exit code of the ingester for invalid configuration.
EXIT_CONFIG = 2

# Maximum wait for a log line, a queue depth or an endpoint status. Generous,
# because other test runs may share the machine's RabbitMQ and CPU.
WAIT_TIMEOUT_SECONDS = 30.0

# Backoff grows to 30 s, so a retry after a long failure can take that long.
RECOVERY_TIMEOUT_SECONDS = 45.0








def run_until_logged(env, tmp_path, text):
    """Run the ingester until ``text`` is logged, stop it, and return its exit code and log."""
    ingester = IngesterProcess(env, tmp_path).start()
    try:
        ingester.wait_for_log(text, WAIT_TIMEOUT_SECONDS)
    finally:
        code = ingester.stop()
    return code, ingester.log_text()


def unique_secret(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@pytest.fixture
def queue(broker):
    name = unique_queue_name("telemetry")
    broker.declare_queue(name)
    yield name
    broker.delete(name + ".dead")


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def rabbit_tls(rabbitmq, certificates):
    """AMQPS listener on the machine's broker that requires a client certificate."""
    with RabbitTlsListener(certificates, require_client_certificate=True) as listener:
        yield listener


def wait_for_drain(broker, queue, timeout=WAIT_TIMEOUT_SECONDS):
    wait_until(lambda: broker.depth(queue) == 0, timeout, message=f"queue {queue} to drain")


def wait_for_points(store, metric, bot, count, timeout=WAIT_TIMEOUT_SECONDS):
    wait_until(
        lambda: len(store.points(metric, bot=bot)) == count,
        timeout,
        message=f"{count} points of {metric} for {bot}",
    )


def tls_env(queue, store_url, listener, ca_file, **extra):
    return ingester_env(
        queue,
        store_url,
        RABBITMQ_HOST="localhost",
        RABBITMQ_PORT=str(listener.port),
        RABBITMQ_TLS="true",
        RABBITMQ_TLS_CA_FILE=str(ca_file),
        **extra,
    )


class MetricsPage:
    """One scrape of ``/metrics``, parsed into samples."""

    def __init__(self, port: int) -> None:
        response = http_request("GET", f"http://127.0.0.1:{port}/metrics")
        assert response.status == 200, response.text()
        self.samples = {}
        for family in text_string_to_metric_families(response.text()):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                self.samples[key] = sample.value

    def value(self, name: str, **labels: str) -> float | None:
        """Return the sample with exactly these labels, or None when it is absent."""
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def total(self, name: str) -> float:
        """Return the sum of the samples named ``name`` over all label values."""
        return sum(value for (sample, _), value in self.samples.items() if sample == name)


def wait_for_metric(
    port: int, name: str, expected: float, timeout: float = WAIT_TIMEOUT_SECONDS
) -> MetricsPage:
    def reached():
        try:
            page = MetricsPage(port)
        except OSError:
            # The endpoint is not listening yet.
            return None
        return page if page.value(name) == expected else None

    return wait_until(reached, timeout, message=f"{name} == {expected}")


# ---------------------------------------------------------------------------
# AMQPS


@integration
def test_amqps_with_client_certificate(broker, queue, victoria, rabbit_tls, tmp_path):
    certificates = rabbit_tls.certificates
    bot = "amqps-" + queue[-6:]
    broker.publish(queue, encode(telemetry(bot, BASE_NS + 5 * MS)))
    env = tls_env(
        queue,
        victoria.url,
        rabbit_tls,
        certificates.ca_file,
        RABBITMQ_TLS_CERT_FILE=str(certificates.client_cert_file),
        RABBITMQ_TLS_KEY_FILE=str(certificates.client_key_file),
    )

    with IngesterProcess(env, tmp_path) as ingester:
        ingester.wait_for_log(
            f"Connected to RabbitMQ at localhost:{rabbit_tls.port}", WAIT_TIMEOUT_SECONDS
        )
        wait_for_drain(broker, queue)
        wait_for_points(victoria, "battery_percentage", bot, 1)
        log = ingester.log_text()

    assert victoria.points("battery_percentage", bot=bot) == [(BASE_NS // MS + 5, 80.0)]
    assert "Cannot connect" not in log
    assert broker.drain(queue + ".dead") == []


@integration
def test_amqps_wrong_ca_logs_and_retries(broker, queue, victoria, rabbit_tls, tmp_path):
    certificates = rabbit_tls.certificates
    other = make_certificates(tmp_path / "other", ca_name="other test CA")
    broker.publish(queue, encode(telemetry("amqps-wrong-ca", BASE_NS)))
    port = free_port()
    env = tls_env(
        queue,
        victoria.url,
        rabbit_tls,
        other.ca_file,
        RABBITMQ_TLS_CERT_FILE=str(certificates.client_cert_file),
        RABBITMQ_TLS_KEY_FILE=str(certificates.client_key_file),
        HTTP_PORT=str(port),
        LOG_LEVEL="INFO",
    )

    ingester = IngesterProcess(env, tmp_path).start()
    try:
        ingester.wait_for_log("Retry 3", WAIT_TIMEOUT_SECONDS)
        running = ingester.returncode is None
        ready = http_request("GET", f"http://127.0.0.1:{port}/readyz")
        alive = http_request("GET", f"http://127.0.0.1:{port}/healthz")
    finally:
        code = ingester.stop()
    log = ingester.log_text()

    assert running
    assert code == 0
    errors = [line for line in log.splitlines() if "Cannot connect to RabbitMQ" in line]
    assert len(errors) >= 3
    assert "CERTIFICATE_VERIFY_FAILED" in errors[0]
    assert "check RABBITMQ_TLS_CA_FILE" in errors[0]
    assert "Traceback" not in log
    assert ready.status == 503
    assert ready.text() == "RabbitMQ channel is not open\n"
    assert alive.status == 200
    assert broker.depth(queue) == 1


@integration
def test_amqps_missing_client_cert_hint(broker, queue, victoria, rabbit_tls, tmp_path):
    ca_file = rabbit_tls.certificates.ca_file
    env = tls_env(queue, victoria.url, rabbit_tls, ca_file, LOG_LEVEL="INFO")

    ingester = IngesterProcess(env, tmp_path).start()
    try:
        ingester.wait_for_log("Retry 2", WAIT_TIMEOUT_SECONDS)
        running = ingester.returncode is None
    finally:
        code = ingester.stop()
    errors = [line for line in ingester.log_text().splitlines() if "Cannot connect" in line]

    assert running
    assert code == 0
    # With TLS 1.3 the broker's certificate_required alert arrives after the
    # client's handshake, so whether pika's error text carries it depends on
    # timing. The error type and the hint do not.
    assert "IncompatibleProtocolError" in errors[0]
    assert "RABBITMQ_TLS_CERT_FILE" in errors[0]


# ---------------------------------------------------------------------------
# HTTPS to the store


@integration
def test_https_store_with_custom_ca(broker, queue, certificates, tmp_path):
    bot = "https-" + queue[-6:]
    broker.publish(queue, encode(telemetry(bot, BASE_NS + 7 * MS)))

    with VictoriaMetrics(tmp_path / "victoria", certificates=certificates) as store:
        env = ingester_env(
            queue, f"https://localhost:{store.port}", INFLUX_CA_FILE=str(certificates.ca_file)
        )
        with IngesterProcess(env, tmp_path) as ingester:
            ingester.wait_for_log("ingest ok", WAIT_TIMEOUT_SECONDS)
            wait_for_drain(broker, queue)
            log = ingester.log_text()
        points = store.points("battery_percentage", bot=bot)

    assert points == [(BASE_NS // MS + 7, 80.0)]
    assert "ingest error" not in log


@integration
def test_https_store_without_ca_retries(broker, queue, certificates, tmp_path):
    bot = "https-no-ca-" + queue[-6:]
    broker.publish(queue, encode(telemetry(bot, BASE_NS)))
    port = free_port()

    with VictoriaMetrics(tmp_path / "victoria", certificates=certificates) as store:
        env = ingester_env(
            queue,
            f"https://localhost:{store.port}",
            HTTP_PORT=str(port),
            LOG_LEVEL="INFO",
            SHUTDOWN_TIMEOUT_SECONDS="3",
        )
        ingester = IngesterProcess(env, tmp_path).start()
        try:
            ingester.wait_for_log("retry 2 in", WAIT_TIMEOUT_SECONDS)
            ready = http_request("GET", f"http://127.0.0.1:{port}/readyz")
            page = MetricsPage(port)
        finally:
            code = ingester.stop()
        log = ingester.log_text()
        points = store.points("battery_percentage", bot=bot)

    assert code == 0
    assert "ingest error: write to https://localhost" in log
    assert "CERTIFICATE_VERIFY_FAILED" in log
    assert ready.status == 503
    assert page.value("ingester_write_failures_total", **{"class": "retry"}) >= 2
    assert page.total("ingester_dead_letters_total") == 0
    assert points == []
    wait_until(
        lambda: broker.depth(queue) == 1, WAIT_TIMEOUT_SECONDS, message="the message requeued"
    )
    assert broker.drain(queue + ".dead") == []


@integration
def test_https_store_tls_failure_detail_is_one_line(certificates, tmp_path):
    with VictoriaMetrics(tmp_path / "victoria", certificates=certificates) as store:
        settings = Settings.from_env(
            {"INFLUX_URL": f"https://localhost:{store.port}", "INFLUX_TOKEN": "t"}
        )
        writer = InfluxWriter(settings)
        try:
            outcome = writer.write(b"tls_check value=1")
        finally:
            writer.close()

    assert outcome.kind == RETRY
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.detail
    assert "\n" not in outcome.detail


# ---------------------------------------------------------------------------
# Secrets from files


@pytest.fixture
def rabbitmq_user(rabbitmq):
    """A RabbitMQ user with a password of its own, deleted at teardown."""
    name = unique_queue_name("ingester-test")
    password = unique_secret("amqp-password")
    add_rabbitmq_user(name, password)
    yield name, password
    delete_rabbitmq_user(name)


@integration
def test_secret_files_work_end_to_end(broker, queue, rabbitmq_user, tmp_path):
    user, password = rabbitmq_user
    token = unique_secret("store-password")
    password_file = tmp_path / "rabbitmq-pass"
    password_file.write_text(password + "\n")
    token_file = tmp_path / "influx-token"
    token_file.write_text(f"writer:{token}\n")
    bot = "secret-" + queue[-6:]
    broker.publish(queue, encode(telemetry(bot, BASE_NS + 3 * MS)))

    with VictoriaMetrics(tmp_path / "victoria", username="writer", password=token) as store:
        env = ingester_env(
            queue,
            store.url,
            RABBITMQ_USER=user,
            RABBITMQ_PASS_FILE=str(password_file),
            INFLUX_API="v1",
            INFLUX_TOKEN_FILE=str(token_file),
        )
        del env["INFLUX_TOKEN"]
        with IngesterProcess(env, tmp_path) as ingester:
            ingester.wait_for_log("ingest ok", WAIT_TIMEOUT_SECONDS)
            wait_for_drain(broker, queue)
        log = ingester.log_text()
        points = store.points("battery_percentage", bot=bot)

    assert points == [(BASE_NS // MS + 3, 80.0)]
    assert "Settings: " in log
    assert password not in log
    assert token not in log


@integration
def test_rejected_secrets_stay_out_of_log(broker, queue, rabbitmq_user, tmp_path):
    user, _ = rabbitmq_user
    wrong_password = unique_secret("wrong-amqp-password")
    wrong_token = unique_secret("wrong-store-password")
    (tmp_path / "rabbitmq-pass").write_text(wrong_password + "\n")
    (tmp_path / "influx-token").write_text(f"writer:{wrong_token}\n")
    broker.publish(queue, encode(telemetry("secret-rejected", BASE_NS)))

    with VictoriaMetrics(tmp_path / "victoria", username="writer", password="right") as store:
        broker_env = ingester_env(
            queue,
            store.url,
            RABBITMQ_USER=user,
            RABBITMQ_PASS_FILE=str(tmp_path / "rabbitmq-pass"),
            INFLUX_TOKEN="writer:right",
            INFLUX_API="v1",
        )
        broker_code, broker_log = run_until_logged(
            broker_env, tmp_path, "check RABBITMQ_USER and RABBITMQ_PASS"
        )

        store_env = ingester_env(
            queue,
            store.url,
            INFLUX_API="v1",
            INFLUX_TOKEN_FILE=str(tmp_path / "influx-token"),
            SHUTDOWN_TIMEOUT_SECONDS="3",
        )
        del store_env["INFLUX_TOKEN"]
        store_code, store_log = run_until_logged(store_env, tmp_path, "check INFLUX_TOKEN")

    assert broker_code == 0
    assert store_code == 0
    assert wrong_password not in broker_log
    assert wrong_token not in store_log
    assert broker.drain(queue + ".dead") == []
    wait_until(
        lambda: broker.depth(queue) == 1, WAIT_TIMEOUT_SECONDS, message="the message requeued"
    )


@integration
@pytest.mark.parametrize("variable", ["RABBITMQ_PASS", "INFLUX_TOKEN"])
def test_secret_and_secret_file_both_set(variable, tmp_path):
    secret = unique_secret("inline")
    file_secret = unique_secret("from-file")
    (tmp_path / "secret").write_text(file_secret + "\n")
    env = ingester_env("unused", "http://127.0.0.1:9")
    env[variable] = secret
    env[variable + "_FILE"] = str(tmp_path / "secret")

    ingester = IngesterProcess(env, tmp_path).start()
    code = ingester.wait(WAIT_TIMEOUT_SECONDS)
    log = ingester.log_text()

    assert code == EXIT_CONFIG
    assert f"{variable} and {variable}_FILE are both set: keep only one of them" in log
    assert secret not in log
    assert file_secret not in log


@pytest.mark.parametrize(
    "content, expected",
    [
        ("pw\n", "pw"),
        ("pw\r\n", "pw"),
        ("pw", "pw"),
        (" pw with spaces \n", " pw with spaces "),
    ],
)
def test_secret_file_loses_only_line_break(content, expected, tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(content.encode("utf-8"))

    settings = Settings.from_env({"INFLUX_TOKEN": "t", "RABBITMQ_PASS_FILE": str(path)})

    assert settings.rabbitmq_pass.reveal() == expected


def test_empty_secret_file_is_an_error(tmp_path):
    path = tmp_path / "secret"
    path.write_text("\n")

    with pytest.raises(SettingsError, match="INFLUX_TOKEN_FILE is invalid: .* is empty"):
        Settings.from_env({"INFLUX_TOKEN_FILE": str(path)})


# ---------------------------------------------------------------------------
# Health and readiness


@integration
def test_readyz_follows_store_outage(broker, queue, own_victoria, tmp_path):
    bot = "ready-" + queue[-6:]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = ingester_env(queue, own_victoria.url, HTTP_PORT=str(port), INFLUX_TIMEOUT_SECONDS="2")
    published = 0

    def publish():
        nonlocal published
        broker.publish(queue, encode(telemetry(bot, BASE_NS + published * MS)))
        published += 1

    def check(path, expected_status):
        try:
            response = http_request("GET", url + path)
        except OSError:
            # The endpoint is not listening yet.
            return None
        # A scrape on every check, so that the log check below covers scrapes.
        MetricsPage(port)
        return response if response.status == expected_status else None

    with IngesterProcess(env, tmp_path) as ingester:
        for _ in range(5):
            publish()
        wait_until(lambda: check("/readyz", 200), WAIT_TIMEOUT_SECONDS, message="/readyz 200")
        wait_for_points(own_victoria, "battery_percentage", bot, 5)

        own_victoria.stop()
        alive_statuses = []

        def not_ready():
            publish()
            alive_statuses.append(http_request("GET", url + "/healthz").status)
            return check("/readyz", 503)

        outage = wait_until(not_ready, WAIT_TIMEOUT_SECONDS, interval=0.3, message="/readyz 503")
        alive_statuses.append(http_request("GET", url + "/healthz").status)

        own_victoria.start()
        publish()
        wait_until(lambda: check("/readyz", 200), RECOVERY_TIMEOUT_SECONDS, message="/readyz 200")
        alive_statuses.append(http_request("GET", url + "/healthz").status)
        wait_for_drain(broker, queue)
        wait_for_points(own_victoria, "battery_percentage", bot, published)
        log = ingester.log_text()

    assert outage.text().startswith("last write to InfluxDB failed: connection refused")
    assert set(alive_statuses) == {200}
    assert "GET /" not in log
    assert "ingest resumed" in log


def test_liveness_holds_while_reconnecting():
    now = [0.0]
    health = HealthState(clock=lambda: now[0])
    health.channel_opened()
    health.progress()

    health.channel_closed()
    now[0] += 10 * 60.0

    assert health.alive() == (True, "ok")


def test_liveness_holds_right_after_reconnect():
    now = [0.0]
    health = HealthState(clock=lambda: now[0])
    health.channel_opened()
    health.progress()
    health.channel_closed()
    now[0] += 10 * 60.0

    health.channel_opened()

    assert health.alive() == (True, "ok")


def test_liveness_fails_when_consume_loop_stalls():
    now = [0.0]
    health = HealthState(clock=lambda: now[0])
    health.channel_opened()
    health.progress()

    now[0] += 61.0

    alive, reason = health.alive()
    assert not alive
    assert reason == "consume loop made no progress for 61 s"


# ---------------------------------------------------------------------------
# Metrics


@integration
def test_metrics_count_one_run(broker, queue, victoria, tmp_path):
    suffix = queue[-6:]
    bots = [f"count-{suffix}-{n}" for n in range(3)]
    good = 12
    ms_timestamps = 4
    null_voltages = 3
    for i in range(good):
        bot = bots[i % 3]
        if i < ms_timestamps:
            document = telemetry(bot, BASE_NS // MS + i)
        else:
            document = telemetry(bot, BASE_NS + i * MS)
        if ms_timestamps <= i < ms_timestamps + null_voltages:
            document["battery"]["voltage"] = None
        broker.publish(queue, encode(document))
    bad = {"not_json": [b"{broken", b"not json"], "unknown_type": [encode({"type": "status"})]}
    bad["invalid_field"] = [encode({"type": "telemetry", "bot": bots[0], "pose": {"x": "1"}})]
    for bodies in bad.values():
        for body in bodies:
            broker.publish(queue, body)
    bad_count = sum(len(bodies) for bodies in bad.values())
    port = free_port()

    with IngesterProcess(ingester_env(queue, victoria.url, HTTP_PORT=str(port)), tmp_path):
        wait_for_drain(broker, queue)
        wait_for_metric(port, "ingester_messages_written_total", good)
        page = wait_for_metric(port, "ingester_messages_received_total", good + bad_count)

    assert page.value("ingester_points_written_total") == 2 * good
    for reason, bodies in bad.items():
        assert page.value("ingester_dead_letters_total", reason=reason) == len(bodies), reason
    assert page.total("ingester_dead_letters_total") == bad_count
    assert page.total("ingester_batches_total") > 0
    assert page.value("ingester_write_duration_seconds_count") > 0
    assert page.value("ingester_timestamps_converted_total", unit="ms") == ms_timestamps
    assert page.value("ingester_fields_skipped_total") == null_voltages
    assert page.value("ingester_redeliveries_total") == 0
    assert page.value("ingester_write_failures_total", **{"class": "retry"}) is None
    assert page.value("ingester_robots_tracked") == len(bots)
    for bot in bots:
        assert page.value("ingester_robot_last_seen_timestamp_seconds", bot=bot) > 0
    assert page.value("ingester_last_write_success_timestamp_seconds") > 0
    assert len(broker.drain(queue + ".dead")) == bad_count


@integration
def test_metrics_count_redeliveries_after_kill(broker, queue, own_victoria, tmp_path):
    bot = "redeliver-" + queue[-6:]
    count = 5
    own_victoria.stop()
    for i in range(count):
        broker.publish(queue, encode(telemetry(bot, BASE_NS + i * MS)))
    first_port = free_port()
    env = ingester_env(queue, own_victoria.url, HTTP_PORT=str(first_port))

    crashed = IngesterProcess(env, tmp_path).start()
    try:
        crashed.wait_for_log("ingest error: write to", WAIT_TIMEOUT_SECONDS)
        before = wait_for_metric(first_port, "ingester_messages_received_total", count)
        crashed.kill()
        crashed.wait()
    finally:
        crashed.stop()
    own_victoria.start()
    second_port = free_port()
    env["HTTP_PORT"] = str(second_port)

    with IngesterProcess(env, tmp_path):
        wait_for_drain(broker, queue)
        after = wait_for_metric(second_port, "ingester_messages_written_total", count)
        wait_for_points(own_victoria, "battery_percentage", bot, count)

    assert before.value("ingester_redeliveries_total") == 0
    assert before.value("ingester_write_failures_total", **{"class": "retry"}) >= 1
    assert after.value("ingester_messages_received_total") == count
    assert after.value("ingester_redeliveries_total") == count
    assert after.value("ingester_points_written_total") == 2 * count
    assert broker.drain(queue + ".dead") == []


def test_robot_last_seen_series_bounded():
    metrics = Metrics()
    extra = 3
    bots = [f"tb3-{n:04d}" for n in range(MAX_TRACKED_ROBOTS + extra)]

    for n, bot in enumerate(bots):
        metrics.robot_seen(bot, 1_700_000_000.0 + n)

    seen = {
        sample.labels["bot"]: sample.value
        for family in metrics.registry.collect()
        if family.name == "ingester_robot_last_seen_timestamp_seconds"
        for sample in family.samples
    }
    assert len(seen) == MAX_TRACKED_ROBOTS
    assert set(seen) == set(bots[extra:])
    assert seen[bots[-1]] == 1_700_000_000.0 + len(bots) - 1
    assert metrics.registry.get_sample_value("ingester_robots_tracked") == MAX_TRACKED_ROBOTS


def test_robot_seen_again_is_not_dropped_first():
    metrics = Metrics()
    for n in range(MAX_TRACKED_ROBOTS):
        metrics.robot_seen(f"tb3-{n:04d}", float(n))

    metrics.robot_seen("tb3-0000", 1000.0)
    metrics.robot_seen("tb3-new", 1001.0)

    def last_seen(bot):
        return metrics.registry.get_sample_value(
            "ingester_robot_last_seen_timestamp_seconds", {"bot": bot}
        )

    assert last_seen("tb3-0000") == 1000.0
    assert last_seen("tb3-0001") is None
    assert last_seen("tb3-new") == 1001.0


# ---------------------------------------------------------------------------
# Log format and configuration errors


def parse_json_lines(log: str) -> list[dict]:
    entries = []
    for number, line in enumerate(log.splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"log line {number} is not JSON: {line!r}") from None
        assert isinstance(entry, dict), f"log line {number} is not an object: {line!r}"
        assert set(entry) >= {"time", "level", "logger", "message"}, f"log line {number}: {line!r}"
        entries.append(entry)
    return entries


@integration
def test_json_log_lines(broker, queue, victoria, tmp_path):
    bot = "json-" + queue[-6:]
    for i in range(3):
        broker.publish(queue, encode(telemetry(bot, BASE_NS + i * MS)))
    broker.publish(queue, encode(telemetry(bot, BASE_NS // MS + 9)))
    broker.publish(queue, b"{broken")
    env = ingester_env(queue, victoria.url, LOG_FORMAT="json", LOG_LEVEL="INFO")

    with IngesterProcess(env, tmp_path) as ingester:
        wait_for_drain(broker, queue)
        wait_for_points(victoria, "battery_percentage", bot, 4)
    log = ingester.log_text()

    entries = parse_json_lines(log)
    messages = [entry["message"] for entry in entries]
    assert any(message.startswith("Starting metrics ingester") for message in messages)
    assert any(message.startswith("ingest error: delivery tag") for message in messages)
    assert any(message.startswith("ingest: bot") for message in messages)
    assert any(message.startswith("ingest stats") for message in messages)
    assert messages[-1] == "Stopped metrics ingester"
    for entry in entries:
        assert entry["time"].endswith("Z")
        assert entry["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    broker.drain(queue + ".dead")


@integration
def test_json_log_keeps_tracebacks_in_one_line(tmp_path):
    env = ingester_env(
        "unused",
        "http://127.0.0.1:9",
        RABBITMQ_PORT=str(free_port()),
        LOG_FORMAT="json",
        LOG_LEVEL="DEBUG",
    )

    code, log = run_until_logged(env, tmp_path, "Retry 2")

    assert code == 0
    entries = parse_json_lines(log)
    assert any("Traceback" in entry.get("exception", "") for entry in entries)
    errors = [entry for entry in entries if entry["message"].startswith("Cannot connect")]
    assert errors[0]["level"] == "ERROR"
    assert errors[0]["logger"] == "telemetry_ingester.consumer"
    assert "check RABBITMQ_HOST and RABBITMQ_PORT" in errors[0]["message"]


@integration
def test_json_log_of_invalid_config(tmp_path):
    env = ingester_env("unused", "http://127.0.0.1:9", LOG_FORMAT="json", PREFETCH_COUNT="abc")

    ingester = IngesterProcess(env, tmp_path).start()
    code = ingester.wait(WAIT_TIMEOUT_SECONDS)

    assert code == EXIT_CONFIG
    (entry,) = parse_json_lines(ingester.log_text())
    assert entry["level"] == "ERROR"
    assert entry["message"].startswith("Invalid configuration: PREFETCH_COUNT is invalid: 'abc'")


@integration
@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("PREFETCH_COUNT", "abc", "PREFETCH_COUNT is invalid: 'abc' is not a whole number"),
        ("RABBITMQ_PORT", "99999", "RABBITMQ_PORT is invalid: 99999 is out of range"),
        (
            "INFLUX_URL",
            "https://admin:{secret}@influxdb:8086",
            "INFLUX_URL is invalid: 'https://***@influxdb:8086'",
        ),
        (
            "RABBITMQ_PASS_FILE",
            "/nonexistent/pass",
            "RABBITMQ_PASS_FILE is invalid: '/nonexistent/pass' is not a file",
        ),
        ("RABBITMQ_TLS_CA_FILE", "/nonexistent/ca.pem", "RABBITMQ_TLS_CA_FILE is invalid"),
        ("INFLUX_TOKEN", "", "INFLUX_TOKEN is missing"),
    ],
)
def test_invalid_config_exits_2(variable, value, expected, tmp_path):
    password = unique_secret("amqp-password")
    token = unique_secret("token")
    url_secret = unique_secret("url-password")
    env = ingester_env("unused", "http://127.0.0.1:9", RABBITMQ_PASS=password, INFLUX_TOKEN=token)
    env[variable] = value.format(secret=url_secret)
    if variable == "RABBITMQ_PASS_FILE":
        del env["RABBITMQ_PASS"]

    ingester = IngesterProcess(env, tmp_path).start()
    code = ingester.wait(WAIT_TIMEOUT_SECONDS)
    log = ingester.log_text()

    assert code == EXIT_CONFIG
    assert f"Invalid configuration: {expected}" in log
    assert len(log.splitlines()) == 1
    assert password not in log
    assert token not in log
    assert url_secret not in log
