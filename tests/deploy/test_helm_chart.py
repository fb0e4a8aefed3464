"""The Helm chart (deploy/helm/qa-service), rendered and linted by Helm v4's own
code (helm-python-sdk, in process) and validated against Kubernetes 1.34's schemas.

The contract a stream needs from Kubernetes: the pod is held while its
endpoints drain, its grace covers that hold, the answers' grace and the
service's own exit, no proxy buffers an event or times a long answer out, and
the pod runs non-root on a read-only root filesystem. kubernetes-validate has
no schemas for custom resources (KEDA's ScaledObject, Gateway API's
HTTPRoute, the Prometheus Operator's ServiceMonitor and PrometheusRule): their
apiVersion, kind and the fields the chart relies on are checked here by hand.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from qa_service.answers.readers import _STOP_SECONDS as READERS_STOP_SECONDS
from qa_service.config import Settings, env_name
from qa_service.generation.prompts import load_prompts
from qa_service.observability.telemetry import Telemetry

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "qa-service"
REFUSED = Path(__file__).parent / "values"
KUBERNETES = "1.34"
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
SHIPPED_ALERTS = REPO / "deploy" / "observability" / "alerts.yaml"

# The service's own exit after its answers' grace, as the code bounds it
# (templates/_helpers.tpl derives the same): uvicorn waits the grace + 2 s for
# connections (cli.py) and notices SIGTERM within 0.2 s, sse-starlette within
# 0.5 s: 3 whole seconds; then the lifespan closes: abort_all's endings within
# 3 x QA_UPSTREAM_CLOSE_TIMEOUT_SECONDS (registry.py), clients' places within
# 3 s (admission.py, drain), readers' loops within READERS_STOP_SECONDS.
DELIVERY_SECONDS = 3
ADMISSION_DRAIN_SECONDS = 3


def _values_file(name: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    return values


CASES = {
    "defaults": {},
    "single-replica-no-redis": _values_file("single-replica-no-redis"),
    "sentinel": _values_file("sentinel"),
    "cluster-keda": _values_file("cluster-keda"),
}


def helm_chart() -> helm.Chart:
    """The chart, loaded by Helm v4's own loader (.helmignore applies)."""
    return helm.Chart.load(CHART)


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm_chart() as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart makes for `values`, as an install would."""
    manifests = chart.render(values, name="qa", namespace="answers", is_install=True)
    return [
        document
        for text in manifests.values()
        for document in yaml.safe_load_all(text)
        if document is not None
    ]


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [item for item in objects if item["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def kinds(objects: list[dict[str, Any]]) -> set[str]:
    return {item["kind"] for item in objects}


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    first: dict[str, Any] = containers[0]
    return first


def plain_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(objects)["env"] if "value" in item}


def secret_env(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in container(objects)["env"]
        if "valueFrom" in item
    }


def _invalidity(item: dict[str, Any]) -> str | None:
    """Where and why `item` is invalid for Kubernetes 1.34, strictly, in one line
    (the error's own text dumps the whole schema)."""
    try:
        kubernetes_validate.validate(item, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as invalid:
        where = "/".join(str(part) for part in invalid.path)
        return f"{item['kind']} at /{where}: {invalid.message}"
    return None


def seconds(duration: str) -> float:
    """A Gateway API duration ("1h30m", "0s", "500ms") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+)(ms|h|m|s)", duration)
    assert "".join(f"{n}{u}" for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


@pytest.mark.parametrize("case", CASES)
def test_the_chart_lints_clean_for_kubernetes_1_34(case: str) -> None:
    report = helm.lint(CHART, CASES[case], strict=True, kube_version=f"v{KUBERNETES}.0")
    assert report["errors"] == []
    # Severity 2 is a warning, 3 an error; 1 ("icon is recommended") is advice.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("case", CASES)
def test_every_built_in_kind_is_valid_for_kubernetes_1_34_strictly(
    chart: helm.Chart, case: str
) -> None:
    objects = render(chart, CASES[case])
    built_in = [o for o in objects if (o["apiVersion"], o["kind"]) not in CUSTOM_KINDS]
    assert {"Deployment", "Service", "PodDisruptionBudget"} <= kinds(built_in)
    for item in built_in:
        # Strict: a field Kubernetes does not know (a typo) fails, as apply would.
        assert _invalidity(item) is None


def test_each_case_renders_what_it_asks_for(chart: helm.Chart) -> None:
    rendered = {case: kinds(render(chart, values)) for case, values in CASES.items()}
    assert rendered["defaults"] == {"Deployment", "Service", "PodDisruptionBudget"}
    assert rendered["single-replica-no-redis"] == rendered["defaults"] | {"Ingress"}
    assert rendered["sentinel"] == rendered["defaults"] | {
        "HorizontalPodAutoscaler",
        "HTTPRoute",
        "Secret",
    }
    assert rendered["cluster-keda"] == rendered["defaults"] | {
        "ScaledObject",
        "HTTPRoute",
        "Ingress",
        "Secret",
        "ServiceMonitor",
        "PrometheusRule",
    }


@pytest.mark.parametrize("case", CASES)
def test_the_grace_covers_the_prestop_the_drain_and_the_exit(chart: helm.Chart, case: str) -> None:
    objects = render(chart, CASES[case])
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    env = plain_env(objects)
    pre_stop = container(objects)["lifecycle"]["preStop"]
    if "exec" in pre_stop:
        # `sleep` is coreutils' (Debian's python:*-slim has it; it is Essential).
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep"
        held = int(command[1])
    else:
        held = pre_stop["sleep"]["seconds"]
    drain = int(env["QA_SHUTDOWN_GRACE_SECONDS"])
    close_seconds = float(
        env.get(
            "QA_UPSTREAM_CLOSE_TIMEOUT_SECONDS",
            Settings.model_fields["upstream_close_timeout_seconds"].default,
        )
    )
    exit_seconds = (
        DELIVERY_SECONDS
        + 3 * math.ceil(close_seconds)
        + ADMISSION_DRAIN_SECONDS
        + math.ceil(READERS_STOP_SECONDS)
    )
    assert held >= 1
    assert pod["terminationGracePeriodSeconds"] >= held + drain + exit_seconds
    if CASES[case].get("shutdown", {}).get("terminationGracePeriodSeconds") is None:
        # Derived, not padded: a longer grace only delays a stuck pod's end.
        assert pod["terminationGracePeriodSeconds"] == held + drain + exit_seconds


def test_the_defaults_fit_kubernetes_default_grace_and_docs_figures(chart: helm.Chart) -> None:
    objects = render(chart, {})
    env = plain_env(objects)
    assert (
        int(env["QA_SHUTDOWN_GRACE_SECONDS"])
        == Settings.model_fields["shutdown_grace_seconds"].default
    )
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    # 5 s held + 6 s of answers + 14 s of exit: inside Kubernetes' own default of 30.
    assert pod["terminationGracePeriodSeconds"] == 25


def test_a_grace_shorter_than_the_drain_is_refused_at_render_time(chart: helm.Chart) -> None:
    values = yaml.safe_load((REFUSED / "grace-shorter-than-drain.yaml").read_text())
    with pytest.raises(helm.HelmRenderError, match="shorter than the drain") as refused:
        render(chart, values)
    # The message says what it needs: 10 + 15 + 14.
    assert "need 39" in str(refused.value)
    # One second more than needed renders.
    values["shutdown"]["terminationGracePeriodSeconds"] = 39
    pod = only(render(chart, values), "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 39


@pytest.mark.parametrize("case", CASES)
def test_probes_and_the_pod_s_hardening(chart: helm.Chart, case: str) -> None:
    objects = render(chart, CASES[case])
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    main = container(objects)
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    port = {p["name"]: p["containerPort"] for p in main["ports"]}["http"]
    assert plain_env(objects)["QA_PORT"] == str(port)
    assert plain_env(objects)["QA_HOST"] == "0.0.0.0"

    assert pod["securityContext"]["runAsNonRoot"] is True
    # The image's USER is a name (qa, uid 10001): runAsNonRoot needs a number.
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    hardened = main["securityContext"]
    assert hardened["readOnlyRootFilesystem"] is True
    assert hardened["allowPrivilegeEscalation"] is False
    assert hardened["capabilities"] == {"drop": ["ALL"]}
    assert hardened["runAsNonRoot"] is True
    scratch = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
    assert scratch["tmp"] == "/tmp"
    assert {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}} in pod["volumes"]


@pytest.mark.parametrize("case", CASES)
def test_every_setting_the_chart_passes_is_a_real_setting(chart: helm.Chart, case: str) -> None:
    known = {env_name(field) for field in Settings.model_fields}
    passed = set(plain_env(render(chart, CASES[case]))) | set(
        secret_env(render(chart, CASES[case]))
    )
    assert passed - known == set()


@pytest.mark.parametrize("case", ["sentinel", "cluster-keda"])
def test_the_redis_url_comes_from_a_secret_and_nothing_else_shows_it(
    chart: helm.Chart, case: str
) -> None:
    objects = render(chart, CASES[case])
    url = CASES[case]["redis"]["url"]
    reference = secret_env(objects)["QA_REDIS_URL"]
    secret = only(objects, "Secret")
    assert secret["metadata"]["name"] == reference["name"]
    assert base64.b64decode(secret["data"][reference["key"]]).decode() == url
    # The URL (and its password) is in the Secret alone.
    public = [o for o in objects if o["kind"] != "Secret"]
    assert url not in yaml.safe_dump_all(public)
    assert "example-password" not in yaml.safe_dump_all(public)


def test_existing_secrets_are_referenced_and_no_secret_is_made(chart: helm.Chart) -> None:
    values = {
        "redis": {"existingSecret": "qa-redis", "existingSecretKey": "url"},
        "providerKeys": {"existingSecret": "qa-provider-keys"},
        "apiKeys": {"existingSecret": "qa-api-keys"},
        "replicaCount": 2,
    }
    objects = render(chart, values)
    assert "Secret" not in kinds(objects)
    refs = secret_env(objects)
    assert refs["QA_REDIS_URL"] == {"name": "qa-redis", "key": "url"}
    assert refs["QA_API_KEYS"] == {"name": "qa-api-keys", "key": "QA_API_KEYS"}
    # Either provider key may be missing from the Secret: that provider is unused.
    for key in ("OPENAI_API_KEY", "GROQ_API_KEY"):
        assert refs[key] == {"name": "qa-provider-keys", "key": key, "optional": True}


def test_the_repository_s_prompts_load_from_the_configmap(
    chart: helm.Chart, tmp_path: Path
) -> None:
    files = {path.name: path.read_text() for path in sorted((REPO / "prompts").glob("*.toml"))}
    objects = render(chart, {"prompts": {"files": files}})
    config_map = only(objects, "ConfigMap")
    assert config_map["data"] == files  # exact, trailing newlines and all

    main = container(objects)
    mount = next(m for m in main["volumeMounts"] if m["name"] == "prompts")
    assert mount["readOnly"] is True
    assert plain_env(objects)["QA_PROMPTS_DIR"] == mount["mountPath"]
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "prompts")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    # New prompts roll the pods: the service reads them only at start-up.
    annotations = only(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/prompts" in annotations

    # What the kubelet would write into the mount, read by the service's own loader.
    for name, text in config_map["data"].items():
        (tmp_path / name).write_text(text)
    assert sorted(load_prompts(tmp_path)) == sorted(Path(name).stem for name in files)


def test_without_prompts_the_image_s_own_serve(chart: helm.Chart) -> None:
    objects = render(chart, {})
    assert "ConfigMap" not in kinds(objects)
    assert "QA_PROMPTS_DIR" not in plain_env(objects)  # the Dockerfile's /app/prompts


@pytest.mark.parametrize("case", CASES)
def test_the_ingress_buffers_nothing_and_waits_for_long_answers(
    chart: helm.Chart, case: str
) -> None:
    ingresses = [o for o in render(chart, CASES[case]) if o["kind"] == "Ingress"]
    for ingress in ingresses:
        notes = ingress["metadata"]["annotations"]
        assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
        assert notes["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
        for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
            assert int(notes[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 3600


@pytest.mark.parametrize("case", CASES)
def test_routes_carry_no_short_timeout(chart: helm.Chart, case: str) -> None:
    for route in (o for o in render(chart, CASES[case]) if o["kind"] == "HTTPRoute"):
        assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
        assert route["spec"]["parentRefs"] == CASES[case]["httpRoute"]["parentRefs"]
        for rule in route["spec"]["rules"]:
            assert rule["backendRefs"] == [{"name": "qa-qa-service", "port": 80}]
            # Both, or the gateway's default applies to the one left out.
            assert set(rule["timeouts"]) == {"request", "backendRequest"}
            for timeout in rule["timeouts"].values():
                # 0s turns the timeout off; anything else must outlast a long answer.
                assert seconds(timeout) == 0 or seconds(timeout) >= 3600, timeout


def test_routes_and_ingress_hosts_are_hosts_the_service_answers_for(chart: helm.Chart) -> None:
    objects = render(chart, CASES["cluster-keda"])
    allowed = plain_env(objects)["QA_ALLOWED_HOSTS"].split(",")
    route = only(objects, "HTTPRoute")
    ingress = only(objects, "Ingress")
    assert set(route["spec"]["hostnames"]) <= set(allowed)
    assert {rule["host"] for rule in ingress["spec"]["rules"]} <= set(allowed)
    # The service's own check accepts the list (421 host_not_allowed otherwise).
    assert Settings(allowed_hosts=",".join(allowed)).allowed_hosts == allowed


def test_keda_scales_on_answers_in_flight_and_the_hpa_stands_down(chart: helm.Chart) -> None:
    objects = render(chart, CASES["cluster-keda"])
    assert "HorizontalPodAutoscaler" not in kinds(objects)  # KEDA makes its own
    scaled = only(objects, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    deployment = only(objects, "Deployment")
    assert scaled["spec"]["scaleTargetRef"] == {"name": deployment["metadata"]["name"]}
    assert "replicas" not in deployment["spec"], "the autoscaler owns the count"
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (2, 50)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["serverAddress"] == "http://prometheus.monitoring.svc:9090"
    assert trigger["metadata"]["threshold"] == "200"
    assert trigger["metadata"]["query"] == (
        'sum(qa_active_streams{namespace="answers",pod=~"qa-qa-service-[a-z0-9]+-[a-z0-9]+"})'
    )
    scale_down = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert scale_down["scaleDown"]["policies"] == [
        {"type": "Pods", "value": 1, "periodSeconds": 60}
    ]


def test_the_metric_keda_queries_is_a_gauge_the_service_exports() -> None:
    families = {family.name: family for family in Telemetry("demo", "demo").registry.collect()}
    assert families["qa_active_streams"].type == "gauge"


def test_without_keda_the_hpa_scales_on_cpu(chart: helm.Chart) -> None:
    objects = render(chart, CASES["sentinel"])
    assert "ScaledObject" not in kinds(objects)
    hpa = only(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == only(objects, "Deployment")["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "replicas" not in only(objects, "Deployment")["spec"]


def test_the_disruption_budget_and_rollout_take_one_pod_at_a_time(chart: helm.Chart) -> None:
    objects = render(chart, CASES["sentinel"])
    budget = only(objects, "PodDisruptionBudget")
    deployment = only(objects, "Deployment")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    service = only(objects, "Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(
    ("values", "refusal"),
    [
        ({"replicaCount": 2}, "need redis.url or redis.existingSecret"),
        ({"autoscaling": {"keda": {"enabled": True}}}, "need redis.url or redis.existingSecret"),
        ({"httpRoute": {"enabled": True}}, "httpRoute.parentRefs"),
        ({"ingress": {"enabled": True}}, "ingress.hosts"),
        (
            # null removes a default, as `--set resources.requests.cpu=null` does.
            {
                "redis": {"url": "redis://r:6379"},
                "resources": {"requests": {"cpu": None}},
                "autoscaling": {"hpa": {"enabled": True}},
            },
            "autoscaling.hpa needs resources.requests.cpu",
        ),
    ],
)
def test_configurations_that_cannot_work_are_refused(
    chart: helm.Chart, values: dict[str, Any], refusal: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(refusal)):
        render(chart, values)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCount": "2"}, "/replicaCount"),
        ({"replicas": 2}, "additional properties 'replicas'"),
        ({"shutdown": {"graceSeconds": 6.5}}, "/shutdown/graceSeconds"),
        ({"env": {"QA_REDIS_URL": "redis://r:6379"}}, "QA_REDIS_URL"),
        ({"env": {"qa_model": "x"}}, "qa_model"),
        ({"redis": {"url": "http://r:6379"}}, "/redis/url"),
        ({"httpRoute": {"timeouts": {"request": "15 seconds"}}}, "/httpRoute/timeouts"),
        ({"ingress": {"timeoutSeconds": 30}}, "/ingress/timeoutSeconds"),
        ({"autoscaling": {"keda": {"streamsPerReplica": 0}}}, "streamsPerReplica"),
        ({"metrics": {"serviceMonitor": {"interval": "30 seconds"}}}, "/interval"),
        ({"metrics": {"prometheusRule": {"rules": []}}}, "additional properties 'rules'"),
    ],
)
def test_the_schema_refuses_wrong_types_and_unknown_keys(
    chart: helm.Chart, values: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(complaint)):
        render(chart, values)


def test_the_service_monitor_scrapes_every_pod_s_metrics(chart: helm.Chart) -> None:
    objects = render(chart, CASES["cluster-keda"])
    monitor = only(objects, "ServiceMonitor")
    service = only(objects, "Service")
    # Structurally, as the Prometheus Operator reads it (no schema to validate against).
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) == {"selector", "namespaceSelector", "endpoints"}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # It selects this release's Service, in its namespace, by the Service's own labels.
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items()
    assert selected == service["spec"]["selector"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["answers"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {
        "port": "http",
        "path": "/metrics",
        "interval": "15s",
        "scrapeTimeout": "10s",
    }
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}


def test_the_prometheus_rule_carries_the_shipped_alerts_unchanged(chart: helm.Chart) -> None:
    rule = only(render(chart, CASES["cluster-keda"]), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # Every rule, expression and annotation as the file has it: Helm templated nothing.
    assert rule["spec"] == yaml.safe_load(SHIPPED_ALERTS.read_text())
    assert "{{ $labels.job }}" in yaml.safe_dump(rule["spec"])


def test_the_chart_s_alerts_are_a_copy_of_the_shipped_ones() -> None:
    copy = CHART / "files" / "alerts.yaml"
    assert copy.read_bytes() == SHIPPED_ALERTS.read_bytes(), (
        "the chart's copy differs: cp deploy/observability/alerts.yaml "
        "deploy/helm/qa-service/files/alerts.yaml"
    )
