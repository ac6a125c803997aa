"""The Grafana dashboard and the alert rules use only metrics (and labels) that ``rationad.metrics.Metrics`` exports.

Metric names are taken from a fresh ``Metrics`` on its own ``CollectorRegistry`` and expanded to the series names
Prometheus sees (counter ``_total``, histogram ``_bucket``/``_sum``/``_count``, info ``_info``). Every PromQL
expression is reduced to its metric selectors; each selector must name an exported series (or ``up``, which
Prometheus itself adds per target), and its label matchers must be labels that series has.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from rationad.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "rationad.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"

# Labels Prometheus attaches to every scraped series (static configs, PodMonitor targets).
TARGET_LABELS = {"instance", "job", "namespace", "pod", "container", "endpoint", "service"}
# Series Prometheus adds itself for every scrape target.
SYNTHETIC = {"up": set()}
# Labels of rationad_build_info: set at run time by Info.info(), so not in _labelnames.
BUILD_INFO_LABELS = {"version", "model", "model_version", "prompt_version"}

PROMQL_WORDS = {
    # aggregations, functions and keywords that can stand where a metric name could
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile", "absent", "absent_over_time",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "count_over_time", "last_over_time",
    "clamp_min", "clamp_max", "abs", "ceil", "floor", "round", "vector", "scalar", "time", "label_replace",
    "label_join", "changes", "resets", "predict_linear", "sort", "sort_desc", "timestamp", "inf", "nan",
}


def exported_series() -> dict[str, set[str]]:
    """Series name -> label names, for every metric a fresh Metrics registers."""
    metrics = Metrics(CollectorRegistry())
    labels_by_family = {
        m._name: set(m._labelnames)  # private: label names are only reachable here
        for m in vars(metrics).values()
        if hasattr(m, "_labelnames") and hasattr(m, "_name")
    }
    series: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        labels = labels_by_family[family.name]
        if family.type == "counter":
            series[family.name + "_total"] = labels
        elif family.type == "histogram":
            series[family.name + "_bucket"] = labels | {"le"}
            series[family.name + "_sum"] = labels
            series[family.name + "_count"] = labels
        elif family.type == "info":
            series[family.name + "_info"] = labels | BUILD_INFO_LABELS
        elif family.type == "summary":
            series[family.name + "_sum"] = labels
            series[family.name + "_count"] = labels
            series[family.name] = labels | {"quantile"}
        else:
            series[family.name] = labels
    return series


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SELECTOR = re.compile(r"(?<![\w:$])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")


def selectors(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """The metric selectors of a PromQL expression (name, matcher label names) and its grouping label names."""
    expr = re.sub(r"\$__\w+|\$\{?\w+\}?", "1m", expr)  # Grafana variables
    grouping = {label.strip() for g in _GROUPING.findall(expr) for label in g.split(",") if label.strip()}
    expr = _GROUPING.sub(" ", expr)
    # Matchers first (their string values may contain anything), then the rest without strings and ranges.
    found: list[tuple[str, set[str]]] = []
    masked = _STRING.sub('""', expr)
    masked = re.sub(r"\[[^\]]*\]", " ", masked)
    for m in _SELECTOR.finditer(masked):
        name, braces = m.group(1), m.group(2)
        if name in PROMQL_WORDS:
            continue
        if not braces and masked[m.end():].lstrip().startswith("("):
            continue  # a function call
        found.append((name, set(_MATCHER.findall(braces or ""))))
    # Numbers and durations are not selectors.
    found = [(n, labels) for n, labels in found if not re.fullmatch(r"\d[\w.]*", n)]
    return found, grouping


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p["title"], t["expr"]))
            walk(p.get("panels", []))

    walk(dash["panels"])
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if var.get("type") == "query" and q:
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", q)
            out.append((f"variable {var['name']}", m.group(1) if m else q))
    return out


def alert_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(ALERTS.read_text())
    groups = doc["spec"]["groups"] if doc.get("kind") == "PrometheusRule" else doc["groups"]
    return [(r.get("alert") or r.get("record"), r["expr"]) for g in groups for r in g["rules"]]


def check(where: str, expr: str, series: dict[str, set[str]]) -> list[str]:
    problems = []
    found, grouping = selectors(expr)
    if not found:
        problems.append(f"{where}: no metric in {expr!r}")
    known = series | SYNTHETIC
    all_labels = set().union(*series.values()) | TARGET_LABELS
    for name, labels in found:
        if name not in known:
            problems.append(f"{where}: {name} is not exported by rationad.metrics.Metrics")
            continue
        unknown = labels - known[name] - TARGET_LABELS
        if unknown:
            problems.append(f"{where}: {name} has no label(s) {sorted(unknown)}")
    if grouping - all_labels:
        problems.append(f"{where}: grouping by unknown label(s) {sorted(grouping - all_labels)}")
    return problems


def test_selector_extraction():
    found, grouping = selectors(
        'histogram_quantile(0.95, sum by (le, cache) (rate(rationad_session_latency_seconds_bucket'
        '{instance=~"$instance",cache="miss"}[5m]))) > 30 and on() vector(1)'
    )
    assert found == [("rationad_session_latency_seconds_bucket", {"instance", "cache"})]
    assert grouping == {"le", "cache"}
    found, _ = selectors('up{job=~".*rationad.*"} == 0')
    assert found == [("up", {"job"})]


def test_series_names_follow_prometheus_suffixes():
    series = exported_series()
    assert "rationad_records_received_total" in series
    assert {"rationad_session_latency_seconds_bucket", "rationad_session_latency_seconds_count"} <= set(series)
    assert "rationad_build_info" in series and "rationad_ready" in series
    assert series["rationad_errors_total"] == {"stage", "error_type"}


def test_check_rejects_unknown_metrics_and_labels():
    series = exported_series()
    assert check("x", "rate(rationad_no_such_metric_total[5m])", series)
    assert check("x", 'rationad_dlq_records_total{close_reason="x"}', series)
    assert check("x", "sum by (shard) (rationad_ready)", series)
    assert not check("x", 'sum by (reason) (rate(rationad_dlq_records_total{reason="x"}[5m]))', series)


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_only_exported_metrics(source):
    series = exported_series()
    exprs = dashboard_exprs() if source == "dashboard" else alert_exprs()
    assert len(exprs) >= 10
    problems = [p for where, expr in exprs for p in check(where, expr, series)]
    assert not problems, "\n".join(problems)


def test_dashboard_covers_every_metric():
    """Each exported metric family appears on the dashboard (a new metric needs a panel)."""
    used = {name for _, expr in dashboard_exprs() for name, _ in selectors(expr)[0]}
    families = {re.sub(r"_(total|bucket|sum|count|info)$", "", s) for s in exported_series()}
    missing = {f for f in families if not any(re.sub(r"_(total|bucket|sum|count|info)$", "", u) == f for u in used)}
    assert not missing, f"metrics without a panel: {sorted(missing)}"


def test_alerts_are_documented():
    """Every alert has a runbook section in docs/operations.md under its own name."""
    runbook = (ROOT / "docs" / "operations.md").read_text()
    for name, _ in alert_exprs():
        assert re.search(rf"^#+ .*\b{name}\b", runbook, re.MULTILINE), f"docs/operations.md has no section for {name}"
