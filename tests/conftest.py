"""Fixtures that give tests real RabbitMQ, VictoriaMetrics and InfluxDB 1.x servers.

Every server process that a fixture starts is stopped at its teardown.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from services import AMQP_URL, Broker, InfluxDB1, VictoriaMetrics, ensure_rabbitmq


@pytest.fixture(scope="session")
def rabbitmq() -> str:
    """AMQP URL of the machine's RabbitMQ, which is started first if it is down."""
    ensure_rabbitmq()
    return AMQP_URL


@pytest.fixture
def broker(rabbitmq: str) -> Iterator[Broker]:
    """Broker connection that deletes the queues it declared at teardown."""
    connection = Broker()
    try:
        yield connection
    finally:
        for queue in sorted(connection.declared_queues):
            connection.delete(queue)
        connection.close()


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    """VictoriaMetrics shared by the whole session. Tests must not stop or freeze it."""
    with VictoriaMetrics(tmp_path_factory.mktemp("victoria")) as server:
        yield server


@pytest.fixture
def own_victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """VictoriaMetrics for one test, which may stop, restart or freeze it."""
    with VictoriaMetrics(tmp_path / "victoria") as server:
        yield server


@pytest.fixture(scope="session")
def influxdb1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1]:
    """InfluxDB 1.x shared by the whole session."""
    with InfluxDB1(tmp_path_factory.mktemp("influxdb1")) as server:
        yield server
