"""The ingester against a scripted fake of InfluxDB's ``/api/v2/write``.

No real store here can be made to respond with 429 and Retry-After, 503 or
413 on demand, so ``FakeStore``, a small HTTP server on 127.0.0.1, responds
from a script and records every request. RabbitMQ and the ingester are real.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services import LOOPBACK_HOST, IngesterProcess, unique_queue_name, wait_until
from workload import REASON_HEADER, Workload, ingester_env, letters_counter, summary

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True)
class RecordedRequest:
    at: float
    """``time.monotonic()`` when the request arrived."""
    path: str
    body: bytes
    status: int

    @property
    def lines(self) -> list[str]:
        return self.body.decode("utf-8").split("\n")

    @property
    def times(self) -> list[int]:
        """Point times in the body, one per message, in order."""
        found: list[int] = []
        for line in self.lines:
            ts = int(line.rsplit(" ", 1)[1])
            if ts not in found:
                found.append(ts)
        return found


class _Handler(BaseHTTPRequestHandler):
    server: "FakeStore"

    def do_POST(self) -> None:  # noqa: N802 (name set by BaseHTTPRequestHandler)
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        answer = self.server.answer_for(self.path, body)
        self.send_response(answer.status)
        for name, value in answer.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (signature from the base class)
        """Log nothing; the test reads ``FakeStore.requests``."""


class FakeStore(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that responds to writes from a script.

    Each request takes the next ``Answer`` from ``script``. When the script is
    empty, a body longer than ``max_body_bytes`` gets 413 and any other 204.
    """

    daemon_threads = True

    def __init__(self, max_body_bytes: int | None = None) -> None:
        super().__init__((LOOPBACK_HOST, 0), _Handler)
        self.script: deque[Answer] = deque()
        self.max_body_bytes = max_body_bytes
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, name="fake-store", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK_HOST}:{self.server_address[1]}"

    def answer_for(self, path: str, body: bytes) -> Answer:
        with self._lock:
            if self.script:
                answer = self.script.popleft()
            elif self.max_body_bytes is not None and len(body) > self.max_body_bytes:
                answer = Answer(413, body=b'{"code":"request too large","message":"too large"}')
            else:
                answer = Answer(204)
            self.requests.append(RecordedRequest(time.monotonic(), path, body, answer.status))
        return answer

    def recorded(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self.requests)

    def stored_lines(self) -> Counter:
        """Count each line of line protocol that the store accepted with 204."""
        accepted = Counter()
        for request in self.recorded():
            if request.status == 204:
                accepted.update(request.lines)
        return accepted

    def __enter__(self) -> FakeStore:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def queue(broker) -> Iterator[str]:
    name = unique_queue_name("telemetry")
    broker.declare_queue(name)
    yield name
    broker.delete(name + ".dead")


def expected_lines(workload: Workload) -> Counter:
    """Return the line protocol of every good message, each once."""
    lines = Counter()
    for n in range(workload.good_count):
        ts = workload.ts(n)
        lines[f"battery,bot={workload.bot} percentage={float(n)!r},voltage=12.6,wh=50.0 {ts}"] += 1
        lines[f"pose,bot={workload.bot} x={n + 0.5!r},y=2.3 {ts}"] += 1
    return lines


def stored_messages(workload: Workload, lines: Counter) -> int:
    """Count good messages whose two lines the store accepted."""
    expected = expected_lines(workload)
    return sum(
        all(lines[line] > 0 for line in expected if line.endswith(f" {workload.ts(n)}"))
        for n in range(workload.good_count)
    )


def wait_for_all_lines(store: FakeStore, workload: Workload) -> None:
    expected = expected_lines(workload)
    wait_until(
        lambda: all(store.stored_lines()[line] >= 1 for line in expected),
        30,
        message=f"every line of {workload.good_count} messages accepted",
    )


def wait_for_drain(broker, queue: str) -> None:
    wait_until(lambda: broker.depth(queue) == 0, 20, message=f"queue {queue} to drain")


RETRY_AFTER_SECONDS = 2


# HTTP header names are case-insensitive, and some servers and proxies send
# them in lower case.
@pytest.mark.parametrize("header_name", ["Retry-After", "retry-after"])
def test_429_and_503_retried(broker, queue, tmp_path, header_name):
    workload = Workload("retry-" + queue[-6:], good=6, bad_at={2: "not_json"})
    workload.publish(broker, queue)

    with FakeStore() as store:
        store.script.extend([
            Answer(429, ((header_name, str(RETRY_AFTER_SECONDS)),),
                   b'{"code":"too many requests","message":"slow down"}'),
            Answer(503, body=b'{"code":"unavailable","message":"starting"}'),
        ])
        with IngesterProcess(ingester_env(queue, store.url), tmp_path) as ingester:
            wait_for_all_lines(store, workload)
            wait_for_drain(broker, queue)
            log = ingester.log_text()
            code = ingester.stop()
        requests = store.recorded()
        lines = store.stored_lines()

    letters = broker.drain(queue + ".dead")
    summary(
        f"fake_429_503_{header_name}", workload, stored_messages(workload, lines),
        workload.dead_count(letters), requests=len(requests),
        retry_after_wait=f"{requests[1].at - requests[0].at:.2f}s",
    )
    assert [request.status for request in requests] == [429, 503, 204]
    assert requests[1].body == requests[0].body
    assert requests[2].body == requests[0].body
    assert requests[1].at - requests[0].at >= RETRY_AFTER_SECONDS
    assert requests[0].path.startswith("/api/v2/write?")
    assert lines == expected_lines(workload)
    assert letters_counter(letters) == workload.expected_letters()
    assert "HTTP 429" in log
    assert "HTTP 503" in log
    assert code == 0


# Two messages (four lines of about 70 bytes) fit in a request, three do not.
MAX_BODY_BYTES = 350


def test_413_splits_batch_in_halves(broker, queue, tmp_path):
    workload = Workload("split-" + queue[-6:], good=10, bad_at={10: "not_json"})
    # One message that stays too large alone: a long string in its own section.
    huge_ts = workload.ts(0) - 1
    huge = (
        f'{{"type": "telemetry", "bot": "{workload.bot}", "ts": {huge_ts}, '
        f'"note": {{"text": "{"x" * MAX_BODY_BYTES}"}}}}'
    ).encode()
    workload.publish(broker, queue, 0, 4)
    broker.publish(queue, huge)
    workload.publish(broker, queue, 4, None)

    with FakeStore(max_body_bytes=MAX_BODY_BYTES) as store:
        env = ingester_env(queue, store.url, FLUSH_INTERVAL_SECONDS="2")
        with IngesterProcess(env, tmp_path) as ingester:
            wait_for_all_lines(store, workload)
            wait_for_drain(broker, queue)
            log = ingester.log_text()
            code = ingester.stop()
        requests = store.recorded()
        lines = store.stored_lines()

    letters = broker.drain(queue + ".dead")
    reasons = Counter(properties.headers[REASON_HEADER] for properties, _ in letters)
    published = workload.published + 1
    stored = stored_messages(workload, lines)
    print(
        f"FAULT-SUMMARY scenario=fake_413_split published={published} stored={stored} "
        f"dead={len(letters)} lost={published - stored - len(letters)} requests={len(requests)}"
    )
    assert lines == expected_lines(workload)
    assert reasons == Counter({"too_large": 1, "not_json": 1})
    assert huge in [body for _, body in letters]
    assert workload.bad[0].body in [body for _, body in letters]
    # Every rejected request with more than one message is sent again as its
    # first half, and its second half follows once the first is settled.
    too_large = [index for index, request in enumerate(requests) if request.status == 413]
    assert too_large
    for index in too_large:
        times = requests[index].times
        if len(times) > 1:
            assert requests[index + 1].times == times[: len(times) // 2]
            later = [request.times for request in requests[index + 1:]]
            assert times[len(times) // 2:] in later
    assert "splitting it" in log
    assert code == 0
