"""Measurements the benchmark takes: process CPU and memory, store counts, machine facts."""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import subprocess
import time
from collections.abc import Callable

from services import VictoriaMetrics

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU time of process ``pid``, all its threads included."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    # The command name in brackets may contain spaces, so split after it.
    fields = text[text.rindex(")") + 2:].split()
    # utime and stime are fields 14 and 15 in proc(5), and fields[0] is field 3.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_SECOND


def process_tree(pid: int) -> list[int]:
    """Return ``pid`` and the pids of all its descendants, such as the ingester's mapping process."""
    pids = [pid]
    for parent in pids:
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as children:
                    pids.extend(int(child) for child in children.read().split())
            except OSError:
                continue
    return pids


def tree_cpu_seconds(pid: int) -> float:
    """Return the CPU time of process ``pid`` and of its descendants that are still running."""
    total = 0.0
    for member in process_tree(pid):
        try:
            total += cpu_seconds(member)
        except OSError:
            continue
    return total


def rabbitmq_pid() -> int | None:
    """Return the pid of the local RabbitMQ node (the Erlang VM ``beam.smp`` running rabbit)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as comm:
                if comm.read().strip() != "beam.smp":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if b"rabbit" in cmdline.read():
                    return int(entry)
        except OSError:
            continue
    return None


def machine_busy_seconds() -> float:
    """Return the CPU time all cores of the machine have spent busy since boot."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    # The line reads "cpu user nice system idle iowait irq softirq steal ...".
    # Idle and iowait are time not busy.
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS_PER_SECOND


def own_cpu_seconds() -> float:
    """Return the CPU time of this process, all threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_for_quiet_machine(max_cores: float, window: float, timeout: float) -> float:
    """Wait until the whole machine is busy less than ``max_cores`` cores over ``window`` seconds.

    Returns the busy cores of the last window, which is above ``max_cores``
    only when ``timeout`` seconds passed first.
    """
    deadline = time.monotonic() + timeout
    while True:
        before = machine_busy_seconds()
        time.sleep(window)
        busy = (machine_busy_seconds() - before) / window
        if busy < max_cores or time.monotonic() >= deadline:
            return busy


def peak_rss_bytes(pid: int) -> int:
    """Return the peak resident set size (VmHWM) of process ``pid`` plus that of its descendants.

    The peaks of the processes may come at different moments, so the sum is
    an upper bound of their joint peak.
    """
    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/status") as status:
                total += sum(
                    int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:")
                )
        except OSError:
            continue
    return total


def count_samples(store: VictoriaMetrics, metric: str, window_seconds: int) -> int:
    """Flush the store, then return how many samples ``metric`` has in the last ``window_seconds``.

    ``nocache=1`` makes VictoriaMetrics compute a repeated query again instead
    of returning a cached result.
    """
    store.flush()
    query = f"sum(count_over_time({metric}[{window_seconds}s]))"
    response = store.request("GET", "/api/v1/query", params={"query": query, "nocache": "1"})
    if response.status != 200:
        raise RuntimeError(f"Query {query!r} failed with HTTP {response.status}: {response.text()}")
    result = response.json()["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


def export_count(store: VictoriaMetrics, metric: str) -> int:
    """Flush the store and return how many samples an export of ``metric`` contains.

    The export ignores the query latency offset, so it also counts samples
    stamped in the last 30 seconds.
    """
    return sum(len(series["values"]) for series in store.export(metric))


def poll(check: Callable[[], bool], timeout: float, interval: float, what: str) -> float:
    """Call ``check`` until it returns True and return the monotonic time it did.

    Raises TimeoutError after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return time.monotonic()
        if time.monotonic() >= deadline:
            raise TimeoutError(f"Timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of an ascending list."""
    if not sorted_values:
        raise ValueError("percentile of an empty list")
    rank = max(1, math.ceil(len(sorted_values) * fraction))
    return sorted_values[rank - 1]


def machine_facts(repository: str) -> dict[str, str]:
    """Describe the machine and the software versions of this run."""
    import influxdb_client
    import pika

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": _memory_total(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "rabbitmq": _rabbitmq_version(),
        "victoriametrics": _victoria_version(),
        "pika": pika.__version__,
        "influxdb-client": influxdb_client.__version__,
        **_git_state(repository),
    }


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_total() -> str:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _rabbitmq_version() -> str:
    try:
        completed = subprocess.run(
            ["rabbitmqctl", "version"], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return completed.stdout.strip() or "unknown"


def _victoria_version() -> str:
    # The Debian build leaves app_version empty on /metrics, so ask the package manager.
    try:
        completed = subprocess.run(
            ["dpkg-query", "--show", "--showformat=${Version}", "victoria-metrics"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return completed.stdout.strip()


def _git_state(repository: str) -> dict[str, str]:
    """Return the commit of the ingester's code and the files changed since, comma-separated."""
    try:
        commit = subprocess.run(
            ["git", "-C", repository, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", repository, "diff", "--name-only", "HEAD", "--",
             "telemetry_ingester", "ingester.py"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "changed": ""}
    return {"commit": commit, "changed": ", ".join(changed)}


def dump_json(path: str, document: object) -> None:
    with open(path, "w") as output:
        json.dump(document, output, indent=2)
        output.write("\n")
