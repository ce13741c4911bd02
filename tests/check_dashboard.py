"""Check that the Grafana dashboard only queries data the ingester produces.

Run from anywhere: ``python tests/check_dashboard.py [DASHBOARD_JSON]``.
By default the script reads deploy/grafana/dashboards/turtlebot.json and
the provisioned data sources. It collects every InfluxDB measurement,
field, tag and bucket used by the Flux queries and every Prometheus metric
and label used by the PromQL queries, and compares them with the allowed
sets below. It prints one PASS or FAIL
line per check and exits with status 1 if any check fails.

The allowed sets describe what the ingester writes; change them together
with the ingester, not to make a dashboard edit pass.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# InfluxDB measurements and the fields each one has.
ALLOWED_INFLUX_FIELDS: dict[str, set[str]] = {
    "battery": {"percentage", "voltage", "wh"},
    "pose": {"x", "y"},
}
# Tags the ingester sets on every point.
ALLOWED_INFLUX_TAGS: set[str] = {"bot"}
INFLUX_BUCKET = "turtlebot"

# Prometheus metrics the ingester exports and the labels each one has.
ALLOWED_PROMETHEUS_METRICS: dict[str, set[str]] = {
    "ingester_messages_received_total": set(),
    "ingester_points_written_total": set(),
    "ingester_dead_letters_total": {"reason"},
    "ingester_write_failures_total": {"class"},
}
# Labels Prometheus adds to every scraped series.
PROMETHEUS_TARGET_LABELS: set[str] = {"job", "instance"}

REPO_ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_PATH = REPO_ROOT / "deploy/grafana/dashboards/turtlebot.json"
DATASOURCES_PATH = REPO_ROOT / "deploy/grafana/provisioning/datasources/influxdb.yaml"

# Flux columns that every table has, in addition to the tags.
FLUX_STANDARD_COLUMNS = {"_measurement", "_field", "_start", "_stop", "_time", "_value"}

# PromQL words that look like identifiers but are not metric names.
PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "and", "or", "unless", "inf", "nan", "atan2",
}


class Report:
    """Printer of PASS/FAIL lines that counts passed and failed checks."""

    def __init__(self) -> None:
        self.failed = 0
        self.passed = 0

    def check(self, ok: bool, name: str, detail: str = "") -> bool:
        status = "PASS" if ok else "FAIL"
        line = f"{status} {name}"
        if detail:
            line += f": {detail}"
        print(line)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok


def describe_names(found: set[str], allowed: set[str], source: str) -> tuple[bool, str]:
    """Return (ok, detail) for names that must be non-empty and all allowed."""
    unknown = sorted(found - allowed)
    if not found:
        return False, f"no {source} found; allowed: {sorted(allowed)}"
    if unknown:
        return False, f"not allowed: {unknown}; allowed: {sorted(allowed)}"
    return True, "allowed"


def flux_column_values(query: str, column: str) -> tuple[set[str], bool]:
    """Return the names compared with == to a column, and whether another operator is used."""
    accessor = rf'r(?:\.{column}\b|\["{column}"\])'
    equal = set(re.findall(accessor + r'\s*==\s*"([^"]*)"', query))
    other_operator = re.search(accessor + r"\s*(?:!=|=~|!~)", query) is not None
    return equal, other_operator


def flux_group_columns(query: str) -> set[str]:
    columns: set[str] = set()
    for listing in re.findall(r"group\(\s*columns\s*:\s*\[([^\]]*)\]", query):
        columns.update(re.findall(r'"([^"]*)"', listing))
    return columns


def check_flux_query(report: Report, label: str, query: str) -> None:
    buckets = set(re.findall(r'from\(\s*bucket\s*:\s*"([^"]*)"', query))
    report.check(
        buckets == {INFLUX_BUCKET},
        f"{label} bucket",
        f"found {sorted(buckets)}, expected ['{INFLUX_BUCKET}']",
    )

    measurements, measurement_pattern = flux_column_values(query, "_measurement")
    fields, field_pattern = flux_column_values(query, "_field")
    report.check(
        not measurement_pattern and not field_pattern,
        f"{label} filters by exact names",
        "only == comparisons" if not (measurement_pattern or field_pattern)
        else "compare _measurement and _field with == only, so every name can be checked",
    )

    ok, detail = describe_names(measurements, set(ALLOWED_INFLUX_FIELDS), "_measurement filter")
    report.check(ok, f"{label} measurements {sorted(measurements)}", detail)

    allowed_fields: set[str] = set()
    for measurement in measurements & ALLOWED_INFLUX_FIELDS.keys():
        allowed_fields |= ALLOWED_INFLUX_FIELDS[measurement]
    ok, detail = describe_names(fields, allowed_fields, "_field filter")
    report.check(ok, f"{label} fields {sorted(fields)}", detail)

    group_columns = flux_group_columns(query)
    unknown_columns = sorted(group_columns - ALLOWED_INFLUX_TAGS - FLUX_STANDARD_COLUMNS)
    report.check(
        not unknown_columns,
        f"{label} group columns {sorted(group_columns)}",
        "allowed" if not unknown_columns
        else f"not allowed: {unknown_columns}; tags: {sorted(ALLOWED_INFLUX_TAGS)}",
    )


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """Return (metric names, label names) used in a PromQL expression."""
    labels: set[str] = set()

    # Label matchers: {name="value", other=~"..."}.
    for matcher_block in re.findall(r"\{([^}]*)\}", expr):
        labels.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matcher_block))
    expr = re.sub(r"\{[^}]*\}", " ", expr)

    # Grouping and vector matching: by (a, b), on (c), group_left (d).
    grouping = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
    for listing in re.findall(grouping, expr):
        labels.update(name.strip() for name in listing.split(",") if name.strip())
    expr = re.sub(grouping, " ", expr)

    # Range and subquery selectors, strings and dashboard variables.
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r'"[^"]*"', " ", expr)
    expr = re.sub(r"\$\{?[A-Za-z0-9_:]+\}?", " ", expr)

    metrics = set()
    for match in re.finditer(r"(?<![0-9.])\b([A-Za-z_:][A-Za-z0-9_:]*)\b(\s*\()?", expr):
        name, is_call = match.group(1), match.group(2)
        if is_call or name.lower() in PROMQL_KEYWORDS:
            continue
        metrics.add(name)
    return metrics, labels


def check_promql_target(report: Report, label: str, target: dict) -> None:
    expr = target.get("expr", "")
    metrics, labels = promql_names(expr)
    labels |= set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", target.get("legendFormat", "")))

    ok, detail = describe_names(metrics, set(ALLOWED_PROMETHEUS_METRICS), "metric name")
    report.check(ok, f"{label} metrics {sorted(metrics)}", detail)

    allowed_labels = set(PROMETHEUS_TARGET_LABELS)
    for metric in metrics & ALLOWED_PROMETHEUS_METRICS.keys():
        allowed_labels |= ALLOWED_PROMETHEUS_METRICS[metric]
    unknown_labels = sorted(labels - allowed_labels)
    report.check(
        not unknown_labels,
        f"{label} labels {sorted(labels)}",
        "allowed" if not unknown_labels
        else f"not allowed: {unknown_labels}; allowed for these metrics: {sorted(allowed_labels)}",
    )


def load_datasource_types(report: Report, path: Path) -> dict[str, str]:
    """Return {uid: type} of the provisioned Grafana data sources."""
    try:
        import yaml
    except ImportError:
        report.check(False, "PyYAML importable", "install requirements-checks.txt or run scripts/check-artifacts.sh")
        return {}

    with path.open(encoding="utf-8") as handle:
        provisioning = yaml.safe_load(handle)
    sources = {source["uid"]: source["type"] for source in provisioning.get("datasources", [])}
    report.check(
        bool(sources),
        f"{path.name} defines data sources",
        ", ".join(f"{uid} ({kind})" for uid, kind in sorted(sources.items())),
    )
    return sources


def iter_panels(panels: list[dict]):
    """Yield every panel, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def check_dashboard(report: Report, dashboard_path: Path, datasources_path: Path) -> None:
    with dashboard_path.open(encoding="utf-8") as handle:
        dashboard = json.load(handle)
    datasource_types = load_datasource_types(report, datasources_path)

    query_count = 0
    for panel in iter_panels(dashboard.get("panels", [])):
        if panel.get("type") == "row":
            continue
        panel_source = panel.get("datasource") or {}
        for target in panel.get("targets", []):
            query_count += 1
            label = f"panel '{panel.get('title')}' query {target.get('refId')}"
            source = target.get("datasource") or panel_source
            uid, kind = source.get("uid"), source.get("type")

            provisioned = datasource_types.get(uid) == kind
            report.check(
                provisioned,
                f"{label} data source",
                f"uid {uid!r} of type {kind!r} " + ("is provisioned" if provisioned else "is not provisioned"),
            )
            if kind == "influxdb":
                check_flux_query(report, label, target.get("query", ""))
            elif kind == "prometheus":
                check_promql_target(report, label, target)
            else:
                report.check(False, f"{label} query language", f"no checks for data source type {kind!r}")

    report.check(query_count > 0, "dashboard has queries", f"{query_count} found in {dashboard_path.name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dashboard", nargs="?", type=Path, default=DASHBOARD_PATH,
                        help="dashboard JSON file (default: %(default)s)")
    parser.add_argument("--datasources", type=Path, default=DATASOURCES_PATH,
                        help="Grafana data source provisioning file (default: %(default)s)")
    args = parser.parse_args()

    report = Report()
    check_dashboard(report, args.dashboard, args.datasources)
    print(f"check_dashboard: {report.passed} checks passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
