"""The benchmark's ceiling: a consumer that only receives messages and acks them.

It does no parsing and no writing, so its rate shows how fast one consumer
on pika's BlockingConnection can receive and ack messages from this broker. Acks go
out with ``multiple=True`` once half the prefetch window is unacked or the
oldest unacked message is FLUSH_INTERVAL_SECONDS old, the same policy the
ingester uses for its batches.

Usage: python bench/ack_only_consumer.py QUEUE --prefetch 1000 [--expect N]

It prints ``consuming`` once subscribed and ``acked N messages`` when it has
acked the expected count, then keeps running until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import pika

FLUSH_INTERVAL_SECONDS = 0.1
POLL_INTERVAL_SECONDS = 0.05


class AckOnlyConsumer:
    def __init__(self, channel, prefetch: int, expect: int | None) -> None:
        self._channel = channel
        self._ack_every = max(1, prefetch // 2)
        self._expect = expect
        self._last_tag = 0
        self._unacked = 0
        self._oldest_unacked = 0.0
        self.acked = 0

    def on_message(self, channel, method, properties, body: bytes) -> None:
        if self._unacked == 0:
            self._oldest_unacked = time.monotonic()
        self._last_tag = method.delivery_tag
        self._unacked += 1
        if self._unacked >= self._ack_every:
            self.ack()

    def ack_if_due(self) -> None:
        if self._unacked and time.monotonic() - self._oldest_unacked >= FLUSH_INTERVAL_SECONDS:
            self.ack()

    def ack(self) -> None:
        self._channel.basic_ack(self._last_tag, multiple=True)
        self.acked += self._unacked
        self._unacked = 0
        if self._expect is not None and self.acked == self._expect:
            print(f"acked {self.acked} messages", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("queue", help="queue to consume")
    parser.add_argument("--prefetch", type=int, default=1000, help="basic.qos prefetch count")
    parser.add_argument("--expect", type=int, help="print a line once this many messages are acked")
    parser.add_argument("--host", default="127.0.0.1", help="RabbitMQ host (guest/guest, port 5672)")
    args = parser.parse_args()

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))

    parameters = pika.ConnectionParameters(
        host=args.host, credentials=pika.PlainCredentials("guest", "guest")
    )
    connection = pika.BlockingConnection(parameters)
    channel = connection.channel()
    channel.basic_qos(prefetch_count=args.prefetch)
    consumer = AckOnlyConsumer(channel, args.prefetch, args.expect)
    channel.basic_consume(args.queue, consumer.on_message)
    print("consuming", flush=True)

    while not stopping:
        connection.process_data_events(time_limit=POLL_INTERVAL_SECONDS)
        consumer.ack_if_due()

    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
