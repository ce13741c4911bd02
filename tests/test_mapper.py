"""Tests of the mapping process (telemetry_ingester/mapper.py), a real helper process each."""

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from services import wait_until
from telemetry_ingester import mapper as mapper_module
from telemetry_ingester.mapper import (
    InProcessMapper,
    MapperError,
    ProcessMapper,
    map_batch,
    start_mapper,
)
from workload import BASE_NS, encode, telemetry

RECEIVED_NS = BASE_NS + 5_000_000_000

# Valid and invalid messages, a ts in milliseconds and a skipped field.
REQUESTS = [
    (encode(telemetry("tb3-001", BASE_NS)), None, RECEIVED_NS),
    (b"{not json", None, RECEIVED_NS),
    (encode(telemetry("tb3-002", BASE_NS // 1_000_000, x=1.5)), None, RECEIVED_NS + 1),
    (encode({"type": "telemetry", "bot": "tb3-001", "ts": BASE_NS, "extra": {"_hidden": 1, "v": 2}}), None, RECEIVED_NS + 2),
    (encode({"type": "status", "bot": "tb3-003"}), None, RECEIVED_NS + 3),
]


@pytest.fixture
def helper():
    mapper = ProcessMapper(timeout=1.0)
    mapper.start()
    yield mapper
    mapper.close()


def is_running(pid: int) -> bool:
    """Return whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_map_batch_collects_results():
    batch = map_batch(REQUESTS)

    assert batch.bots == ["tb3-001", "tb3-002", "tb3-001"]
    assert batch.points == [2, 2, 1]
    assert batch.chunks[2] == f"extra,bot=tb3-001 v=2.0 {BASE_NS}".encode()
    assert [(index, reason) for index, reason, _, _ in batch.invalid] == [
        (1, "not_json"),
        (4, "unknown_type"),
    ]
    assert batch.invalid[1][3] == "tb3-003"
    assert batch.last_seen == {"tb3-001": RECEIVED_NS + 2, "tb3-002": RECEIVED_NS + 1}
    assert batch.skipped_fields == 1
    assert batch.converted == {"ms": 1}
    assert batch.first_conversions == {"tb3-002": ("ms", 2)}


def test_helper_maps_like_this_process(helper):
    mapped = helper.map(REQUESTS, threading.Event())

    assert mapped == map_batch(REQUESTS)
    assert mapped == InProcessMapper().map(REQUESTS, threading.Event())


def test_killed_helper_is_replaced(helper, caplog):
    first_pid = helper.pid
    os.kill(first_pid, signal.SIGKILL)
    wait_until(lambda: not is_running(first_pid), 5, message="the helper to exit")

    with caplog.at_level(logging.ERROR, logger="telemetry_ingester.mapper"):
        mapped = helper.map(REQUESTS, threading.Event())

    assert mapped == map_batch(REQUESTS)
    assert helper.pid != first_pid
    assert f"the mapping process (pid {first_pid}) exited with code -9" in caplog.text
    assert "starting a new mapping process" in caplog.text


def test_hung_helper_is_replaced(helper, caplog):
    first_pid = helper.pid
    os.kill(first_pid, signal.SIGSTOP)

    with caplog.at_level(logging.ERROR, logger="telemetry_ingester.mapper"):
        mapped = helper.map(REQUESTS, threading.Event())

    assert mapped == map_batch(REQUESTS)
    assert helper.pid != first_pid
    assert "has not replied in 1 s" in caplog.text
    wait_until(lambda: not is_running(first_pid), 5, message="the hung helper to be killed")


def test_send_to_stopped_helper_times_out(helper, caplog):
    """A batch larger than the socket buffer cannot be sent to a helper that stopped reading."""
    first_pid = helper.pid
    os.kill(first_pid, signal.SIGSTOP)
    # Distinct bodies, because pickle would send a repeated one only once.
    large = [(encode(telemetry("tb3-001", BASE_NS + i)), None, RECEIVED_NS) for i in range(20_000)]

    with caplog.at_level(logging.ERROR, logger="telemetry_ingester.mapper"):
        mapped = helper.map(large, threading.Event())

    assert len(mapped.chunks) == len(large)
    assert helper.pid != first_pid
    assert f"the mapping process (pid {first_pid}) exited" in caplog.text
    wait_until(lambda: not is_running(first_pid), 5, message="the stopped helper to be killed")


def test_abort_while_waiting_returns_none(helper):
    first_pid = helper.pid
    os.kill(first_pid, signal.SIGSTOP)
    abort = threading.Event()
    threading.Timer(0.3, abort.set).start()

    started = time.monotonic()
    mapped = helper.map(REQUESTS, abort)

    assert mapped is None
    assert time.monotonic() - started < 0.9
    assert helper.pid is None
    wait_until(lambda: not is_running(first_pid), 5, message="the abandoned helper to be killed")
    # The next batch gets a new helper.
    assert helper.map(REQUESTS, threading.Event()) == map_batch(REQUESTS)


def test_failure_in_helper_raises():
    # A body that is not bytes makes map_message fail with a TypeError.
    bad_requests = [("a str, not bytes", None, RECEIVED_NS)]
    mapper = ProcessMapper()
    mapper.start()
    try:
        with pytest.raises(MapperError, match="TypeError"):
            mapper.map(bad_requests, threading.Event())
        # The helper survives a failed batch.
        assert mapper.map(REQUESTS, threading.Event()) == map_batch(REQUESTS)
    finally:
        mapper.close()


def test_helper_ignores_sigint_and_sigterm(helper):
    # After its first reply the helper has set up its signal handling.
    assert helper.map(REQUESTS, threading.Event()) == map_batch(REQUESTS)
    pid = helper.pid
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.3)

    assert is_running(pid)
    assert helper.map(REQUESTS, threading.Event()) == map_batch(REQUESTS)
    assert helper.pid == pid


def test_close_stops_helper():
    mapper = ProcessMapper()
    mapper.start()
    pid = mapper.pid

    mapper.close()

    assert mapper.pid is None
    assert not is_running(pid)


def test_helper_exits_when_parent_is_killed(tmp_path):
    script = (
        "import sys, time\n"
        "from telemetry_ingester.mapper import ProcessMapper\n"
        "mapper = ProcessMapper()\n"
        "mapper.start()\n"
        "print(mapper.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=mapper_module.PACKAGE_PARENT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        helper_pid = int(parent.stdout.readline())
        assert is_running(helper_pid)
        parent.kill()
        parent.wait()
        wait_until(lambda: not is_running(helper_pid), 5, message="the orphaned helper to exit")
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()


def test_start_mapper_chooses_process():
    in_process = start_mapper(False)
    helper = start_mapper(True)
    try:
        assert isinstance(in_process, InProcessMapper)
        assert isinstance(helper, ProcessMapper)
        assert is_running(helper.pid)
    finally:
        helper.close()


def test_start_mapper_falls_back_in_process(monkeypatch, caplog):
    def fail_to_start(*args, **kwargs):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(mapper_module.subprocess, "Popen", fail_to_start)
    with caplog.at_level(logging.WARNING, logger="telemetry_ingester.mapper"):
        mapper = start_mapper(True)

    assert isinstance(mapper, InProcessMapper)
    assert "Cannot start the mapping process" in caplog.text
    assert "Resource temporarily unavailable" in caplog.text
