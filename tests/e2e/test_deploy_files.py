"""The SRE kit in deploy/ cannot drift from the code: only metrics and labels loa exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.metrics import MetricWrapperBase

from helpers import REPO
from loa.engine.backup_status import BackupCollector
from loa.engine.metrics import Metrics, QueueCollector
from loa.message import Lane, Outcome
from loa.settings import WorkerSettings

DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "loa.json"
ALERTS = DEPLOY / "alerts.yml"
PROMETHEUS = DEPLOY / "prometheus.yml"

# Series Prometheus adds to every target it scrapes, with the target's own labels.
SCRAPE_SERIES = {
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
}
TARGET_LABELS = {"job", "instance"}
# Where a Grafana variable stands in a query, a value PromQL accepts.
GRAFANA_VALUES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "${route}": ".*",
    "$route": ".*",
}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\s*\{([^{}]*)\}")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# A name not followed by "(" (a function) nor glued to a number (1e3) or a dot.
_NAME = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right"}


class _EmptyRedis:
    """Just enough of a Redis client for QueueCollector to describe its series: empty queues."""

    def xlen(self, key: str) -> int:
        return 0

    def xrange(self, key: str, count: int = 0) -> list[Any]:
        return []

    def xpending(self, key: str, group: str) -> dict[str, int]:
        return {"pending": 0}

    def zcard(self, key: str) -> int:
        return 0

    def hget(self, key: str, field: str) -> None:
        return None


def exported_series() -> dict[str, set[str]]:
    """Every series name a loa /metrics endpoint can export, with its label names.

    Counters export `_total`, histograms `_bucket`, `_sum` and `_count` (`_created` is left out:
    the supervisor's multiprocess exposition has none). Derived from the code, so a renamed
    metric or label fails here rather than on an SRE's empty graph.
    """
    series: dict[str, set[str]] = {}
    for metric in vars(Metrics()).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labels = set(metric._labelnames)
        if metric._type == "counter":
            series[f"{metric._name}_total"] = labels
        elif metric._type == "histogram":
            series[f"{metric._name}_bucket"] = labels | {"le"}
            series[f"{metric._name}_sum"] = labels
            series[f"{metric._name}_count"] = labels
        else:
            series[metric._name] = labels
    for family in QueueCollector(_EmptyRedis(), "ns", {"route": 1}).collect():
        for sample in family.samples:
            series[sample.name] = set(sample.labels)
    for family in BackupCollector(Path("/nonexistent"), 86_400).collect():
        for sample in family.samples:
            series[sample.name] = set(sample.labels)
    for name in SCRAPE_SERIES:
        series[name] = set()
    return {name: labels | TARGET_LABELS for name, labels in series.items()}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", _RANGE.sub(" ", _GROUPING.sub(" ", text)))
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    return {
        name
        for name in _NAME.findall(text)
        if name.lower() not in _KEYWORDS and name not in {"by", "without", "on", "ignoring"}
    }


def matcher_labels(expr: str) -> Iterator[tuple[str, set[str], str]]:
    """(metric, label names in its {matchers}, the matchers) for each selector with matchers."""
    text = _STRING.sub(lambda m: m.group().replace("{", "(").replace("}", ")"), expr)
    for name, body in _SELECTOR.findall(text):
        labels = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", _STRING.sub('""', body)))
        yield name, labels, body


def matched_values(body: str) -> dict[str, set[str]]:
    """The label values a selector's = and =~ matchers ask for ("a|b" gives a and b)."""
    found: dict[str, set[str]] = {}
    for label, value in re.findall(r'([a-zA-Z_]\w*)\s*=~?\s*"([^"]*)"', body):
        found.setdefault(label, set()).update(value.split("|"))
    return found


# The values loa gives these labels; a query asking for another finds nothing, silently.
KNOWN_VALUES = {
    "outcome": {str(outcome) for outcome in Outcome}
    | {"delivered", "undelivered", "waiting", "duplicate"},
    "lane": {lane.label for lane in Lane},
    "optout": {"true", "false"},
    "state": {"up", "down"},
}


def check_values(where: str, expr: str) -> None:
    """Fail when `expr` asks for an outcome, lane or opt-out value loa never exports."""
    for name, _, body in matcher_labels(expr):
        for label, values in matched_values(body).items():
            if name.startswith("loa_") and label in KNOWN_VALUES:
                unknown = values - KNOWN_VALUES[label]
                assert not unknown, f"{where}: {name}{{{label}}} is never {unknown}"


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included, rows themselves excluded."""
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) for every query on the dashboard."""
    return [
        (panel["title"], target["expr"])
        for panel in panels(dashboard())
        for target in panel["targets"]
    ]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def with_grafana_values(expr: str) -> str:
    """The query as Grafana sends it, with its variables replaced."""
    for variable, value in sorted(GRAFANA_VALUES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def test_the_metric_name_parser():
    expr = (
        'histogram_quantile(0.99, sum by (route, le) (rate(loa_send_seconds_bucket{route=~"$route"}'
        "[$__rate_interval]))) > 1e3 and on (route) max by (route) (loa_queue_batches) "
        'or absent(up{job="loa"}) unless x:recorded offset 5m'
    )
    assert metric_names(expr) == {
        "loa_send_seconds_bucket",
        "loa_queue_batches",
        "up",
        "x:recorded",
    }
    assert list(matcher_labels('a{b="{c=1}", d!~"x"} + e{}')) == [
        ("a", {"b", "d"}, 'b="(c=1)", d!~"x"'),
        ("e", set(), ""),
    ]
    assert matched_values('outcome=~"accepted|failed", lane="bulk", route!="x"') == {
        "outcome": {"accepted", "failed"},
        "lane": {"bulk"},
    }


def test_exported_series_are_those_of_a_worker():
    series = exported_series()
    assert series["loa_messages_total"] == {"route", "lane", "outcome", "job", "instance"}
    assert series["loa_send_seconds_bucket"] >= {"route", "le"}
    assert series["loa_queue_oldest_seconds"] >= {"route", "lane"}
    assert "loa_route_rate_factor" in series


def test_dashboard_uses_only_exported_metrics_and_labels():
    series = exported_series()
    queries = dashboard_queries()
    assert queries, "the dashboard has no query"
    for title, expr in queries:
        names = metric_names(expr)
        assert names, f"{title}: {expr} selects no metric"
        unknown = names - set(series)
        assert not unknown, f"panel {title!r} uses {unknown}, which loa does not export"
        for name, labels, body in matcher_labels(expr):
            assert labels <= series[name], f"panel {title!r}: {name} has no label {labels}"
            if "route" in series[name] and name.startswith("loa_"):
                assert '"$route"' in body, f"panel {title!r}: {name} ignores the route variable"
        check_values(f"panel {title!r}", expr)


def test_every_loa_metric_is_on_the_dashboard():
    shown = set().union(*(metric_names(expr) for _, expr in dashboard_queries()))
    families = {_family(name) for name in exported_series() if name.startswith("loa_")}
    missing = families - {_family(name) for name in shown}
    assert not missing, f"metrics no panel shows: {sorted(missing)}"


def _family(series: str) -> str:
    """The metric a series belongs to: loa_send_seconds for loa_send_seconds_bucket."""
    return re.sub(r"_(total|bucket|sum|count)$", "", series)


def test_dashboard_structure():
    board = dashboard()
    assert board["schemaVersion"] >= 36
    assert board["uid"] and board["title"]
    variables = {var["name"]: var for var in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    route = variables["route"]
    assert route["type"] == "query" and route["multi"] and route["includeAll"]
    assert route["allValue"] == ".*"
    source = re.fullmatch(r"label_values\((\w+), route\)", route["query"]["query"])
    assert source and source.group(1) in exported_series(), "route values from a real metric"
    rows = [panel for panel in board["panels"] if panel["type"] == "row"]
    ids = [panel["id"] for panel in [*rows, *panels(board)]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels(board):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
    wanted = {
        "loa_messages_total",
        "loa_queue_batches",
        "loa_queue_oldest_seconds",
        "loa_send_seconds_bucket",
        "loa_throttle_events_total",
        "loa_route_rate_factor",
        "loa_dead_letters_total",
        "loa_receipts_total",
        "loa_inbound_total",
        "loa_route_binds",
        "up",
    }
    shown = set().union(*(metric_names(expr) for _, expr in dashboard_queries()))
    assert wanted <= shown
    assert any("histogram_quantile(0.99" in expr for _, expr in dashboard_queries())
    assert any("histogram_quantile(0.5" in expr for _, expr in dashboard_queries())


def test_dashboard_queries_take_grafana_values():
    for _, expr in dashboard_queries():
        with_grafana_values(expr)


def test_alert_rules_use_only_exported_metrics_and_labels():
    series = exported_series()
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert not names - set(series), f"{rule['alert']} uses {names - set(series)}"
        for name, labels, _ in matcher_labels(rule["expr"]):
            assert labels <= series[name], f"{rule['alert']}: {name} has no label {labels}"
        check_values(rule["alert"], rule["expr"])


def test_every_alert_says_how_bad_and_what_to_do():
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    assert {
        "LoaRouteDown",
        "LoaWorkersDown",
        "LoaRouteThrottled",
        "LoaQueueAgeGrowing",
        "LoaDeadLettersRising",
        "LoaReceiptsLagging",
        "LoaRouteUnbound",
    } <= set(names)
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), f"{rule['alert']} needs a for: duration"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert len(rule["annotations"]["description"]) > 80, f"{rule['alert']}: what to do?"


def test_prometheus_config_loads_the_rules_and_scrapes_the_metrics_port():
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["rule_files"] == [ALERTS.name], "relative to prometheus.yml"
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "loa"]
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    port = WorkerSettings().metrics_port
    assert targets == [f"127.0.0.1:{port}"], "the documented port is loa's default"
    files = [f for sd in job["file_sd_configs"] for f in sd["files"]]
    assert files == ["targets/*.yml"]
    assert yaml.safe_load((DEPLOY / "targets" / "loa.yml").read_text()) == []
    tests = yaml.safe_load((DEPLOY / "alerts_test.yml").read_text())
    assert tests["rule_files"] == [ALERTS.name]


def test_grafana_provisioning_serves_the_dashboard_from_prometheus():
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert [source["type"] for source in sources["datasources"]] == ["prometheus"]
    providers = yaml.safe_load((provisioning / "dashboards" / "loa.yml").read_text())
    assert [provider["type"] for provider in providers["providers"]] == ["file"]
