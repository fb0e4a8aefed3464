"""deploy/observability/ against the real tools: promtool checks the alerting rules and
runs their unit tests and parses every dashboard query, and every metric the rules
and the dashboard name is one the running service exposes at /metrics.

Debian's `prometheus` package gives promtool (scripts/system-deps.sh). The files'
own shape is checked in tests/deploy/test_observability_files.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.promql import label_matchers, metric_names
from tests.support.providers import CANCEL_ON_HANGUP, marker, provider_settings
from tests.support.service import RunningService, SharedServices
from tests.support.sse import read_stream
from tests.support.upstream_stub import Reply, UpstreamStub

REPO = Path(__file__).resolve().parents[2]
OBSERVABILITY = REPO / "deploy" / "observability"
ALERTS = OBSERVABILITY / "alerts.yaml"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"
# Labels Prometheus adds to every series it scrapes (the Kubernetes ones through a
# ServiceMonitor's relabelling), so a query may filter by them.
SCRAPE_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}
# The suffixes of the samples each type of family has in the exposition. Counters and
# histograms also get a `_created` sample per series (prometheus_client), once the
# series exists: the test below checks that this version does.
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}
# Grafana's variables, as it would put them in before sending a query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$namespace": ".*", "$job": ".*", "$instance": ".*"}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: ./scripts/system-deps.sh installs Debian's prometheus"
    return found


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def alert_expressions() -> dict[str, str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_queries() -> dict[str, str]:
    """Every panel query, by panel title and refId."""
    board = json.loads(DASHBOARD.read_text())
    return {
        f"{panel['title']} {target['refId']}": target["expr"]
        for panel in board["panels"]
        for target in panel.get("targets", [])
    }


def variable_queries() -> dict[str, tuple[str, str]]:
    """Each query variable's `label_values(selector, label)`, split in two."""
    board = json.loads(DASHBOARD.read_text())
    found = {}
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            parts = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"])
            assert parts, variable["query"]
            found[variable["name"]] = (parts.group(1), parts.group(2))
    return found


def as_grafana_sends(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def test_promtool_finds_the_alerting_rules_valid() -> None:
    checked = run_promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_expressions())} rules found" in checked.stdout


def test_the_alerts_pass_their_promtool_unit_tests() -> None:
    tested = run_promtool("test", "rules", str(OBSERVABILITY / "alerts.test.yaml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    # promtool parses PromQL only inside a rules file: each query becomes a recording rule.
    queries = {**dashboard_queries()}
    queries.update(
        {f"variable {name}": selector for name, (selector, _) in variable_queries().items()}
    )
    rules = [
        {"record": f"dashboard:query_{number}", "expr": as_grafana_sends(expr)}
        for number, expr in enumerate(queries.values())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = run_promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout


@pytest.fixture(scope="module")
def exposed(stub: UpstreamStub, shared_services: SharedServices) -> dict[str, set[str]]:
    """Every sample name the service exposes, with the label names seen on it.

    The service runs with the answer cache on (which makes qa_answer_cache_total
    move). Every family is listed (# TYPE) from the start; the traffic here gives
    the ones the queries filter by label samples to read the labels from: an
    answer, a provider failure, a refusal and a refused resume.
    """
    service: RunningService = shared_services.one(
        {
            **provider_settings("openai", stub),
            **CANCEL_ON_HANGUP,
            "QA_ANSWER_CACHE_TTL_SECONDS": "300",
        }
    )
    read_stream(service.url, params={"query": marker()})
    failing = marker()
    stub.reply(failing, Reply(status=429, error_body={"error": {"message": "slow down"}}))
    read_stream(service.url, params={"query": failing})
    assert httpx.get(f"{service.url}/ai_write").status_code == 422
    refused = httpx.get(
        f"{service.url}/ai_write", params={"query": marker()}, headers={"Last-Event-ID": "x"}
    )
    assert refused.status_code == 400, refused.text

    text = httpx.get(f"{service.url}/metrics").text
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for suffix in SAMPLE_SUFFIXES[family.type]:
            names.setdefault(family.name + suffix, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def test_counters_and_histograms_expose_created_samples(exposed: dict[str, set[str]]) -> None:
    """The `_created` names taken for granted above are real for series that exist."""
    assert {"provider", "model", "outcome", "code"} <= exposed["qa_requests_created"]
    assert {"provider", "model"} <= exposed["qa_time_to_first_token_seconds_created"]


def every_query() -> Iterator[tuple[str, str]]:
    for alert, expr in alert_expressions().items():
        yield f"alert {alert}", expr
    for panel, expr in dashboard_queries().items():
        yield f"panel {panel}", expr
    for name, (selector, _) in variable_queries().items():
        yield f"variable {name}", selector


def test_every_query_names_only_metrics_the_service_exposes(
    exposed: dict[str, set[str]],
) -> None:
    checked = 0
    for where, expr in every_query():
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        unknown = names - set(exposed)
        assert not unknown, f"{where} names what /metrics does not expose: {sorted(unknown)}"
        checked += len(names)
    assert checked >= 40


def test_every_label_a_query_filters_by_is_on_its_metric(
    exposed: dict[str, set[str]],
) -> None:
    for where, expr in every_query():
        for metric, label in label_matchers(expr):
            if label in SCRAPE_LABELS:
                continue
            seen = exposed[metric]
            assert seen, f"{where}: no sample of {metric} to read its labels from"
            assert label in seen, f"{where}: {metric} has no label {label!r}"
    for name, (selector, label) in variable_queries().items():
        (metric,) = metric_names(selector)
        assert label in exposed[metric] | SCRAPE_LABELS, f"variable {name}: no {label!r}"
