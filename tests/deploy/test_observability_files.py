"""deploy/observability/ read as files: every alert is complete, links to its runbook
and has a unit test that fires it and one that must stay silent; every dashboard
query goes through the datasource and the filter variables.

promtool's own check and run of the unit tests, and the check of every query
against a running service's /metrics, are in
tests/integration/test_observability_rules.py (they need promtool and the service).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.promql import label_matchers, metric_names

REPO = Path(__file__).resolve().parents[2]
OBSERVABILITY = REPO / "deploy" / "observability"
OPERATIONS = REPO / "docs" / "operations.md"
SEVERITIES = {"critical", "warning", "info"}
FILTERS = {"namespace", "job", "instance"}


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def rule_tests() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load((OBSERVABILITY / "alerts.test.yaml").read_text())[
        "tests"
    ]
    return tests


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    return loaded


def dashboard_targets() -> list[dict[str, Any]]:
    return [target for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation dropped,
    spaces as hyphens."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


ALERTS = [rule["alert"] for rule in alert_rules()]


def test_the_alerts_are_these_eight() -> None:
    assert ALERTS == [
        "QAServiceErrorRatioHigh",
        "QAServiceSlowFirstText",
        "QAServiceUpstreamFailing",
        "QAServiceUpstreamAuthFailed",
        "QAServiceOverCapacity",
        "QAServiceClientsAtStreamLimit",
        "QAServiceProducersLost",
        "QAServiceStoreUnavailable",
    ]


@pytest.mark.parametrize("rule", alert_rules(), ids=ALERTS)
def test_each_alert_waits_names_its_severity_and_links_its_runbook(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"\d+m", rule["for"]), rule["for"]
    assert rule["labels"] == {"severity": rule["labels"]["severity"]}
    assert rule["labels"]["severity"] in SEVERITIES
    notes = rule["annotations"]
    assert set(notes) == {"summary", "description", "runbook_url"}
    # The summary says where: one page per deployment.
    assert "{{ $labels.namespace }}/{{ $labels.job }}" in notes["summary"]
    runbook = urlsplit(notes["runbook_url"])
    assert runbook.path.endswith("/docs/operations.md")
    assert runbook.fragment == rule["alert"].lower()
    anchors = github_anchors(OPERATIONS.read_text())
    assert runbook.fragment in anchors, f"docs/operations.md has no heading #{runbook.fragment}"


@pytest.mark.parametrize("alert", ALERTS)
def test_each_alert_has_a_unit_test_that_fires_it_and_a_deployment_that_must_not(
    alert: str,
) -> None:
    groups = [
        test
        for test in rule_tests()
        if any(case["alertname"] == alert for case in test["alert_rule_test"])
    ]
    assert groups, f"no promtool test of {alert}"
    fired: set[str] = set()
    fed: set[str] = set()
    for group in groups:
        for series in group["input_series"]:
            fed.update(re.findall(r'\bjob="([^"]+)"', series["series"]))
        for case in group["alert_rule_test"]:
            if case["alertname"] == alert:
                fired.update(expected["exp_labels"]["job"] for expected in case["exp_alerts"])
    assert fired, f"no test in which {alert} fires"
    assert fed - fired, f"every deployment fed to {alert}'s tests fires it: none must not"


def test_the_dashboard_reads_one_prometheus_chosen_by_a_variable() -> None:
    board = dashboard()
    assert board["schemaVersion"] == 39
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert set(variables) == {"datasource"} | FILTERS
    for name in FILTERS:
        # "All" must match a missing label too (plain Prometheus has no namespace).
        assert variables[name]["allValue"] == ".*"
    chosen = {"type": "prometheus", "uid": "${datasource}"}
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == chosen, panel["title"]
            assert all(target["datasource"] == chosen for target in panel["targets"])


def test_every_dashboard_query_goes_through_the_filters() -> None:
    targets = dashboard_targets()
    assert len(targets) >= 20
    for target in targets:
        expr = target["expr"]
        selectors = re.findall(r"[A-Za-z_:][\w:]*\s*\{[^}]*\}", expr)
        # Every metric named is selected with braces, and each selection is filtered.
        assert len(selectors) == len(re.findall(r"\bqa_\w+", expr)), expr
        for name in metric_names(expr):
            matched = {label for metric, label in label_matchers(expr) if metric == name}
            assert matched >= FILTERS, (name, expr)


def test_dashboard_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        box = panel["gridPos"]
        cells = {
            (x, y)
            for x in range(box["x"], box["x"] + box["w"])
            for y in range(box["y"], box["y"] + box["h"])
        }
        assert box["x"] + box["w"] <= 24, panel["title"]
        assert not cells & taken, panel["title"]
        taken |= cells
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('rate(qa_requests_total{code="x", outcome!="refused"}[5m])', {"qa_requests_total"}),
        (
            "histogram_quantile(0.95, sum by (namespace, le) (rate(a_bucket[$__rate_interval])))",
            {"a_bucket"},
        ),
        ("sum(a) / on (job) group_left sum without (code) (b) > bool 1e3", {"a", "b"}),
        ("count by (job) (time() - c_created < 900) or d offset 15m", {"c_created", "d"}),
        ('e{job=~"$job", instance=~"a(b)c"}', {"e"}),
    ],
)
def test_metric_names_are_what_a_query_selects(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_label_matchers_pair_each_label_with_its_metric() -> None:
    expr = 'sum by (code) (a{outcome="error", code!~"x|y"}) / b{job="j"} and c'
    assert label_matchers(expr) == {("a", "outcome"), ("a", "code"), ("b", "job")}
