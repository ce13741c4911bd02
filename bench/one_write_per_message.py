"""The benchmark's baseline: the one-write-per-message design of ingester version 0.8.

One pika BlockingConnection with prefetch 20. For each message the callback
parses the JSON, builds the battery and pose points with influxdb-client's
``Point``, writes them with one synchronous ``write_api.write`` and then acks
the message alone. On any exception it nacks without requeue, so the message
is lost, as in version 0.8. It logs nothing per message, which makes it, if
anything, a little faster than the original.

Usage: python bench/one_write_per_message.py QUEUE

Settings come from the version 0.8 variables RABBITMQ_HOST, RABBITMQ_USER,
RABBITMQ_PASS, INFLUX_URL, INFLUX_TOKEN, INFLUX_ORG and INFLUX_BUCKET. It
prints ``consuming`` once subscribed and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

import pika
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

PREFETCH_COUNT = 20
POLL_INTERVAL_SECONDS = 0.2

log = logging.getLogger("one_write_per_message")


def build_points(message: dict) -> list[Point]:
    bot = message["bot"]
    ts = message["ts"]
    points = []
    battery = message.get("battery")
    if battery is not None:
        points.append(
            Point("battery")
            .tag("bot", bot)
            .field("percentage", float(battery["percentage"]))
            .field("voltage", float(battery["voltage"]))
            .field("wh", float(battery["wh"]))
            .time(ts, WritePrecision.NS)
        )
    pose = message.get("pose")
    if pose is not None:
        points.append(
            Point("pose")
            .tag("bot", bot)
            .field("x", float(pose["x"]))
            .field("y", float(pose["y"]))
            .time(ts, WritePrecision.NS)
        )
    return points


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("queue", help="queue to consume")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)

    bucket = os.environ.get("INFLUX_BUCKET", "turtlebot")
    org = os.environ.get("INFLUX_ORG", "keti")
    client = InfluxDBClient(
        url=os.environ.get("INFLUX_URL", "http://localhost:8086"),
        token=os.environ.get("INFLUX_TOKEN", ""),
        org=org,
    )
    write_api = client.write_api(write_options=SYNCHRONOUS)

    def on_message(channel, method, properties, body: bytes) -> None:
        try:
            message = json.loads(body)
            if message.get("type") != "telemetry":
                log.warning("Unknown message type: %s", message.get("type"))
                channel.basic_ack(method.delivery_tag)
                return
            write_api.write(bucket=bucket, org=org, record=build_points(message))
            channel.basic_ack(method.delivery_tag)
        except Exception as error:  # noqa: BLE001 - version 0.8 caught every exception
            log.error("ingest error: %s", error)
            channel.basic_nack(method.delivery_tag, requeue=False)

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))

    parameters = pika.ConnectionParameters(
        host=os.environ.get("RABBITMQ_HOST", "localhost"),
        credentials=pika.PlainCredentials(
            os.environ.get("RABBITMQ_USER", "guest"), os.environ.get("RABBITMQ_PASS", "guest")
        ),
    )
    connection = pika.BlockingConnection(parameters)
    channel = connection.channel()
    channel.basic_qos(prefetch_count=PREFETCH_COUNT)
    channel.basic_consume(args.queue, on_message)
    print("consuming", flush=True)

    # The same loop as channel.start_consuming(), with a way out on SIGTERM.
    while not stopping:
        connection.process_data_events(time_limit=POLL_INTERVAL_SECONDS)

    connection.close()
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
