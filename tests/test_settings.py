"""Unit tests of settings read from the environment."""

import pytest

from telemetry_ingester.settings import Settings, SettingsError

BASE = {"INFLUX_TOKEN": "s3cret-token"}


def settings_from(**env):
    return Settings.from_env({**BASE, **env})


def test_defaults_match_version_0_8():
    settings = settings_from()

    assert settings.rabbitmq_host == "localhost"
    assert settings.rabbitmq_port == 5672
    assert settings.rabbitmq_vhost == "/"
    assert settings.rabbitmq_queue == "turtlebot.telemetry"
    assert settings.dead_letter_queue == "turtlebot.telemetry.dead"
    assert settings.prefetch_count == 20
    assert settings.influx_url == "http://localhost:8086"
    assert settings.influx_org == "keti"
    assert settings.influx_bucket == "turtlebot"
    assert settings.log_level == "INFO"


def test_variables_are_read():
    settings = settings_from(
        RABBITMQ_HOST="metric-collector",
        RABBITMQ_PORT="5673",
        RABBITMQ_VHOST="robots",
        RABBITMQ_USER="ingest",
        RABBITMQ_PASS="pw",
        RABBITMQ_QUEUE="fleet",
        PREFETCH_COUNT="500",
        INFLUX_URL="https://influxdb:8086/",
        INFLUX_ORG="lab",
        INFLUX_BUCKET="bots",
        LOG_LEVEL="debug",
    )

    assert settings.rabbitmq_host == "metric-collector"
    assert settings.rabbitmq_port == 5673
    assert settings.rabbitmq_vhost == "robots"
    assert settings.rabbitmq_user == "ingest"
    assert settings.rabbitmq_pass.reveal() == "pw"
    assert settings.rabbitmq_queue == "fleet"
    assert settings.dead_letter_queue == "fleet.dead"
    assert settings.prefetch_count == 500
    assert settings.influx_url == "https://influxdb:8086"
    assert settings.influx_org == "lab"
    assert settings.influx_bucket == "bots"
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("RABBITMQ_PORT", "amqp", "RABBITMQ_PORT is invalid: 'amqp'"),
        ("RABBITMQ_PORT", "70000", "RABBITMQ_PORT is invalid: 70000 is out of range"),
        ("PREFETCH_COUNT", "0", "PREFETCH_COUNT is invalid: 0 is out of range"),
        ("PREFETCH_COUNT", "65536", "PREFETCH_COUNT is invalid: 65536"),
        ("PREFETCH_COUNT", "2.5", "PREFETCH_COUNT is invalid: '2.5'"),
        ("INFLUX_URL", "influxdb:8086", "INFLUX_URL is invalid: 'influxdb:8086'"),
        ("INFLUX_URL", "ftp://influxdb", "INFLUX_URL is invalid: 'ftp://influxdb'"),
        ("INFLUX_URL", "http://influxdb:port", "INFLUX_URL is invalid"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL is invalid: 'LOUD'"),
        ("INFLUX_API", "v3", "INFLUX_API is invalid: 'v3'"),
        ("DEAD_LETTER_QUEUE", "turtlebot.telemetry", "DEAD_LETTER_QUEUE is invalid"),
        ("RABBITMQ_QUEUE", "amq.telemetry", "RABBITMQ_QUEUE is invalid"),
        ("RABBITMQ_QUEUE", "q" * 256, "RABBITMQ_QUEUE is invalid"),
        ("DEAD_LETTER_MAX_LENGTH", "-1", "DEAD_LETTER_MAX_LENGTH is invalid"),
        ("INFLUX_GZIP", "maybe", "INFLUX_GZIP is invalid: 'maybe'"),
    ],
)
def test_invalid_value_names_variable(variable, value, expected):
    with pytest.raises(SettingsError) as caught:
        settings_from(**{variable: value})

    assert expected in str(caught.value)


def test_missing_token_is_an_error():
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({})

    assert "INFLUX_TOKEN is missing" in str(caught.value)


def test_url_with_credentials_is_rejected_without_showing_them():
    with pytest.raises(SettingsError) as caught:
        settings_from(INFLUX_URL="http://admin:hunter2@influxdb:8086")

    assert "hunter2" not in str(caught.value)
    assert "INFLUX_URL is invalid" in str(caught.value)


def test_secrets_never_appear_in_repr():
    settings = settings_from(RABBITMQ_PASS="rabbit-pw-123", INFLUX_TOKEN="influx-tok-456")

    for text in (repr(settings), str(settings), settings.describe()):
        assert "rabbit-pw-123" not in text
        assert "influx-tok-456" not in text
    assert "Secret('***')" in settings.describe()


def test_blank_values_take_the_default():
    settings = settings_from(RABBITMQ_HOST="  ", PREFETCH_COUNT="")

    assert settings.rabbitmq_host == "localhost"
    assert settings.prefetch_count == 20
