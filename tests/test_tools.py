"""Integration tests of the operator commands, run as ``python ingester.py ...``.

Each command runs as a subprocess with a minimal environment against the
machine's RabbitMQ and a real store: VictoriaMetrics in the role of
InfluxDB 2.x, or InfluxDB 1.6.
"""

import json
import os
import pty
import signal
import subprocess
import sys

import pytest

from services import (
    INHERITED_ENVIRONMENT,
    REPOSITORY_ROOT,
    free_port,
    unique_queue_name,
    wait_until,
)

pytestmark = pytest.mark.integration

INFLUX_TOKEN = "tools-test-token-5f2c"
COMMAND_TIMEOUT_SECONDS = 60

README_MESSAGE = {
    "type": "telemetry",
    "ts": 1733300000123456789,
    "bot": "tb3-007",
    "battery": {"percentage": 80.0, "voltage": 12.6, "wh": 50.0},
    "pose": {"x": 1.5, "y": 2.3},
}
README_LINES = [
    "battery,bot=tb3-007 percentage=80.0,voltage=12.6,wh=50.0 1733300000123456789",
    "pose,bot=tb3-007 x=1.5,y=2.3 1733300000123456789",
]


def tool_env(queue, store_url="http://127.0.0.1:1", **extra):
    env = {key: os.environ[key] for key in INHERITED_ENVIRONMENT if key in os.environ}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "RABBITMQ_HOST": "127.0.0.1",
            "RABBITMQ_QUEUE": queue,
            "INFLUX_URL": store_url,
            "INFLUX_TOKEN": INFLUX_TOKEN,
            "INFLUX_ORG": "keti",
            "INFLUX_BUCKET": "turtlebot",
            "INFLUX_TIMEOUT_SECONDS": "5",
        }
    )
    env.update(extra)
    return env


def run_tool(args, env, stdin=subprocess.DEVNULL):
    return subprocess.run(
        [sys.executable, "ingester.py", *args],
        cwd=REPOSITORY_ROOT,
        env=env,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
    )


def output_lines(result):
    return result.stdout.splitlines()


def line_of(result, check_name):
    """Return the one output line of ``check_name``, such as "RabbitMQ queue"."""
    matches = [line for line in output_lines(result) if line[5:].startswith(check_name + ":")]
    assert len(matches) == 1, f"{check_name!r} in:\n{result.stdout}\n{result.stderr}"
    return matches[0]


@pytest.fixture
def queues(broker):
    """A telemetry queue and its dead-letter queue, declared as the ingester declares them."""
    queue = unique_queue_name("tools")
    dead = queue + ".dead"
    broker.declare_queue(queue)
    broker.channel.queue_declare(
        dead, durable=True, arguments={"x-max-length": 100_000, "x-overflow": "drop-head"}
    )
    broker.declared_queues.add(dead)
    return queue, dead


def dead_letter_headers(reason, at, **extra):
    headers = {
        "x-ingester-reason": reason,
        "x-ingester-detail": f"detail of {reason}",
        "x-ingester-queue": "turtlebot.telemetry",
        "x-ingester-dead-lettered-at": at,
    }
    headers.update(extra)
    return headers


def publish_dead_letters(broker, dead, letters):
    """Publish (body, reason, time) triples as the ingester dead-letters them."""
    for body, reason, at in letters:
        broker.publish(
            dead,
            body,
            headers=dead_letter_headers(reason, at, origin="robot"),
            content_type="application/json",
        )


KNOWN_DEAD_LETTERS = [
    (b"{not json", "not_json", "2026-01-01T10:00:00.000000+00:00"),
    (b'{"type": "status"}', "unknown_type", "2026-01-01T11:00:00.000000+00:00"),
    (b"[1, 2]", "not_object", "2026-01-01T12:00:00.000000+00:00"),
    (b"{still not json", "not_json", "2026-01-02T09:30:00.000000+00:00"),
    (b'{"type": "ping"}', "unknown_type", "2026-01-03T08:00:00.000000+00:00"),
    (b"\x1b[2Jbroken", "not_json", "2026-01-01T09:00:00.000000+00:00"),
]


# -- check ------------------------------------------------------------------


def test_check_passes_on_good_setup(broker, queues, own_victoria):
    queue, dead = queues
    broker.publish(queue, json.dumps(README_MESSAGE).encode())

    result = run_tool(["check"], tool_env(queue, own_victoria.url))

    assert result.returncode == 0, result.stdout + result.stderr
    assert line_of(result, "RabbitMQ connection").startswith("OK ")
    assert line_of(result, "RabbitMQ queue").startswith("OK ")
    assert "1 message ready, 0 consumers" in line_of(result, "RabbitMQ queue")
    assert "0 messages ready" in line_of(result, "RabbitMQ dead-letter queue")
    assert line_of(result, "InfluxDB server").startswith("OK ")
    bucket_line = line_of(result, "InfluxDB bucket")
    assert bucket_line.startswith("SKIP ")
    assert "does not offer the bucket API" in bucket_line
    write_line = line_of(result, "InfluxDB write")
    assert write_line.startswith("OK ")
    assert "not that the token or bucket are right" in write_line
    assert output_lines(result)[-1] == "All checks passed (5 passed, 1 skipped)"
    assert INFLUX_TOKEN not in result.stdout + result.stderr
    # The empty write stored nothing, and the check consumed nothing.
    assert own_victoria.export('{__name__=~".+"}') == []
    assert broker.depth(queue) == 1


def test_check_wrong_broker_password(queues, victoria):
    queue, _ = queues
    env = tool_env(queue, victoria.url, RABBITMQ_PASS="wrong-password-81c3")

    result = run_tool(["check"], env)

    assert result.returncode == 1
    line = line_of(result, "RabbitMQ connection")
    assert line.startswith("FAIL ")
    assert "check RABBITMQ_USER and RABBITMQ_PASS" in line
    assert "wrong-password-81c3" not in result.stdout + result.stderr
    assert line_of(result, "InfluxDB write").startswith("OK ")
    assert output_lines(result)[-1] == "1 of 6 checks failed"


def test_check_store_not_listening(queues):
    queue, _ = queues
    env = tool_env(queue, f"http://127.0.0.1:{free_port()}")

    result = run_tool(["check"], env)

    assert result.returncode == 1
    line = line_of(result, "InfluxDB server")
    assert line.startswith("FAIL ")
    assert "connection refused; check INFLUX_URL and that InfluxDB is running" in line
    assert line_of(result, "RabbitMQ queue").startswith("OK ")


def test_check_missing_queue(broker, victoria):
    queue = unique_queue_name("tools-missing")

    result = run_tool(["check"], tool_env(queue, victoria.url))

    assert result.returncode == 1
    line = line_of(result, "RabbitMQ queue")
    assert line.startswith("FAIL ")
    assert f"queue '{queue}' in vhost '/' not found" in line
    assert "or fix RABBITMQ_QUEUE" in line
    dead_line = line_of(result, "RabbitMQ dead-letter queue")
    assert dead_line.startswith("FAIL ")
    assert "or fix DEAD_LETTER_QUEUE" in dead_line
    # The passive declare created neither queue.
    with pytest.raises(Exception, match="NOT_FOUND"):
        broker.depth(queue)


def test_check_influxdb1_missing_database(queues, influxdb1):
    queue, _ = queues
    env = tool_env(queue, influxdb1.url, INFLUX_API="v1", INFLUX_BUCKET="absent_db", INFLUX_TOKEN=":")

    result = run_tool(["check"], env)

    assert result.returncode == 1
    assert "InfluxDB 1.6" in line_of(result, "InfluxDB server")
    line = line_of(result, "InfluxDB write")
    assert line.startswith("FAIL ")
    assert 'database not found: "absent_db"' in line
    assert "fix INFLUX_BUCKET" in line


def test_check_influxdb1_existing_database(queues, influxdb1):
    queue, _ = queues
    influxdb1.create_database("check_ok")
    env = tool_env(queue, influxdb1.url, INFLUX_API="v1", INFLUX_BUCKET="check_ok", INFLUX_TOKEN=":")

    result = run_tool(["check"], env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "the database exists" in line_of(result, "InfluxDB write")
    series = influxdb1.query("check_ok", "SHOW MEASUREMENTS")["results"][0]
    assert "series" not in series


def test_check_influxdb1_missing_retention_policy(queues, influxdb1):
    queue, _ = queues
    influxdb1.create_database("check_rp")
    env = tool_env(
        queue, influxdb1.url, INFLUX_API="v1", INFLUX_BUCKET="check_rp/absent", INFLUX_TOKEN=":"
    )

    result = run_tool(["check"], env)

    assert result.returncode == 1
    assert "after the '/'" in line_of(result, "InfluxDB write")


def test_check_invalid_settings_exit_2(queues):
    queue, _ = queues
    env = tool_env(queue, INFLUX_TOKEN="", PREFETCH_COUNT="lots")

    result = run_tool(["check"], env)

    assert result.returncode == 2
    assert "Invalid configuration: PREFETCH_COUNT is invalid: 'lots'" in result.stderr
    assert result.stdout == ""


# -- dry run ----------------------------------------------------------------


def test_dry_run_prints_readme_lines(broker, queues, own_victoria):
    queue, dead = queues
    broker.publish(queue, json.dumps(README_MESSAGE).encode())
    broker.publish(queue, b"{not json")

    result = run_tool(["--dry-run"], tool_env(queue, own_victoria.url))

    assert result.returncode == 0, result.stderr
    lines = output_lines(result)
    assert lines[:2] == README_LINES
    assert lines[2].startswith("# delivery tag 2: would be dead-lettered, reason not_json: ")
    assert lines[2].endswith("body 9 bytes '{not json'")
    assert lines[3].startswith("# dry run: 2 messages read from " + queue)
    wait_until(lambda: broker.depth(queue) == 2, 5, message="both messages back in the queue")
    assert broker.depth(dead) == 0
    assert own_victoria.export('{__name__=~".+"}') == []
    bodies = [body for _, body in broker.drain(queue)]
    assert bodies == [json.dumps(README_MESSAGE).encode(), b"{not json"]


def test_dry_run_limit_stops_early(broker, queues):
    queue, _ = queues
    for _ in range(3):
        broker.publish(queue, json.dumps(README_MESSAGE).encode())

    result = run_tool(["run", "--dry-run", "--limit", "1"], tool_env(queue))

    assert result.returncode == 0, result.stderr
    assert output_lines(result)[:2] == README_LINES
    assert "# dry run: 1 message read" in result.stdout
    wait_until(lambda: broker.depth(queue) == 3, 5, message="all 3 messages in the queue")


def test_dry_run_missing_queue_fails(broker):
    queue = unique_queue_name("tools-missing")

    result = run_tool(["--dry-run"], tool_env(queue))

    assert result.returncode == 1
    assert f"queue '{queue}' in vhost '/' not found" in result.stderr
    assert "fix RABBITMQ_QUEUE" in result.stderr


# -- dead-letters list and show -----------------------------------------------


def test_dead_letters_list_counts_by_reason(broker, queues):
    queue, dead = queues
    publish_dead_letters(broker, dead, KNOWN_DEAD_LETTERS)

    result = run_tool(["dead-letters", "list"], tool_env(queue))

    assert result.returncode == 0, result.stderr
    lines = output_lines(result)
    assert lines[0] == f"Dead-letter queue {dead}: 6 messages ready, 6 inspected"
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows["not_json"] == ["3", "2026-01-01T09:00:00.000+00:00", "2026-01-02T09:30:00.000+00:00"]
    assert rows["unknown_type"] == ["2", "2026-01-01T11:00:00.000+00:00", "2026-01-03T08:00:00.000+00:00"]
    assert rows["not_object"] == ["1", "2026-01-01T12:00:00.000+00:00", "2026-01-01T12:00:00.000+00:00"]
    assert len(rows) == 3
    # Browsing returned every message, in the original order.
    wait_until(lambda: broker.depth(dead) == 6, 5, message="6 dead letters back")
    assert [body for _, body in broker.drain(dead)] == [body for body, _, _ in KNOWN_DEAD_LETTERS]


def test_dead_letters_list_says_when_capped(broker, queues):
    queue, dead = queues
    publish_dead_letters(broker, dead, KNOWN_DEAD_LETTERS)

    result = run_tool(["dead-letters", "list", "--max", "2"], tool_env(queue))

    assert result.returncode == 0, result.stderr
    assert "6 messages ready, 2 inspected" in result.stdout
    assert "Only the oldest 2 of 6 messages were inspected (--max 2)" in result.stdout
    wait_until(lambda: broker.depth(dead) == 6, 5, message="6 dead letters back")


def test_dead_letters_list_empty_queue(queues):
    queue, dead = queues

    result = run_tool(["dead-letters", "list"], tool_env(queue))

    assert result.returncode == 0
    assert result.stdout == f"Dead-letter queue {dead} is empty\n"


def test_dead_letters_show_filters_and_escapes(broker, queues):
    queue, dead = queues
    publish_dead_letters(broker, dead, KNOWN_DEAD_LETTERS)

    result = run_tool(["dead-letters", "show", "--reason", "not_json", "--count", "2"], tool_env(queue))

    assert result.returncode == 0, result.stderr
    lines = output_lines(result)
    assert lines[0] == (
        "[1] reason not_json, dead-lettered at 2026-01-01T10:00:00.000+00:00, "
        "from queue turtlebot.telemetry"
    )
    assert lines[1] == "    detail: detail of not_json"
    assert lines[2] == "    body: 9 bytes, content type application/json: {not json"
    assert lines[3].startswith("[2] reason not_json, dead-lettered at 2026-01-02T09:30")
    assert lines[6] == (
        f"Showed 2 dead letters with reason not_json; 4 of 6 in {dead} inspected, "
        "and every one stays in the queue"
    )
    assert "\x1b" not in result.stdout
    wait_until(lambda: broker.depth(dead) == 6, 5, message="6 dead letters back")


def test_dead_letters_show_escapes_terminal_controls(broker, queues):
    queue, dead = queues
    publish_dead_letters(broker, dead, KNOWN_DEAD_LETTERS)

    result = run_tool(["dead-letters", "show", "--count", "10"], tool_env(queue))

    assert result.returncode == 0, result.stderr
    assert "body: 10 bytes, content type application/json: \\x1b[2Jbroken" in result.stdout
    assert "\x1b" not in result.stdout


# -- dead-letters replay -------------------------------------------------------


def test_replay_moves_one_reason_only(broker, queues):
    queue, dead = queues
    publish_dead_letters(broker, dead, KNOWN_DEAD_LETTERS)

    result = run_tool(["dead-letters", "replay", "--reason", "unknown_type", "--yes"], tool_env(queue))

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"Replayed 2 dead letters with reason unknown_type from {dead} to {queue}; "
        f"4 with other reasons stay in {dead}\n"
    )
    replayed = broker.drain(queue)
    assert [body for _, body in replayed] == [b'{"type": "status"}', b'{"type": "ping"}']
    for properties, _ in replayed:
        assert properties.headers == {"origin": "robot"}
        assert properties.content_type == "application/json"
        assert properties.delivery_mode == 2
    wait_until(lambda: broker.depth(dead) == 4, 5, message="4 dead letters left")
    left_in_dead = broker.drain(dead)
    assert [body for _, body in left_in_dead] == [
        b"{not json", b"[1, 2]", b"{still not json", b"\x1b[2Jbroken"
    ]
    for properties, _ in left_in_dead:
        assert properties.headers["x-ingester-reason"] != "unknown_type"
        assert properties.headers["x-ingester-queue"] == "turtlebot.telemetry"


def test_replay_refuses_without_tty(broker, queues):
    queue, dead = queues
    publish_dead_letters(broker, dead, KNOWN_DEAD_LETTERS)

    result = run_tool(["dead-letters", "replay"], tool_env(queue))

    assert result.returncode == 2
    assert "stdin is not a terminal" in result.stderr
    assert "pass --yes" in result.stderr
    assert broker.depth(queue) == 0
    assert broker.depth(dead) == len(KNOWN_DEAD_LETTERS)


def test_replay_absent_reason_lists_reasons_seen(broker, queues):
    queue, dead = queues
    publish_dead_letters(broker, dead, KNOWN_DEAD_LETTERS)

    result = run_tool(["dead-letters", "replay", "--reason", "invalid_ts", "--yes"], tool_env(queue))

    assert result.returncode == 0, result.stderr
    assert (
        "No dead letter had reason invalid_ts; reasons seen: not_json, not_object, unknown_type"
        in result.stdout
    )
    wait_until(lambda: broker.depth(dead) == 6, 5, message="6 dead letters back")
    assert broker.depth(queue) == 0


def test_replay_misspelled_reason_is_rejected(broker, queues):
    queue, dead = queues
    publish_dead_letters(broker, dead, KNOWN_DEAD_LETTERS)

    result = run_tool(["dead-letters", "replay", "--reason", "not-json", "--yes"], tool_env(queue))

    assert result.returncode == 2
    assert "invalid choice: 'not-json'" in result.stderr
    assert broker.depth(dead) == 6


def test_reason_choices_match_the_code():
    from telemetry_ingester import consumer, mapping
    from telemetry_ingester.cli import DEAD_LETTER_REASONS

    in_code = {value for name, value in vars(mapping).items() if name.startswith("REASON_")}
    in_code |= {consumer.REASON_REJECTED, consumer.REASON_TOO_LARGE}
    assert set(DEAD_LETTER_REASONS) == in_code


KILL_TEST_MESSAGES = 3000


def test_replay_killed_midway_loses_nothing(broker, queues):
    """At least once: after SIGKILL every body is in one of the two queues.

    Only the one message between its publisher confirm and its ack may be in
    both.
    """
    queue, dead = queues
    bodies = [f"dead letter {number:05d}".encode() for number in range(KILL_TEST_MESSAGES)]
    for body in bodies:
        broker.publish(dead, body, headers=dead_letter_headers("not_json", "2026-01-01T00:00:00+00:00"))

    replay = subprocess.Popen(
        [sys.executable, "ingester.py", "dead-letters", "replay", "--yes"],
        cwd=REPOSITORY_ROOT,
        env=tool_env(queue),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: broker.depth(queue) >= 300, 30, interval=0.01, message="replay under way")
        replay.send_signal(signal.SIGKILL)
        replay.wait(10)
    finally:
        if replay.poll() is None:
            replay.kill()
            replay.wait()

    moved_at_kill = broker.depth(queue)
    assert replay.returncode == -signal.SIGKILL
    assert moved_at_kill < KILL_TEST_MESSAGES, "replay finished before the kill; raise KILL_TEST_MESSAGES"
    wait_until(
        lambda: broker.depth(queue) + broker.depth(dead) >= KILL_TEST_MESSAGES,
        10,
        message="the broker requeues the unacked dead letters",
    )
    in_queue = [body for _, body in broker.drain(queue)]
    in_dead = [body for _, body in broker.drain(dead)]
    assert len(set(in_queue)) == len(in_queue)
    assert len(set(in_dead)) == len(in_dead)
    assert set(in_queue) | set(in_dead) == set(bodies)
    assert len(set(in_queue) & set(in_dead)) <= 1


def test_replay_stopped_by_sigterm_reports_count(broker, queues):
    queue, dead = queues
    bodies = [f"dead letter {number:05d}".encode() for number in range(KILL_TEST_MESSAGES)]
    for body in bodies:
        broker.publish(dead, body, headers=dead_letter_headers("not_json", "2026-01-01T00:00:00+00:00"))

    replay = subprocess.Popen(
        [sys.executable, "ingester.py", "dead-letters", "replay", "--yes"],
        cwd=REPOSITORY_ROOT,
        env=tool_env(queue),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: broker.depth(queue) >= 300, 30, interval=0.01, message="replay under way")
        replay.send_signal(signal.SIGTERM)
        stdout, stderr = replay.communicate(timeout=10)
    finally:
        if replay.poll() is None:
            replay.kill()
            replay.wait()

    assert replay.returncode == 128 + signal.SIGTERM, stderr
    assert "Replay stopped by SIGTERM; run the command again to replay the rest" in stdout
    replayed = int(stdout.split()[1])
    assert replayed < KILL_TEST_MESSAGES
    wait_until(
        lambda: broker.depth(queue) + broker.depth(dead) == KILL_TEST_MESSAGES,
        10,
        message="every message in exactly one queue",
    )
    in_queue = [body for _, body in broker.drain(queue)]
    in_dead = [body for _, body in broker.drain(dead)]
    assert len(in_queue) == replayed
    assert sorted(in_queue + in_dead) == bodies


# -- dead-letters purge -------------------------------------------------------


def test_purge_with_yes_empties_queue(broker, queues):
    queue, dead = queues
    publish_dead_letters(broker, dead, KNOWN_DEAD_LETTERS)

    result = run_tool(["dead-letters", "purge", "--yes"], tool_env(queue))

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Purged 6 messages from {dead}\n"
    assert broker.depth(dead) == 0


def run_with_terminal(args, env, answer):
    """Run a command whose stdin is a pseudo-terminal that receives ``answer``."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "ingester.py", *args],
            cwd=REPOSITORY_ROOT,
            env=env,
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.write(controller, answer.encode() + b"\n")
        stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT_SECONDS)
    finally:
        os.close(controller)
        os.close(terminal)
    return process.returncode, stdout, stderr


def test_purge_prompt_answer_no_keeps_messages(broker, queues):
    queue, dead = queues
    publish_dead_letters(broker, dead, KNOWN_DEAD_LETTERS)

    code, stdout, stderr = run_with_terminal(["dead-letters", "purge"], tool_env(queue), "n")

    assert code == 1
    assert f"Delete all 6 ready messages in {dead} for good? [y/N]" in stderr
    assert stdout == "Nothing purged\n"
    assert broker.depth(dead) == 6


def test_purge_prompt_answer_yes_purges(broker, queues):
    queue, dead = queues
    publish_dead_letters(broker, dead, KNOWN_DEAD_LETTERS)

    code, stdout, _ = run_with_terminal(["dead-letters", "purge"], tool_env(queue), "y")

    assert code == 0
    assert stdout == f"Purged 6 messages from {dead}\n"
    assert broker.depth(dead) == 0


def test_dead_letters_missing_queue_fails(broker):
    queue = unique_queue_name("tools-missing")

    result = run_tool(["dead-letters", "list"], tool_env(queue))

    assert result.returncode == 1
    assert f"queue '{queue}.dead' in vhost '/' not found" in result.stderr
    assert "fix DEAD_LETTER_QUEUE" in result.stderr


# -- arguments ----------------------------------------------------------------


BAD_ARGUMENTS = [
    (["--limit", "5"], "--limit and --wait apply only to --dry-run"),
    (["--dry-run", "--limit", "0"], "invalid value 0: expected a whole number from 1 to 65535"),
    (["run", "--dry-run", "--wait", "soon"], "invalid value 'soon': expected a number of seconds"),
    (["dead-letters"], "the following arguments are required: ACTION"),
    (["dead-letters", "show", "--count", "many"], "invalid value 'many': expected a whole number"),
    (["dead-letters", "list", "--max", "-3"], "invalid value -3: expected a whole number from 1"),
    (["dead-letters", "erase"], "invalid choice: 'erase'"),
    (["check", "--fast"], "unrecognized arguments: --fast"),
    (["launch"], "invalid choice: 'launch'"),
    (["--dry-run", "check"], "--dry-run, --limit and --wait apply only to the daemon, not to check"),
]


@pytest.mark.parametrize("args, message", BAD_ARGUMENTS)
def test_bad_arguments_exit_2(args, message):
    result = run_tool(args, tool_env("unused"))

    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.startswith("usage: ingester.py")


HELP_TEXTS = [
    ([], "--limit N"),
    (["run"], "stop after this many seconds without a new message"),
    (["check"], "Exits with 0 when no check failed"),
    (["dead-letters"], "ACTION"),
    (["dead-letters", "list"], "read at most the N oldest dead letters"),
    (["dead-letters", "show"], "number of dead letters to print (default: 10)"),
    (["dead-letters", "replay"], "at-least-once"),
    (["dead-letters", "purge"], "purge without asking for confirmation"),
]


@pytest.mark.parametrize("args, words", HELP_TEXTS)
def test_help_of_each_command(args, words):
    result = run_tool([*args, "--help"], tool_env("unused"))

    assert result.returncode == 0
    assert words in " ".join(result.stdout.split())
