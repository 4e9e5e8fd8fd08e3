"""deploy/k8s stays true to the code: one Deployment per service, on the port its settings use."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from libs.stack.dev import ENDPOINTS

K8S = Path(__file__).parent.parent / "deploy" / "k8s"
SERVICES = {**ENDPOINTS, "sink": ("services.api.analytics.main:SinkSettings", "sink_http_port", "/readyz")}


def _deployments() -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in _documents() if d["kind"] == "Deployment"}


def test_every_service_has_a_deployment_on_its_settings_port_with_probes() -> None:
    deployments = _deployments()
    for name, (target, field, _) in SERVICES.items():
        module, cls = target.split(":")
        port = getattr(importlib.import_module(module), cls).model_fields[field].default
        container = deployments[f"meterflow-{name}"]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][0] == name
        assert container["ports"] == [{"name": "http", "containerPort": port}], name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def _documents() -> list[dict]:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    return [d for name in listed for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def test_single_state_workers_never_run_twice() -> None:
    deployments = _deployments()
    for name in ("sink", "archive"):
        spec = deployments[f"meterflow-{name}"]["spec"]
        assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate", name


def test_partitioned_processors_run_two_replicas_with_a_disruption_budget() -> None:
    deployments = _deployments()
    budgets = {d["metadata"]["name"]: d for d in _documents() if d["kind"] == "PodDisruptionBudget"}
    for name in ("billing", "control", "notify"):
        spec = deployments[f"meterflow-{name}"]["spec"]
        assert spec["replicas"] == 2 and spec["strategy"]["type"] == "RollingUpdate", name
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, name
        budget = budgets[f"meterflow-{name}"]["spec"]
        assert budget["minAvailable"] == 1
        assert budget["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
