"""deploy/k8s manifests agree with the service and stay hardened; each check is shown to fail when its property goes."""

import copy
import dataclasses
from pathlib import Path, PurePosixPath

import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
EXAMPLE_SECRET = K8S / "example" / "api-tokens-secret.yaml"
# The bearer-token settings (issue 26), read by the service's authentication rather than service/settings.py.
IMAGE_HOME = "/home/bentoml"  # BENTOML_HOME in the image BentoML's Dockerfile builds


def applied() -> list[dict]:
    """What `kubectl apply -f deploy/k8s/` applies (it does not descend into example/)."""
    return [d for f in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


@pytest.fixture(scope="module")
def manifests():
    docs = {d["kind"]: d for d in applied()}
    docs["Secret"] = yaml.safe_load(EXAMPLE_SECRET.read_text())
    return docs


# --- helpers ----------------------------------------------------------------------------------------

def pod_spec(m):
    return m["Deployment"]["spec"]["template"]["spec"]


def pod_labels(m):
    return m["Deployment"]["spec"]["template"]["metadata"]["labels"]


def all_containers(m):
    spec = pod_spec(m)
    return spec.get("initContainers", []) + spec["containers"]


def server(m):
    return pod_spec(m)["containers"][0]


def env_of(container) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def container_port(m, port):
    """The containerPort a Service/probe/policy port names (by name or number), or None."""
    for p in server(m).get("ports", []):
        if port in (p.get("name"), p["containerPort"]):
            return p["containerPort"]
    return None


def mount_holding(container, path):
    """The volumeMount whose mountPath is `path` or its nearest parent, or None."""
    path = PurePosixPath(path)
    holding = [v for v in container.get("volumeMounts", [])
               if path == PurePosixPath(v["mountPath"]) or PurePosixPath(v["mountPath"]) in path.parents]
    return max(holding, key=lambda v: len(v["mountPath"]), default=None)


def volume(m, name):
    return next((v for v in pod_spec(m).get("volumes", []) if v["name"] == name), {})


def selects(selector, labels) -> bool:
    match = selector.get("matchLabels", {})
    return bool(match) and match.items() <= labels.items()


# --- checks: each takes the manifests and asserts one property ----------------------------------------

def check_containers_locked_down(m):
    for c in all_containers(m):
        sc = c.get("securityContext", {})
        assert sc.get("allowPrivilegeEscalation") is False, f"{c['name']}: allowPrivilegeEscalation must be false"
        assert sc.get("readOnlyRootFilesystem") is True, f"{c['name']}: readOnlyRootFilesystem must be true"
        assert sc.get("privileged", False) is False, f"{c['name']}: privileged"
        caps = sc.get("capabilities", {})
        assert "ALL" in caps.get("drop", []), f"{c['name']}: capabilities must drop ALL"
        assert not caps.get("add"), f"{c['name']}: adds capabilities {caps.get('add')}"


def check_pod_non_root_with_runtime_default_seccomp(m):
    spec = pod_spec(m)
    sc = spec.get("securityContext", {})
    assert sc.get("runAsNonRoot") is True
    for key in ("runAsUser", "runAsGroup", "fsGroup"):
        assert isinstance(sc.get(key), int) and sc[key] > 0, f"pod securityContext.{key} must be a non-root id"
    assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    for c in all_containers(m):
        csc = c.get("securityContext", {})
        assert csc.get("runAsNonRoot", True) is True and csc.get("runAsUser", 1) != 0, f"{c['name']} runs as root"
        assert csc.get("seccompProfile", {"type": "RuntimeDefault"})["type"] == "RuntimeDefault", c["name"]
    assert spec.get("automountServiceAccountToken") is False, "the pod needs no Kubernetes API token"
    for shared in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(shared), shared


def check_writable_paths_are_empty_dirs(m):
    # Found by running the image with a read-only root (deploy/container.sh): BentoML writes its sockets,
    # Prometheus files and spooled uploads through `tempfile` (TMPDIR, else /tmp), and creates its store
    # folders under BENTOML_HOME at start-up; nothing else, once ONNX Runtime's telemetry is off.
    c = server(m)
    env = env_of(c)
    needed = {env.get("TMPDIR", "/tmp"): "temporary files", env.get("BENTOML_HOME", IMAGE_HOME): "BENTOML_HOME"}
    for path, what in needed.items():
        mount = mount_holding(c, path)
        assert mount is not None, f"{what} ({path}) is on the read-only root filesystem"
        assert "emptyDir" in volume(m, mount["name"]), f"{what} ({path}) must be in an emptyDir"
        assert not mount.get("readOnly"), f"{what} ({path}) is mounted read-only"
    # ONNX Runtime otherwise keeps a telemetry device id under ~/.cache (and reports to Microsoft).
    assert env.get("ORT_DISABLE_TELEMETRY") == "1"
    mounted = {v["name"] for x in all_containers(m) for v in x.get("volumeMounts", [])}
    for v in pod_spec(m).get("volumes", []):
        assert "emptyDir" not in v or v["name"] in mounted, f"emptyDir {v['name']} is mounted nowhere"


def check_pdb_covers_the_pods(m):
    pdb = m["PodDisruptionBudget"]["spec"]
    assert selects(pdb["selector"], pod_labels(m)), "the PodDisruptionBudget selects none of the pods"
    fewest = min(m["Deployment"]["spec"]["replicas"], m["HorizontalPodAutoscaler"]["spec"]["minReplicas"])
    if "minAvailable" in pdb:
        # as many as the replicas would block every node drain
        assert isinstance(pdb["minAvailable"], int) and 1 <= pdb["minAvailable"] < fewest
    else:
        assert isinstance(pdb.get("maxUnavailable"), int) and 1 <= pdb["maxUnavailable"] < fewest


def check_network_policy_admits_only_the_service_port(m):
    policy = m["NetworkPolicy"]["spec"]
    assert selects(policy["podSelector"], pod_labels(m)), "the NetworkPolicy selects none of the pods"
    assert "Ingress" in policy.get("policyTypes", [])
    served = {container_port(m, p["targetPort"]) for p in m["Service"]["spec"]["ports"]}
    rules = policy.get("ingress", [])
    assert rules, "no ingress rule: the service would be unreachable"
    for rule in rules:
        assert rule.get("ports"), "an ingress rule without ports admits every port"
        for p in rule["ports"]:
            assert p.get("protocol", "TCP") == "TCP" and "endPort" not in p
            assert container_port(m, p.get("port")) in served, f"admits port {p.get('port')}, not the Service's"
    # The service opens no connections: egress is closed (an empty list under Egress denies all).
    assert "Egress" in policy["policyTypes"] and not policy.get("egress")


def check_tokens_come_from_a_read_only_secret(m):
    c = server(m)
    env = env_of(c)
    assert "SERVICE_API_TOKENS" not in env, "tokens inline in the manifest"
    assert "SERVICE_API_TOKENS_FILE" in env
    path = env["SERVICE_API_TOKENS_FILE"]
    mount = mount_holding(c, path)
    assert mount is not None and mount.get("readOnly") is True, f"{path} is not on a read-only mount"
    secret = volume(m, mount["name"]).get("secret")
    assert secret is not None, f"{path} is not in a Secret volume"
    assert secret["secretName"] == m["Secret"]["metadata"]["name"]
    assert secret.get("optional") is not True, "the pod must not start without its tokens"
    inside = str(PurePosixPath(path).relative_to(mount["mountPath"]))
    keys = {i["path"]: i["key"] for i in secret["items"]} if "items" in secret else None
    key = keys.get(inside) if keys is not None else inside
    assert key in {**m["Secret"].get("data", {}), **m["Secret"].get("stringData", {})}, f"no key for {inside}"
    assert secret.get("defaultMode", 0o644) & 0o007 == 0, "the tokens file is readable by any user"


def check_probes_hit_health_routes_on_the_container_port(m):
    c = server(m)
    expected = {"livenessProbe": "/livez", "readinessProbe": "/readyz", "startupProbe": "/readyz"}
    for probe, path in expected.items():
        if probe == "readinessProbe" and "grpc" in c[probe]:  # grpc.health.v1 of the whole server: /readyz's state
            grpc = c[probe]["grpc"]
            assert grpc.get("service", "") == "", "the readiness probe must ask for the whole server ('')"
            assert container_port(m, grpc["port"]) == grpc_port(m), "the gRPC probe must target the gRPC port"
            continue
        get = c[probe]["httpGet"]
        assert get["path"] == path, f"{probe} must GET {path}"
        assert container_port(m, get["port"]) is not None, f"{probe} targets no container port"


def grpc_port(m) -> int:
    """The port the pods serve gRPC on: SERVICE_GRPC_PORT (or its default), which must be the container port named grpc."""
    from service.settings import Settings

    port = Settings.from_env(env_of(server(m))).grpc_port
    assert container_port(m, "grpc") == port, f"the container port named grpc is not SERVICE_GRPC_PORT ({port})"
    return port


def check_grpc_is_served_and_admitted(m):
    port = grpc_port(m)
    assert port, "SERVICE_GRPC_PORT=0: no gRPC"
    served = {container_port(m, p["targetPort"]) for p in m["Service"]["spec"]["ports"]}
    assert port in served, "the Service does not reach the gRPC port"
    admitted = {container_port(m, p.get("port")) for rule in m["NetworkPolicy"]["spec"]["ingress"] for p in rule["ports"]}
    assert port in admitted, "the NetworkPolicy does not admit the gRPC port"


def check_a_rolling_update_loses_nothing(m):
    """A new pod is ready before an old one stops; the old one leaves the Service within its drain and is given the drain
    plus the longest request to finish (docs/deploy.md)."""
    from service.service import ThermoDigits
    from service.settings import Settings

    update = m["Deployment"]["spec"].get("strategy", {})
    assert update.get("type", "RollingUpdate") == "RollingUpdate"
    assert update.get("rollingUpdate", {}).get("maxUnavailable") == 0, "maxUnavailable must be 0"
    assert update["rollingUpdate"].get("maxSurge", 1) not in (0, "0%"), "maxSurge 0 with maxUnavailable 0 cannot roll"
    drain = Settings.from_env(env_of(server(m))).drain_s
    probe = server(m)["readinessProbe"]
    unready_within = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3) + probe.get("timeoutSeconds", 1)
    assert unready_within < drain, f"readiness fails {unready_within} s after SIGTERM: not within the {drain}-s drain"
    longest = ThermoDigits.config["traffic"]["timeout"]
    grace = pod_spec(m).get("terminationGracePeriodSeconds", 30)
    assert grace >= drain + longest + 1, f"terminationGracePeriodSeconds {grace} < drain {drain} + longest {longest}"


def check_service_reaches_the_container_port(m):
    spec = m["Service"]["spec"]
    assert selects({"matchLabels": spec["selector"]}, pod_labels(m))
    assert spec["selector"] == m["Deployment"]["spec"]["selector"]["matchLabels"]
    for p in spec["ports"]:
        assert container_port(m, p["targetPort"]) is not None, f"targetPort {p['targetPort']} is no container port"


# --- the manifests pass every check ---------------------------------------------------------------------

def test_what_kubectl_applies():
    kinds = [d["kind"] for d in applied()]
    assert sorted(kinds) == sorted({"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                                    "NetworkPolicy"})
    assert "Secret" not in kinds  # the example's placeholder must never replace real tokens


def test_every_container_is_locked_down(manifests):
    check_containers_locked_down(manifests)


def test_pod_runs_non_root_with_runtime_default_seccomp(manifests):
    check_pod_non_root_with_runtime_default_seccomp(manifests)


def test_what_bentoml_writes_is_in_empty_dirs(manifests):
    check_writable_paths_are_empty_dirs(manifests)


def test_pdb_covers_the_pods(manifests):
    check_pdb_covers_the_pods(manifests)


def test_network_policy_admits_only_the_service_port(manifests):
    check_network_policy_admits_only_the_service_port(manifests)


def test_tokens_come_from_a_read_only_secret(manifests):
    check_tokens_come_from_a_read_only_secret(manifests)


def test_probes_hit_health_routes_on_the_container_port(manifests):
    check_probes_hit_health_routes_on_the_container_port(manifests)


def test_a_rolling_update_loses_nothing(manifests):
    check_a_rolling_update_loses_nothing(manifests)


def test_service_reaches_the_container_port(manifests):
    check_service_reaches_the_container_port(manifests)
    assert [p["containerPort"] for p in server(manifests)["ports"]] == [3000, 8001]  # `bentoml serve`'s, gRPC's default


def test_grpc_is_served_and_admitted(manifests):
    check_grpc_is_served_and_admitted(manifests)


def test_probe_routes_answer_without_a_token(manifests, client):
    from service.api.access import scope_of

    paths = {server(manifests)[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe", "startupProbe")
             if "httpGet" in server(manifests)[p]}
    for path in paths:
        assert client.get(path).status_code == 200 and scope_of(path) is None, path


def test_env_vars_are_ones_the_service_reads(manifests):
    from service.settings import Settings

    env = env_of(server(manifests))
    known = {f.metadata["env"] for f in dataclasses.fields(Settings)}
    unknown = {k for k in env if k.startswith("SERVICE_")} - known
    assert not unknown, f"not settings of the service: {unknown}"
    settings = Settings.from_env(env)  # raises on a bad value
    assert settings.backend == "onnx" and settings.device == "cpu"


def test_hpa_scales_the_deployment(manifests):
    target = manifests["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", manifests["Deployment"]["metadata"]["name"])
    assert "cpu" in server(manifests)["resources"]["requests"]  # utilisation targets need a request


# --- each check fails once the manifest loses its property ------------------------------------------------

def security(m):
    return server(m)["securityContext"]


def pod_security(m):
    return pod_spec(m)["securityContext"]


def drop_env(m, name):
    server(m)["env"] = [e for e in server(m)["env"] if e["name"] != name]


def set_env(m, name, value):
    drop_env(m, name)
    server(m)["env"].append({"name": name, "value": value})


def replace_volume(m, new):
    volumes = pod_spec(m)["volumes"]
    volumes[[v["name"] for v in volumes].index(new["name"])] = new


def mount_named(m, name):
    return next(v for v in server(m)["volumeMounts"] if v["name"] == name)


def token_volume(m):
    return volume(m, mount_holding(server(m), env_of(server(m))["SERVICE_API_TOKENS_FILE"])["name"])["secret"]


MUTATIONS = {
    check_containers_locked_down: {
        "privilege escalation unset": lambda m: security(m).pop("allowPrivilegeEscalation"),
        "privilege escalation allowed": lambda m: security(m).update(allowPrivilegeEscalation=True),
        "writable root": lambda m: security(m).pop("readOnlyRootFilesystem"),
        "privileged": lambda m: security(m).update(privileged=True),
        "capabilities kept": lambda m: security(m)["capabilities"].update(drop=["NET_RAW"]),
        "capability added": lambda m: security(m)["capabilities"].update(add=["NET_ADMIN"]),
        "init container without securityContext":
            lambda m: pod_spec(m).update(initContainers=[{"name": "init", "image": "busybox"}]),
    },
    check_pod_non_root_with_runtime_default_seccomp: {
        "runAsNonRoot unset": lambda m: pod_security(m).pop("runAsNonRoot"),
        "root user": lambda m: pod_security(m).update(runAsUser=0),
        "no fsGroup": lambda m: pod_security(m).pop("fsGroup"),
        "no seccomp": lambda m: pod_security(m).pop("seccompProfile"),
        "unconfined": lambda m: pod_security(m).update(seccompProfile={"type": "Unconfined"}),
        "container as root": lambda m: security(m).update(runAsUser=0),
        "container unconfined": lambda m: security(m).update(seccompProfile={"type": "Unconfined"}),
        "service-account token mounted": lambda m: pod_spec(m).pop("automountServiceAccountToken"),
        "host network": lambda m: pod_spec(m).update(hostNetwork=True),
    },
    check_writable_paths_are_empty_dirs: {
        "no /tmp mount": lambda m: server(m).update(
            volumeMounts=[v for v in server(m)["volumeMounts"] if v["mountPath"] != "/tmp"]),
        "/tmp read-only": lambda m: mount_named(m, "tmp").update(readOnly=True),
        "/tmp on the node's disk": lambda m: replace_volume(m, {"name": "tmp", "hostPath": {"path": "/var/tmp"}}),
        "BENTOML_HOME left in the image": lambda m: drop_env(m, "BENTOML_HOME"),
        "BENTOML_HOME on the root": lambda m: set_env(m, "BENTOML_HOME", "/var/lib/bentoml"),
        "TMPDIR on the root": lambda m: set_env(m, "TMPDIR", "/var/tmp"),
        "ONNX Runtime telemetry on": lambda m: drop_env(m, "ORT_DISABLE_TELEMETRY"),
        "emptyDir mounted nowhere": lambda m: pod_spec(m)["volumes"].append({"name": "cache", "emptyDir": {}}),
    },
    check_pdb_covers_the_pods: {
        "selects other pods": lambda m: m["PodDisruptionBudget"]["spec"].update(
            selector={"matchLabels": {"app": "other"}}),
        "selects nothing": lambda m: m["PodDisruptionBudget"]["spec"].update(selector={}),
        "blocks every drain": lambda m: m["PodDisruptionBudget"]["spec"].update(minAvailable=2),
        "protects nothing": lambda m: m["PodDisruptionBudget"]["spec"].update(minAvailable=0),
    },
    check_network_policy_admits_only_the_service_port: {
        "other pods": lambda m: m["NetworkPolicy"]["spec"].update(podSelector={"matchLabels": {"app": "other"}}),
        "all pods": lambda m: m["NetworkPolicy"]["spec"].update(podSelector={}),
        "any port": lambda m: m["NetworkPolicy"]["spec"]["ingress"][0].pop("ports"),
        "another port": lambda m: m["NetworkPolicy"]["spec"]["ingress"][0]["ports"].append({"port": 3001}),
        "a port range": lambda m: m["NetworkPolicy"]["spec"]["ingress"][0]["ports"][0].update(endPort=3100),
        "UDP": lambda m: m["NetworkPolicy"]["spec"]["ingress"][0]["ports"][0].update(protocol="UDP"),
        "ingress not governed": lambda m: m["NetworkPolicy"]["spec"].update(policyTypes=["Egress"]),
        "egress open": lambda m: m["NetworkPolicy"]["spec"].update(policyTypes=["Ingress"]),
        "egress allowed": lambda m: m["NetworkPolicy"]["spec"].update(egress=[{}]),
    },
    check_tokens_come_from_a_read_only_secret: {
        "no token file": lambda m: drop_env(m, "SERVICE_API_TOKENS_FILE"),
        "tokens inline": lambda m: set_env(m, "SERVICE_API_TOKENS", "secret"),
        "mount writable": lambda m: mount_named(m, "api-tokens").pop("readOnly"),
        "file outside the mount": lambda m: set_env(m, "SERVICE_API_TOKENS_FILE", "/tmp/tokens"),
        "file not in the volume": lambda m: set_env(m, "SERVICE_API_TOKENS_FILE", "/etc/thermo-digits/api-tokens/x"),
        "another Secret": lambda m: token_volume(m).update(secretName="other"),
        "another key": lambda m: token_volume(m).update(items=[{"key": "token", "path": "tokens"}]),
        "optional": lambda m: token_volume(m).update(optional=True),
        "world-readable": lambda m: token_volume(m).update(defaultMode=0o444),
        "default mode": lambda m: token_volume(m).pop("defaultMode"),
    },
    check_probes_hit_health_routes_on_the_container_port: {
        "liveness elsewhere": lambda m: server(m)["livenessProbe"]["httpGet"].update(path="/healthz"),
        "readiness on liveness": lambda m: server(m).update(readinessProbe={"httpGet": {"path": "/livez", "port": "http"}}),
        "startup elsewhere": lambda m: server(m)["startupProbe"]["httpGet"].update(path="/"),
        "wrong port": lambda m: server(m)["startupProbe"]["httpGet"].update(port=3001),
        "gRPC readiness on the HTTP port": lambda m: server(m)["readinessProbe"]["grpc"].update(port=3000),
        "gRPC readiness of one service": lambda m: server(m)["readinessProbe"]["grpc"].update(service="x"),
    },
    check_grpc_is_served_and_admitted: {
        "no gRPC": lambda m: set_env(m, "SERVICE_GRPC_PORT", "0"),
        "another port than the container's": lambda m: set_env(m, "SERVICE_GRPC_PORT", "9001"),
        "not in the Service": lambda m: m["Service"]["spec"].update(ports=m["Service"]["spec"]["ports"][:1]),
        "not admitted": lambda m: m["NetworkPolicy"]["spec"]["ingress"][0].update(
            ports=m["NetworkPolicy"]["spec"]["ingress"][0]["ports"][:1]),
    },
    check_a_rolling_update_loses_nothing: {
        "one pod down at a time": lambda m: m["Deployment"]["spec"]["strategy"]["rollingUpdate"].update(maxUnavailable=1),
        "no surge": lambda m: m["Deployment"]["spec"]["strategy"]["rollingUpdate"].update(maxSurge=0),
        "recreate": lambda m: m["Deployment"]["spec"].update(strategy={"type": "Recreate"}),
        "Kubernetes' default grace": lambda m: pod_spec(m).pop("terminationGracePeriodSeconds"),
        "readiness too slow to fail": lambda m: server(m)["readinessProbe"].update(periodSeconds=5),
        "no drain": lambda m: set_env(m, "SERVICE_DRAIN_S", "0"),
    },
    check_service_reaches_the_container_port: {
        "targetPort": lambda m: m["Service"]["spec"]["ports"][0].update(targetPort=8080),
        "named targetPort": lambda m: m["Service"]["spec"]["ports"][0].update(targetPort="web"),
        "selector": lambda m: m["Service"]["spec"].update(selector={"app": "other"}),
    },
}


@pytest.mark.parametrize("check,mutate", [
    pytest.param(check, mutate, id=f"{check.__name__.removeprefix('check_')}: {name}")
    for check, mutations in MUTATIONS.items() for name, mutate in mutations.items()])
def test_check_fails_without_its_property(manifests, check, mutate):
    broken = copy.deepcopy(manifests)
    mutate(broken)
    with pytest.raises(AssertionError):
        check(broken)


def test_the_bentos_pin_the_python_the_base_image_is_built_with():
    """deploy/container.sh builds one python:X-slim base; a Bento naming another Python would need a base it cannot build."""
    import re

    import yaml

    repo = K8S.parents[1]
    base = re.search(r"python:(\d+\.\d+)-slim", (repo / "deploy" / "container.sh").read_text())
    assert base, "deploy/container.sh names no python:X-slim base"
    for bentofile in ("bentofile.yaml", "bentofile.gpu.yaml"):
        pinned = yaml.safe_load((repo / bentofile).read_text())["docker"]["python_version"]
        assert str(pinned) == base.group(1), bentofile
