"""Checks that the service helpers in services.py work against the real servers."""

import uuid
from pathlib import Path

import pika.exceptions
import pytest

from services import Broker, InfluxDB1, VictoriaMetrics, http_request, unique_queue_name

pytestmark = pytest.mark.integration

# 2023-11-14T22:13:20.123456789Z. The digits below the millisecond tell whether
# a store kept full nanoseconds (InfluxDB) or truncated them (VictoriaMetrics).
TIMESTAMP_NS = 1_700_000_000_123_456_789
TIMESTAMP_MS = TIMESTAMP_NS // 1_000_000


def unique_measurement() -> str:
    return f"robot_{uuid.uuid4().hex[:8]}"


def write_v2(server: VictoriaMetrics, lines: str) -> int:
    """Write line protocol through the InfluxDB v2 API and return the HTTP status."""
    response = server.request(
        "POST",
        "/api/v2/write",
        params={"org": "o", "bucket": "b", "precision": "ns"},
        body=lines.encode(),
    )
    return response.status


def test_victoria_v2_write_then_export(victoria: VictoriaMetrics) -> None:
    measurement = unique_measurement()

    status = write_v2(victoria, f"{measurement},robot=r1,site=lab battery=0.5 {TIMESTAMP_NS}")

    assert status == 204
    series = victoria.export(f'{{__name__="{measurement}_battery"}}')
    assert len(series) == 1
    assert series[0]["metric"] == {"__name__": f"{measurement}_battery", "robot": "r1", "site": "lab"}
    assert series[0]["values"] == [0.5]
    assert series[0]["timestamps"] == [TIMESTAMP_MS]


def test_victoria_points_filter_by_label(victoria: VictoriaMetrics) -> None:
    measurement = unique_measurement()
    lines = "\n".join(
        [
            f"{measurement},robot=r1 speed=1.5 {TIMESTAMP_NS + 2_000_000}",
            f"{measurement},robot=r1 speed=1.0 {TIMESTAMP_NS}",
            f"{measurement},robot=r2 speed=9.0 {TIMESTAMP_NS}",
        ]
    )

    assert write_v2(victoria, lines) == 204

    assert victoria.points(f"{measurement}_speed", robot="r1") == [
        (TIMESTAMP_MS, 1.0),
        (TIMESTAMP_MS + 2, 1.5),
    ]
    assert victoria.points(f"{measurement}_speed", robot="r3") == []


def test_victoria_restart_keeps_data(own_victoria: VictoriaMetrics) -> None:
    measurement = unique_measurement()
    url_before = own_victoria.url
    assert write_v2(own_victoria, f"{measurement},robot=r1 battery=0.75 {TIMESTAMP_NS}") == 204
    own_victoria.flush()

    own_victoria.restart()

    assert own_victoria.url == url_before
    assert own_victoria.points(f"{measurement}_battery") == [(TIMESTAMP_MS, 0.75)]


def test_victoria_stop_refuses_connections(own_victoria: VictoriaMetrics) -> None:
    own_victoria.stop()

    with pytest.raises(OSError):
        http_request("GET", own_victoria.url + "/health", timeout=1.0)


def test_victoria_freeze_times_out_requests(own_victoria: VictoriaMetrics) -> None:
    own_victoria.freeze()

    with pytest.raises(OSError):
        http_request("GET", own_victoria.url + "/health", timeout=0.5)

    own_victoria.thaw()
    assert http_request("GET", own_victoria.url + "/health").status == 200


def test_victoria_auth_rejects_wrong_password(tmp_path: Path) -> None:
    line = f"{unique_measurement()},robot=r1 battery=1 {TIMESTAMP_NS}".encode()
    write_path = "/api/v2/write?org=o&bucket=b&precision=ns"

    with VictoriaMetrics(tmp_path, username="ingester", password="secret") as server:
        wrong = http_request("POST", server.url + write_path, body=line, auth=("ingester", "wrong"))
        missing = http_request("POST", server.url + write_path, body=line)
        right = http_request("POST", server.url + write_path, body=line, auth=("ingester", "secret"))

    assert wrong.status == 401
    assert missing.status == 401
    assert right.status == 204


def test_influxdb1_roundtrip_keeps_nanoseconds(influxdb1: InfluxDB1) -> None:
    database = f"test_{uuid.uuid4().hex[:8]}"
    influxdb1.create_database(database)

    influxdb1.write(database, f'robot,robot=r1 battery=0.5,state="ok" {TIMESTAMP_NS}')
    result = influxdb1.query(database, "SELECT battery, state, robot FROM robot")

    series = result["results"][0]["series"]
    assert len(series) == 1
    assert series[0]["columns"] == ["time", "battery", "state", "robot"]
    assert series[0]["values"] == [[TIMESTAMP_NS, 0.5, "ok", "r1"]]


def test_influxdb1_restart_keeps_data(tmp_path: Path) -> None:
    with InfluxDB1(tmp_path) as server:
        ports_before = (server.port, server.rpc_port)
        server.create_database("telemetry")
        server.write("telemetry", f"robot,robot=r1 battery=0.25 {TIMESTAMP_NS}")

        server.restart()

        assert (server.port, server.rpc_port) == ports_before
        result = server.query("telemetry", "SELECT battery FROM robot")
    assert result["results"][0]["series"][0]["values"] == [[TIMESTAMP_NS, 0.25]]


def test_influxdb1_query_error_raises(influxdb1: InfluxDB1) -> None:
    with pytest.raises(RuntimeError, match="database not found"):
        influxdb1.query("no_such_database", "SELECT * FROM robot")


def test_broker_publish_depth_drain(broker: Broker) -> None:
    queue = unique_queue_name("test.services")
    broker.declare_queue(queue)

    broker.publish(queue, b'{"battery": 0.5}', content_type="application/json")
    broker.publish(queue, b"second", headers={"robot": "r1"})

    assert broker.depth(queue) == 2
    messages = broker.drain(queue)
    assert [body for _, body in messages] == [b'{"battery": 0.5}', b"second"]
    assert [properties.delivery_mode for properties, _ in messages] == [2, 2]
    assert messages[0][0].content_type == "application/json"
    assert messages[1][0].headers == {"robot": "r1"}
    assert broker.depth(queue) == 0


def test_broker_delete_removes_queue(broker: Broker) -> None:
    queue = unique_queue_name("test.services")
    broker.declare_queue(queue)

    broker.delete(queue)

    assert queue not in broker.declared_queues
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="NOT_FOUND"):
        broker.depth(queue)
    assert broker.channel.is_open
