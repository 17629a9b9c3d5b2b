"""ops/grafana-dashboard.json (and ops/alerts.yml) against a real dev node: every query (panels,
variables, annotations, alert rules) names only metrics that the node's ``/metrics`` actually serves,
and the dashboard covers what an operator of a pair watches."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import call
from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = Path(__file__).resolve().parents[2] / "ops" / "grafana-dashboard.json"
_FUNCTIONS_AND_KEYWORDS = frozenset(
    "abs absent absent_over_time avg avg_over_time bool bottomk by ceil changes clamp clamp_max clamp_min count "
    "count_over_time count_values delta deriv exp floor group group_left group_right histogram_quantile idelta "
    "ignoring increase irate label_replace label_values last_over_time ln log2 log10 max max_over_time min "
    "min_over_time offset on or and unless predict_linear quantile quantile_over_time rate resets round scalar "
    "sort sort_desc sqrt stddev stdvar sum sum_over_time time timestamp topk vector without".split()
)
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana ``label_values(metric, label)``) refers to."""
    expr = re.sub(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*\w+\s*\)", r"\1", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers (and the Grafana variables inside)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    expr = re.sub(r"(?<![\w.])\d+(\.\d+)?(e[+-]?\d+)?", "", expr)  # numbers
    return {t for t in _IDENT.findall(expr) if t not in _FUNCTIONS_AND_KEYWORDS}


def panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in doc["panels"]:
        yield p
        yield from p.get("panels", [])  # a collapsed row keeps its panels inside


def queries(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expression) for every query in the dashboard."""
    for p in panels(doc):
        for t in p.get("targets", []):
            yield f"panel {p['title']!r} {t['refId']}", t["expr"]
    for v in doc["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]
            yield f"variable {v['name']}", q["query"] if isinstance(q, dict) else q
    for a in doc["annotations"]["list"]:
        if "expr" in a:
            yield f"annotation {a['name']}", a["expr"]


def served(text: str) -> set[str]:
    """Every series name a scrape of this text can match: sample names, and for families without a
    sample yet (no peer, for example) the names their type gives them."""
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    for fam in text_string_to_metric_families(text):
        names |= {s.name for s in fam.samples}
        names |= {fam.name + sfx for sfx in suffixes.get(fam.type, ("",))}
    return names


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def test_every_query_names_a_metric_the_node_serves(doc: dict[str, Any], node) -> None:
    with node.client("dash") as c:  # traffic first, so the per-request families have samples
        sid = c.create(b"x")
        c.snapshot(sid)
    call(node, "/api/v1/snapshot/nope", "dash")
    metrics = served(call(node, "/metrics", method="GET").text)
    seen: set[str] = set()
    for where, expr in queries(doc):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= metrics, f"{where}: {sorted(names - metrics)} not served by /metrics ({expr!r})"
        seen |= names
    # what the operator of a pair watches (docs/operations.md §4)
    for topic in (
        "bbd_role",
        "bbd_epoch",
        "bbd_requests_total",
        "bbd_request_duration_seconds_bucket",
        "bbd_rate_limited_total",
        "bbd_limit_rejections_total",
        "bbd_memory_bytes",
        "bbd_memory_limit_bytes",
        "bbd_stores",
        "bbd_tombstones",
        "bbd_replication_queue_length",
        "bbd_replication_lag_seconds",
        "bbd_replication_fail_count",
        "bbd_shard_restarts_total",
        "bbd_process_rss_bytes",
        "bbd_process_cpu_percent",
        "bbd_config_reloads_total",
    ):
        assert topic in seen, topic


def test_every_alert_names_a_metric_the_node_serves(node) -> None:
    """ops/alerts.yml, with the same check: a renamed metric must not leave a rule silently empty."""
    import yaml

    with open(DASHBOARD.parent / "alerts.yml", encoding="utf-8") as f:
        rules = [r for g in yaml.safe_load(f)["groups"] for r in g["rules"]]
    metrics = served(call(node, "/metrics", method="GET").text)
    assert rules
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names and names <= metrics, (rule["alert"], sorted(names - metrics))


def test_metric_names_parser() -> None:
    """The extractor the test above relies on: functions, labels, ranges, numbers and variables are not
    metric names; a misspelt metric is."""
    q = 'histogram_quantile(0.99, sum by (le, endpoint) (rate(bbd_x_bucket{a=~"$i"}[$__rate_interval])))'
    assert metric_names(q) == {"bbd_x_bucket"}
    assert metric_names('2 * max by (instance) (bbd_role{role="PRIMARY"}) + bbd_epoch > 0') == {"bbd_role", "bbd_epoch"}
    assert metric_names("label_values(bbd_role, instance)") == {"bbd_role"}
    q = "rate(bbd_requets_total[5m]) / on (instance) group_left bbd_up"
    assert metric_names(q) == {"bbd_requets_total", "bbd_up"}


def test_layout_is_well_formed(doc: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(doc)]
    assert len(ids) == len(set(ids)), "duplicate panel id"
    for p in panels(doc):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]
    assert {v["name"] for v in doc["templating"]["list"]} == {"datasource", "instance"}
