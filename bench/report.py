"""The benchmark's results as Markdown, in English or Korean, and their place in docs/."""

from __future__ import annotations

import dataclasses
from pathlib import Path

BEGIN_MARKER = "<!-- bench/run.py results: begin -->"
END_MARKER = "<!-- bench/run.py results: end -->"

BYTES_PER_MB = 1_000_000

# Design names, as bench/run.py gives them.
CEILING_KEY = "ceiling"
ONE_WRITE_KEY = "one-write"
DEFAULTS_KEY = "ingester-defaults"
TUNED_KEY = "ingester"

# Targets for the ingester, with the numbers that decide them.
TUNED_TO_CEILING_MIN = 0.8
DEFAULTS_TO_ONE_WRITE_MIN = 5.0
BACKLOG_FOR_MEMORY_TARGET = 1_000_000
PEAK_RSS_MAX_MB = 100.0
P99_MAX_MS = 250.0
CPU_TO_ONE_WRITE_MAX = 0.5

LABELS = {
    "en": {
        "heading_machine": "Machine and software",
        "heading_drains": "Draining a backlog",
        "heading_latency": "Latency at a steady rate",
        "heading_targets": "Targets",
        "date": "date",
        "cpu": "CPU",
        "cores": "cores",
        "memory": "memory",
        "kernel": "Linux kernel",
        "python": "Python",
        "rabbitmq": "RabbitMQ",
        "victoriametrics": "VictoriaMetrics",
        "pika": "pika",
        "influxdb-client": "influxdb-client",
        "commit": "ingester commit",
        "runtime": "run time of the benchmark",
        "columns": (
            "consumer", "PREFETCH_COUNT", "messages", "messages/s", "range of runs", "× ceiling",
            "CPU s per 100k messages", "peak RSS (MB)", "all stored and acked",
            "other load (cores)",
        ),
        CEILING_KEY: "ceiling: receive and ack only",
        ONE_WRITE_KEY: "one write per message (v0.8 design)",
        DEFAULTS_KEY: "ingester, defaults",
        "tuned": "ingester",
        "best": "best",
        "default": "default",
        "backlog": "ingester, defaults, backlog",
        "yes": "yes",
        "no": "NO: stored {stored}, left in queue {left}",
        "not_applicable": "acked (nothing to store)",
        "latency_columns": (
            "PREFETCH_COUNT", "published", "rate (messages/s)", "p50 (ms)", "p99 (ms)", "max (ms)",
            "ingester CPU (share of one core)", "peak RSS (MB)", "all stored",
            "other load (cores)",
        ),
        "target_columns": ("target", "measured", "result"),
        "target_tuned": "best tuned rate ≥ 0.8 × ceiling",
        "target_defaults": "defaults ≥ 5 × one write per message",
        "target_rss": "peak RSS ≤ 100 MB with a backlog of 1,000,000",
        "target_p99": "p99 latency ≤ 250 ms at 1,000 messages/s, defaults",
        "target_cpu": "CPU per 100k messages ≤ 0.5 × one write per message (defaults)",
        "holds": "holds",
        "misses": "**misses**",
        "not_measured": "not measured (run with `--backlog 1000000`)",
        "rss_measured": "{rss:.1f} MB with a backlog of {backlog:,}",
        "ratio": "{value:.2f} ×",
        "prefetch_note": "The best PREFETCH_COUNT in this run was {prefetch}.",
        "victoriametrics_value": "{value} (Debian package)",
        "commit_value": "{commit}",
        "commit_changed_value": "{commit} with uncommitted changes to {changed}",
        "runtime_value": "{value} min",
        "median_note": (
            "Each row of the ceiling and the ingester is the run with the median rate out "
            "of {repeat} runs, and the range shows the slowest and the fastest of them. The "
            "one-write-per-message drain and the backlog drain ran once."
        ),
    },
    "ko": {
        "heading_machine": "장비와 소프트웨어",
        "heading_drains": "쌓인 메시지 처리",
        "heading_latency": "일정한 유입 속도에서의 지연",
        "heading_targets": "목표",
        "date": "측정 일시",
        "cpu": "CPU",
        "cores": "코어 수",
        "memory": "메모리",
        "kernel": "Linux 커널",
        "python": "Python",
        "rabbitmq": "RabbitMQ",
        "victoriametrics": "VictoriaMetrics",
        "pika": "pika",
        "influxdb-client": "influxdb-client",
        "commit": "ingester 커밋",
        "runtime": "벤치마크 소요 시간",
        "columns": (
            "소비자", "PREFETCH_COUNT", "메시지 수", "messages/s", "반복 측정 범위", "상한 대비",
            "100k 메시지당 CPU 초", "최대 RSS (MB)", "전부 저장·ack 여부",
            "다른 부하 (코어)",
        ),
        CEILING_KEY: "상한: 받고 ack만 하는 소비자",
        ONE_WRITE_KEY: "메시지마다 쓰기 한 번 (v0.8 방식)",
        DEFAULTS_KEY: "ingester, 기본 설정",
        "tuned": "ingester",
        "best": "최고",
        "default": "기본값",
        "backlog": "ingester, 기본 설정, 적체",
        "yes": "예",
        "no": "아니오: 저장 {stored}, 큐 잔여 {left}",
        "not_applicable": "ack 완료 (저장 없음)",
        "latency_columns": (
            "PREFETCH_COUNT", "발행 수", "속도 (messages/s)", "p50 (ms)", "p99 (ms)", "최대 (ms)",
            "ingester CPU (코어 1개 대비)", "최대 RSS (MB)", "전부 저장",
            "다른 부하 (코어)",
        ),
        "target_columns": ("목표", "측정값", "결과"),
        "target_tuned": "튜닝한 ingester 최고 속도 ≥ 상한의 0.8배",
        "target_defaults": "기본 설정 ≥ 메시지마다 쓰기 방식의 5배",
        "target_rss": "1,000,000건 적체에서 최대 RSS ≤ 100 MB",
        "target_p99": "1,000 messages/s, 기본 설정에서 p99 지연 ≤ 250 ms",
        "target_cpu": "100k 메시지당 CPU ≤ 메시지마다 쓰기 방식의 0.5배 (기본 설정)",
        "holds": "충족",
        "misses": "**미달**",
        "not_measured": "측정 안 함 (`--backlog 1000000`으로 실행)",
        "rss_measured": "적체 {backlog:,}건에서 {rss:.1f} MB",
        "ratio": "{value:.2f}배",
        "prefetch_note": "이번 실행에서 가장 빠른 PREFETCH_COUNT는 {prefetch}입니다.",
        "victoriametrics_value": "{value} (Debian 패키지)",
        "commit_value": "{commit}",
        "commit_changed_value": "{commit} + 커밋하지 않은 변경({changed})",
        "runtime_value": "{value}분",
        "median_note": (
            "상한과 ingester 행은 {repeat}번 측정한 것 중 처리 속도가 중간값인 실행의 결과이고, "
            "범위는 가장 느린 실행과 가장 빠른 실행입니다. 메시지마다 쓰기 방식과 적체 처리는 "
            "한 번만 측정했습니다."
        ),
    },
}

FACT_KEYS = (
    "date", "cpu", "cores", "memory", "kernel", "python", "rabbitmq", "victoriametrics",
    "pika", "influxdb-client", "commit", "runtime",
)


def _facts(facts: dict[str, str], labels: dict):
    """Yield (key, text) for each machine fact, worded for the language of ``labels``."""
    for key in FACT_KEYS:
        if key == "commit":
            template = labels["commit_changed_value"] if facts.get("changed") else labels["commit_value"]
            yield key, template.format(commit=facts["commit"], changed=facts.get("changed"))
        elif key == "runtime":
            if "runtime_minutes" in facts:
                yield key, labels["runtime_value"].format(value=facts["runtime_minutes"])
        elif key == "victoriametrics":
            yield key, labels["victoriametrics_value"].format(value=facts[key])
        elif key in facts:
            yield key, facts[key]


@dataclasses.dataclass
class Results:
    facts: dict[str, str]
    drains: list  # run.DrainResult, in the order measured
    latency: object  # run.LatencyResult
    backlog: object | None  # run.DrainResult of the --backlog run
    repeat: int

    def find(self, design: str, prefetch: int | None = None):
        for drain in self.drains:
            if drain.design == design and (prefetch is None or drain.prefetch == prefetch):
                return drain
        raise LookupError(f"no {design} drain with prefetch {prefetch}")

    @property
    def ceiling(self):
        return self.find(CEILING_KEY)

    @property
    def one_write(self):
        return self.find(ONE_WRITE_KEY)

    @property
    def defaults(self):
        return self.find(DEFAULTS_KEY)

    @property
    def best_tuned(self):
        tuned = [drain for drain in self.drains if drain.design == TUNED_KEY]
        return max(tuned or [self.defaults], key=lambda drain: drain.rate)

    def as_dict(self) -> dict:
        return {
            "facts": self.facts,
            "drains": [dataclasses.asdict(d) for d in self.drains],
            "latency": dataclasses.asdict(self.latency),
            "backlog": dataclasses.asdict(self.backlog) if self.backlog else None,
        }



def render(results: Results, language: str) -> str:
    """Return the results block of the benchmark page in ``language`` ("en" or "ko")."""
    labels = LABELS[language]
    parts = [
        f"### {labels['heading_machine']}",
        "",
        *(f"- {labels[key]}: {value}" for key, value in _facts(results.facts, labels)),
        "",
        f"### {labels['heading_drains']}",
        "",
        _drain_table(results, labels),
        "",
        labels["median_note"].format(repeat=results.repeat)
        + " "
        + labels["prefetch_note"].format(prefetch=results.best_tuned.prefetch),
        "",
        f"### {labels['heading_latency']}",
        "",
        _latency_table(results.latency, labels),
        "",
        f"### {labels['heading_targets']}",
        "",
        _target_table(results, labels),
    ]
    return "\n".join(parts)


def _row(cells) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _table(columns, rows) -> str:
    lines = [_row(columns), _row("---" for _ in columns)]
    lines.extend(_row(row) for row in rows)
    return "\n".join(lines)


def _drain_table(results: Results, labels: dict) -> str:
    ceiling_rate = results.ceiling.rate
    best = results.best_tuned
    rows = []
    drains = list(results.drains)
    if results.backlog is not None:
        drains.append(results.backlog)
    for drain in drains:
        if drain is results.backlog:
            name = labels["backlog"]
        elif drain.design == TUNED_KEY:
            name = labels["tuned"]
            if drain is best:
                name += f" (**{labels['best']}**)"
        else:
            name = labels[drain.design]
        rows.append(
            (
                name,
                drain.prefetch,
                f"{drain.messages:,}",
                f"{drain.rate:,.0f}",
                _range_text(drain.run_rates),
                f"{drain.rate / ceiling_rate:.2f}",
                f"{drain.cpu_per_100k:.1f}",
                f"{drain.peak_rss_bytes / BYTES_PER_MB:.1f}",
                _stored_text(drain, labels),
                f"{drain.other_cores:.2f}",
            )
        )
    return _table(labels["columns"], rows)


def _range_text(rates: list[float]) -> str:
    if len(rates) < 2:
        return "-"
    return f"{min(rates):,.0f}–{max(rates):,.0f}"


def _stored_text(drain, labels: dict) -> str:
    if drain.left_in_queue == 0 and drain.stored is None:
        return labels["not_applicable"]
    if drain.left_in_queue == 0 and drain.stored == drain.messages:
        return labels["yes"]
    return labels["no"].format(stored=drain.stored, left=drain.left_in_queue)


def _latency_table(latency, labels: dict) -> str:
    complete = latency.recorded == latency.published and latency.stored == latency.published
    prefetch = f"{latency.prefetch} ({labels['default']})" if latency.defaults else latency.prefetch
    row = (
        prefetch,
        f"{latency.published:,}",
        f"{latency.published / latency.publish_seconds:,.0f}",
        f"{latency.p50_ms:.1f}",
        f"{latency.p99_ms:.1f}",
        f"{latency.max_ms:.1f}",
        f"{latency.cpu_share:.0%}",
        f"{latency.peak_rss_bytes / BYTES_PER_MB:.1f}",
        labels["yes"] if complete else labels["no"].format(stored=latency.stored, left="-"),
        f"{latency.other_cores:.2f}",
    )
    return _table(labels["latency_columns"], [row])


def _target_table(results: Results, labels: dict) -> str:
    def verdict(holds: bool) -> str:
        return labels["holds"] if holds else labels["misses"]

    ratio = labels["ratio"]
    tuned = results.best_tuned.rate / results.ceiling.rate
    defaults = results.defaults.rate / results.one_write.rate
    cpu = results.defaults.cpu_per_100k / results.one_write.cpu_per_100k
    p99 = results.latency.p99_ms
    p99_verdict = verdict(p99 <= P99_MAX_MS) if results.latency.defaults else "-"
    rows = [
        (labels["target_tuned"], ratio.format(value=tuned), verdict(tuned >= TUNED_TO_CEILING_MIN)),
        (
            labels["target_defaults"],
            ratio.format(value=defaults),
            verdict(defaults >= DEFAULTS_TO_ONE_WRITE_MIN),
        ),
        _rss_row(results, labels, verdict),
        (labels["target_p99"], f"{p99:.1f} ms", p99_verdict),
        (labels["target_cpu"], ratio.format(value=cpu), verdict(cpu <= CPU_TO_ONE_WRITE_MAX)),
    ]
    return _table(labels["target_columns"], rows)


def _rss_row(results: Results, labels: dict, verdict) -> tuple:
    backlog = results.backlog
    if backlog is None or backlog.messages < BACKLOG_FOR_MEMORY_TARGET:
        return (labels["target_rss"], labels["not_measured"], "-")
    rss = backlog.peak_rss_bytes / BYTES_PER_MB
    measured = labels["rss_measured"].format(rss=rss, backlog=backlog.messages)
    return (labels["target_rss"], measured, verdict(rss <= PEAK_RSS_MAX_MB))


def update_document(path: Path, block: str) -> None:
    """Replace the text between the result markers in ``path`` with ``block``."""
    text = path.read_text(encoding="utf-8")
    try:
        head, rest = text.split(BEGIN_MARKER, 1)
        _, tail = rest.split(END_MARKER, 1)
    except ValueError:
        raise RuntimeError(
            f"{path} has no results section: add the lines {BEGIN_MARKER!r} and "
            f"{END_MARKER!r} where the results belong"
        ) from None
    path.write_text(f"{head}{BEGIN_MARKER}\n{block}\n{END_MARKER}{tail}", encoding="utf-8")
