"""deploy/k8s manifests agree with the service: ports, probe paths that exist, env vars the service reads."""

from pathlib import Path

import pytest
import yaml

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"


@pytest.fixture(scope="module")
def manifests():
    docs = [d for f in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    return {d["kind"]: d for d in docs}


def test_all_three_kinds_exist(manifests):
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= set(manifests)


def test_probes_hit_routes_the_app_serves(manifests, client):
    container = manifests["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    paths = {container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert paths == {"/readyz", "/livez"}
    for path in paths:
        assert client.get(path).status_code == 200


def test_ports_line_up(manifests):
    container = manifests["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named == {"http": 3000}  # `bentoml serve`'s default port, used by the image
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in named
    service = manifests["Service"]["spec"]
    assert service["selector"] == manifests["Deployment"]["spec"]["selector"]["matchLabels"]
    assert all(p["targetPort"] in named for p in service["ports"])


def test_env_vars_are_ones_the_service_reads(manifests):
    import dataclasses

    from service.settings import Settings

    container = manifests["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    known = {f.metadata["env"] for f in dataclasses.fields(Settings)}
    unknown = {k for k in env if k.startswith("SERVICE_")} - known
    assert not unknown, f"not settings of the service: {unknown}"
    settings = Settings.from_env(env)  # raises on a bad value
    assert settings.backend == "onnx" and settings.device == "cpu"


def test_hpa_scales_the_deployment(manifests):
    target = manifests["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", manifests["Deployment"]["metadata"]["name"])
    container = manifests["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert "cpu" in container["resources"]["requests"]  # utilisation targets need a request
