"""Every file of the operations pack parses and validates against the schemas the registries ship."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema

from tests.support.servers import ROOT

pytestmark = pytest.mark.system  # promtool, amtool, the docker client where present

DEPLOY = ROOT / "deploy"
DASHBOARDS = ROOT / "dashboards"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.30.0"

YAML_FILES = sorted(
    p for base in (DEPLOY, DASHBOARDS) for p in base.rglob("*") if p.suffix in {".yaml", ".yml"}
)
JSON_FILES = sorted(DASHBOARDS.rglob("*.json"))


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}:{doc['kind']}:{doc['metadata']['name']}", doc)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in _docs(path)
    ]


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses(path: Path) -> None:
    """Every YAML file in deploy/ and dashboards/ parses, with at least one document."""
    assert _docs(path)


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_json_parses(path: Path) -> None:
    """Every JSON file parses."""
    assert json.loads(path.read_text())


CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    # The Prometheus Operator CRDs are not in kubernetes-validate; these check what matters.
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": {"type": "object", "required": ["name", "namespace"]},
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": {"type": "object", "required": ["matchLabels"]},
                    "namespaceSelector": {"type": "object"},
                    "jobLabel": {"type": "string"},
                    "endpoints": {"type": "array", "minItems": 1, "items": {
                        "type": "object",
                        "required": ["port", "path"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"const": "/metrics"},
                            "interval": {"type": "string", "pattern": "^[0-9]+[smh]$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+[smh]$"},
                            "honorLabels": {"type": "boolean"},
                        },
                    }},
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": {"type": "object", "required": ["name", "namespace"]},
            "spec": {"type": "object", "required": ["groups"], "additionalProperties": False,
                     "properties": {"groups": {"type": "array", "minItems": 1}}},
        },
    },
}


@pytest.mark.parametrize(("name", "doc"), _k8s_docs(), ids=[n for n, _ in _k8s_docs()])
def test_kubernetes_manifest_validates(name: str, doc: dict[str, Any]) -> None:
    """Core kinds validate strictly against the Kubernetes OpenAPI schemas; CRDs against ours."""
    if doc["kind"] in CRD_SCHEMAS:
        jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kubernetes_validator_rejects_a_typo() -> None:
    """Control: the strict validator does catch an unknown field."""
    deployment = next(d for n, d in _k8s_docs() if n.startswith("deployment.yaml:Deployment"))
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    """`kubectl apply -k deploy/k8s` applies every manifest in the folder."""
    listed = set(_docs(K8S / "kustomization.yaml")[0]["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_gateway_deployment_is_fit_for_long_streams() -> None:
    """Probes, a preStop pause and a grace period longer than preStop + drain."""
    deployment = _docs(K8S / "deployment.yaml")[0]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = _env(container)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(env["GATEWAY_DRAIN_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain
    assert drain >= 60, "streams need minutes, not the 30 s default, to finish"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    for secret_var in ("ANTHROPIC_API_KEY", "GATEWAY_API_KEY_SHA256"):
        assert env[secret_var]["secretKeyRef"]["name"] == "claude-gateway-secrets"
    assert env["GATEWAY_REDIS_URL"].startswith("redis://claude-gateway-redis:")
    assert env["GATEWAY_HOST"] == "0.0.0.0"
    assert {"ANTHROPIC_API_KEY", "GATEWAY_API_KEY_SHA256"} <= env.keys()
    assert float(env["GATEWAY_KEEPALIVE_SECONDS"]) < 60, "below every LB idle timeout"


def test_hpa_scales_on_active_streams_below_the_cap() -> None:
    """The HPA targets the active-streams metric at a value below GATEWAY_MAX_STREAMS."""
    hpa = _docs(K8S / "hpa.yaml")[0]
    pods = next(m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods")
    assert pods["metric"]["name"] == "claude_gateway_active_streams"
    env = _env(_docs(K8S / "deployment.yaml")[0]["spec"]["template"]["spec"]["containers"][0])
    assert int(pods["target"]["averageValue"]) < int(env["GATEWAY_MAX_STREAMS"])
    adapter = yaml.safe_load(_docs(K8S / "prometheus-adapter.yaml")[0]["data"]["config.yaml"])
    assert "claude_gateway_active_streams" in adapter["rules"][0]["seriesQuery"]


def test_service_names_the_job_the_alerts_select() -> None:
    """The Service (so the ServiceMonitor's job label) is `claude-gateway`, as the rules expect."""
    service = _docs(K8S / "service.yaml")[0]
    assert service["metadata"]["name"] == "claude-gateway"
    monitor = _docs(K8S / "servicemonitor.yaml")[0]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert 'job="claude-gateway"' in (DEPLOY / "prometheus" / "alerts.yml").read_text()
    prom = _docs(DEPLOY / "prometheus" / "prometheus.yml")[0]
    assert "claude-gateway" in [job["job_name"] for job in prom["scrape_configs"]]


def test_renderings_are_up_to_date() -> None:
    """deploy/k8s/prometheusrule.yaml and otel-collector.yaml match deploy/render.py output."""
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "render.py"), "--check"], capture_output=True, text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_prometheus_rule_holds_the_same_groups_as_alerts_yml() -> None:
    """The Kubernetes PrometheusRule and the compose rule file are the same rule groups."""
    rule = _docs(K8S / "prometheusrule.yaml")[0]
    assert rule["spec"]["groups"] == _docs(DEPLOY / "prometheus" / "alerts.yml")[0]["groups"]


def test_collector_configmap_matches_compose_config() -> None:
    """The collector runs the same pipeline in compose and on Kubernetes."""
    config_map = _docs(K8S / "otel-collector.yaml")[0]
    k8s_config = yaml.safe_load(config_map["data"]["config.yaml"])
    compose_config = _docs(DEPLOY / "otel-collector" / "config.yaml")[0]
    assert k8s_config["service"] == compose_config["service"]
    assert k8s_config["receivers"] == compose_config["receivers"]
    assert set(compose_config["exporters"]) == set(k8s_config["exporters"])


def test_compose_file_validates_against_the_compose_spec() -> None:
    """deploy/compose.yaml validates against the compose-spec schema vendored by check-jsonschema."""
    compose = _docs(DEPLOY / "compose.yaml")[0]
    jsonschema.validate(compose, get_builtin_schema("vendor.compose-spec"))
    services = compose["services"]
    expected = {"gateway", "nginx", "prometheus", "alertmanager", "grafana", "otel-collector",
                "tempo", "redis"}
    assert expected <= services.keys()
    for name, service in services.items():
        image = service["image"]
        assert re.search(r":v?[0-9][\w.-]*$", image) or image.endswith(":local"), (
            f"{name}: pin the image version ({image})")
    for name in ("gateway", "nginx", "prometheus", "alertmanager", "grafana", "redis"):
        assert "healthcheck" in services[name], name
    gateway = services["gateway"]
    drain = int(gateway["environment"]["GATEWAY_DRAIN_SECONDS"])
    assert int(gateway["stop_grace_period"].rstrip("s")) > drain
    # Every file compose mounts from the repository exists.
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source


def test_compose_config_with_docker_client_when_available() -> None:
    """`docker compose config` accepts the file where the compose plugin exists."""
    docker = shutil.which("docker")
    probe = subprocess.run(
        [docker or "false", "compose", "version"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        # No compose plugin here (only the bare client): the schema test above stands in.
        assert _docs(DEPLOY / "compose.yaml")
        return
    result = subprocess.run(
        [docker or "docker", "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr


def test_prometheus_config_passes_promtool() -> None:
    """promtool accepts the compose Prometheus config and the rule file it loads."""
    result = subprocess.run(
        ["promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_config() -> None:
    """Alertmanager's config passes amtool (installed by `make test`), and routes both severities."""
    config = _docs(DEPLOY / "alertmanager" / "alertmanager.yml")[0]
    receivers = {r["name"] for r in config["receivers"]}
    routes = config["route"]["routes"]
    assert {r["receiver"] for r in routes} <= receivers
    assert {m for r in routes for m in r["matchers"]} >= {'severity="critical"',
                                                          'severity="warning"'}
    amtool = shutil.which("amtool")
    assert amtool, "amtool is missing: `make test` installs prometheus-alertmanager"
    result = subprocess.run(
        [amtool, "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_points_at_the_dashboards() -> None:
    """Datasources carry the exemplar link to Tempo; the provider path is what compose mounts."""
    datasources = _docs(DASHBOARDS / "provisioning" / "datasources" / "claude-gateway.yaml")[0]
    by_type = {d["type"]: d for d in datasources["datasources"]}
    link = by_type["prometheus"]["jsonData"]["exemplarTraceIdDestinations"][0]
    assert link == {"name": "trace_id", "datasourceUid": by_type["tempo"]["uid"],
                    "urlDisplayLabel": "Open trace"}
    provider = _docs(DASHBOARDS / "provisioning" / "dashboards" / "claude-gateway.yaml")[0]
    path = provider["providers"][0]["options"]["path"]
    grafana_volumes = _docs(DEPLOY / "compose.yaml")[0]["services"]["grafana"]["volumes"]
    assert f"../dashboards:{path}:ro" in grafana_volumes


def test_dockerfile_runs_unprivileged_and_forwards_signals() -> None:
    """The image runs as a non-root user, exec-form CMD (SIGTERM reaches the gateway to drain)."""
    text = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"(?m)^USER\s+(\S+)", text)
    assert users, "no USER"
    assert users[-1] not in {"root", "0"}
    cmd = re.findall(r"(?m)^CMD\s+(.+)$", text)[-1]
    assert json.loads(cmd)[:2] == ["claude-gateway", "serve"]
    assert "HEALTHCHECK" in text
    for source in re.findall(r"(?m)^COPY\s+(?!--from)(\S+)", text):
        assert (ROOT / source).exists(), source
