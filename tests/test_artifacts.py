"""Run the offline checks of the deployment files from the test suite.

scripts/check-artifacts.sh installs its pinned tools (requirements-checks.txt)
into the running interpreter's environment. These tests skip only when a
tool is missing and pip cannot reach the package index to install it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECK_SCRIPT = REPO_ROOT / "scripts/check-artifacts.sh"
CHECK_REQUIREMENTS = REPO_ROOT / "requirements-checks.txt"
DASHBOARD_CHECK = REPO_ROOT / "tests/check_dashboard.py"
DASHBOARD = REPO_ROOT / "deploy/grafana/dashboards/turtlebot.json"

# pip messages that mean the index could not be reached, as opposed to a
# package or version that does not exist.
UNREACHABLE_INDEX = re.compile(
    r"NewConnectionError|Failed to establish a new connection|ConnectTimeout|ReadTimeout"
    r"|Max retries exceeded|Temporary failure in name resolution|Name or service not known"
    r"|Network is unreachable|ProxyError|Could not fetch URL"
)


def missing_check_tools() -> list[str]:
    """Return the pinned requirements whose installed version differs or is absent."""
    missing = []
    for line in CHECK_REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].strip()
        if not requirement:
            continue
        name, _, version = requirement.partition("==")
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            missing.append(requirement)
    return missing


@pytest.fixture(scope="module")
def check_tools() -> None:
    """Install requirements-checks.txt, or skip when the package index is unreachable."""
    if not missing_check_tools():
        return
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
         "--timeout", "20", "--retries", "1", "-r", str(CHECK_REQUIREMENTS)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    if result.returncode == 0:
        return
    output = result.stderr + result.stdout
    network_errors = [line.strip() for line in output.splitlines() if UNREACHABLE_INDEX.search(line)]
    if network_errors:
        pytest.skip(
            "pip cannot reach the package index to install requirements-checks.txt: "
            + network_errors[0][:300]
        )
    pytest.fail(f"pip install -r requirements-checks.txt failed:\n{result.stderr[-3000:]}")


def run_dashboard_check(dashboard: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(DASHBOARD_CHECK), str(dashboard)],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_check_artifacts_script_passes(check_tools: None) -> None:
    result = subprocess.run(
        ["bash", str(CHECK_SCRIPT)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True, text=True, timeout=900, check=False,
    )
    failures = [line for line in result.stdout.splitlines() if line.startswith(("FAIL", "ERROR"))]
    assert result.returncode == 0, (
        f"scripts/check-artifacts.sh exited with {result.returncode}.\n"
        + "\n".join(failures)
        + f"\n--- last output ---\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    )


def test_dashboard_check_rejects_unknown_field(check_tools: None, tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    battery_target = dashboard["panels"][0]["targets"][0]
    assert '"percentage"' in battery_target["query"]
    battery_target["query"] = battery_target["query"].replace('"percentage"', '"charge"')
    broken = tmp_path / "dashboard.json"
    broken.write_text(json.dumps(dashboard), encoding="utf-8")

    result = run_dashboard_check(broken)

    assert result.returncode == 1
    assert "FAIL" in result.stdout
    assert "not allowed: ['charge']" in result.stdout


def test_dashboard_check_rejects_unknown_metric(check_tools: None, tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    prometheus_targets = [
        target for panel in dashboard["panels"] for target in panel.get("targets", []) if "expr" in target
    ]
    assert prometheus_targets, "the dashboard has no Prometheus query to alter"
    prometheus_targets[0]["expr"] = "sum(rate(ingester_messages_total[5m]))"
    broken = tmp_path / "dashboard.json"
    broken.write_text(json.dumps(dashboard), encoding="utf-8")

    result = run_dashboard_check(broken)

    assert result.returncode == 1
    assert "not allowed: ['ingester_messages_total']" in result.stdout
