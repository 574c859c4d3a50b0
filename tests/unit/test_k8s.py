"""deploy/k8s/ is valid Kubernetes, and set the way this service needs.

Kubernetes' own schema (kubernetes-validate, strict: an unknown field is refused) checks field names, types and
required fields. The checks after it are of what no schema knows: the hardening, the drain and grace-period
arithmetic, and that ports, env vars, probes and selectors agree with the service and with each other. Each of
those is shown to fail once its setting is taken out of a copy of the manifests."""

import copy
import dataclasses
import re
from pathlib import Path, PurePosixPath

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
EXAMPLE_SECRET = K8S / "example" / "api-tokens-secret.yaml"
IMAGE_HOME = "/home/bentoml"  # BENTOML_HOME in the image BentoML's Dockerfile builds
# The oldest Kubernetes the manifests claim (gRPC readiness probes are GA from 1.27), and the newest the pinned
# kubernetes-validate has schemas for (where an API version Kubernetes has since removed has none).
KUBERNETES = ("1.27", "1.37")


def applied() -> list[dict]:
    """What `kubectl apply -f deploy/k8s/` applies (it does not descend into example/)."""
    return [d for f in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


EVERY = applied() + [yaml.safe_load(EXAMPLE_SECRET.read_text())]


@pytest.fixture(scope="module")
def manifests():
    return {d["kind"]: d for d in copy.deepcopy(EVERY)}


def pod_spec(m):
    return m["Deployment"]["spec"]["template"]["spec"]


def server(m):
    return pod_spec(m)["containers"][0]


def env_of(container) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def settings(m):
    from service.settings import Settings

    return Settings.from_env(env_of(server(m)))


def container_port(m, port):
    """The containerPort a Service/probe/policy port names (by name or number), or None."""
    ports = server(m).get("ports", [])
    return next((p["containerPort"] for p in ports if port in (p.get("name"), p["containerPort"])), None)


def mount_holding(container, path):
    """The volumeMount whose mountPath is `path` or its nearest parent, or None."""
    path = PurePosixPath(path)
    holding = [v for v in container.get("volumeMounts", []) if PurePosixPath(v["mountPath"]) in (path, *path.parents)]
    return max(holding, key=lambda v: len(v["mountPath"]), default=None)


def volume(m, name):
    return next((v for v in pod_spec(m).get("volumes", []) if v["name"] == name), {})


def selects(selector, m) -> bool:
    match = selector.get("matchLabels", {})
    return bool(match) and match.items() <= m["Deployment"]["spec"]["template"]["metadata"]["labels"].items()


DROP = object()


def item(items: list, key: str) -> int:
    """The index of the list item named by its position or its `name`; len(items) when there is none."""
    return int(key) if key.isdigit() else next((i for i, x in enumerate(items) if x.get("name") == key), len(items))


def mutated(m, path: str, value):
    """A copy of the manifests with `path` set to `value` (DROP: removed). A path starts at a kind, `pod` or
    `server`; a list item is named by its index or its `name` (a new name is appended: an env var, a volume)."""
    m = copy.deepcopy(m)
    root, *keys, last = path.split(".")
    node = pod_spec(m) if root == "pod" else server(m) if root == "server" else m[root]
    for key in keys:
        if isinstance(node, list) and item(node, key) == len(node):
            node.append({"name": key})
        node = node[item(node, key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        i = item(node, last)
        node[i:i + 1] = [] if value is DROP else [value]
    elif value is DROP:
        del node[last]
    else:
        node[last] = value
    return m


# --- Kubernetes' schema -------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES)
@pytest.mark.parametrize("doc", [pytest.param(d, id=d["kind"]) for d in EVERY])
def test_valid_against_the_kubernetes_schema(doc, version):
    assert kubernetes_validate.validate(doc, version, strict=True) == version  # not an older version's schema


@pytest.mark.parametrize("path,value", [
    pytest.param("pod.terminationGracePeriodSecond", 40, id="misspelt field"),
    pytest.param("server.securityContext.readOnlyRootFileSystem", True, id="misspelt field deep down"),
    pytest.param("Deployment.spec.replicas", "2", id="a string for an int"),
    pytest.param("server.readinessProbe.grpc.port", "grpc", id="a port name where only a number goes"),
    pytest.param("server.name", DROP, id="a required field missing"),
])
def test_the_schema_refuses_a_broken_manifest(manifests, path, value):
    for version in KUBERNETES:
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(mutated(manifests, path, value)["Deployment"], version, strict=True)


# --- what no schema knows: each check takes the manifests and asserts one property ------------------------------

def check_hardened(m):
    spec = pod_spec(m)
    sc = spec.get("securityContext", {})
    assert sc.get("runAsNonRoot") is True and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    assert all((sc.get(key) or 0) > 0 for key in ("runAsUser", "runAsGroup", "fsGroup")), "root ids in the pod"
    assert spec.get("automountServiceAccountToken") is False, "the pod needs no Kubernetes API token"
    assert not any(spec.get(shared) for shared in ("hostNetwork", "hostPID", "hostIPC"))
    for c in spec.get("initContainers", []) + spec["containers"]:
        csc = c.get("securityContext", {})
        assert csc.get("allowPrivilegeEscalation") is False and csc.get("readOnlyRootFilesystem") is True, c["name"]
        assert not csc.get("privileged") and csc.get("runAsUser") != 0 and csc.get("runAsNonRoot") is not False
        assert csc.get("seccompProfile", {"type": "RuntimeDefault"})["type"] == "RuntimeDefault", c["name"]
        caps = csc.get("capabilities", {})
        assert "ALL" in caps.get("drop", []) and not caps.get("add"), f"{c['name']}: capabilities {caps}"


def check_writable_paths_are_empty_dirs(m):
    # Found by running the image with a read-only root (deploy/container.sh): BentoML writes through `tempfile`
    # (TMPDIR, else /tmp) and creates its stores under BENTOML_HOME; ONNX Runtime, unless told not to, under ~/.cache.
    env = env_of(server(m))
    for path in (env.get("TMPDIR", "/tmp"), env.get("BENTOML_HOME", IMAGE_HOME)):
        mount = mount_holding(server(m), path)
        assert mount and not mount.get("readOnly") and "emptyDir" in volume(m, mount["name"]), f"{path} not writable"
    assert env.get("ORT_DISABLE_TELEMETRY") == "1"
    mounted = {v["name"] for c in pod_spec(m)["containers"] for v in c.get("volumeMounts", [])}
    assert all(v["name"] in mounted for v in pod_spec(m)["volumes"] if "emptyDir" in v), "an emptyDir mounted nowhere"


def check_env_vars_are_settings_of_the_service(m):
    from service.settings import Settings

    known = {f.metadata["env"] for f in dataclasses.fields(Settings)}
    unknown = {k for k in env_of(server(m)) if k.startswith("SERVICE_")} - known
    assert not unknown, f"not settings of the service: {unknown}"
    try:
        s = settings(m)
    except ValueError as e:
        raise AssertionError(e) from None
    assert (s.backend, s.device) == ("onnx", "cpu"), "the image is the lean one: ONNX Runtime on CPU"


def check_ports(m):
    """`bentoml serve`'s port 3000 as `http` and SERVICE_GRPC_PORT as `grpc`: what the Service sends to, and all
    the NetworkPolicy admits."""
    grpc = settings(m).grpc_port
    assert container_port(m, "http") == 3000 and "--port" not in server(m).get("args", []), "http is not on 3000"
    assert grpc and container_port(m, "grpc") == grpc, f"the port named grpc is not SERVICE_GRPC_PORT ({grpc})"
    service, policy = m["Service"]["spec"], m["NetworkPolicy"]["spec"]
    assert selects({"matchLabels": service["selector"]}, m), "the Service selects none of the pods"
    assert {container_port(m, p["targetPort"]) for p in service["ports"]} == {3000, grpc}
    assert selects(policy["podSelector"], m), "the NetworkPolicy selects none of the pods"
    assert policy.get("ingress") and all(rule.get("ports") for rule in policy["ingress"]), "admits every port"
    admitted = [(p.get("protocol", "TCP"), container_port(m, p.get("port")), p.get("endPort"))
                for rule in policy["ingress"] for p in rule["ports"]]
    assert len(admitted) == 2 and set(admitted) == {("TCP", 3000, None), ("TCP", grpc, None)}, admitted
    # The service opens no connections: egress is closed (an empty list under Egress denies all).
    assert set(policy.get("policyTypes", [])) == {"Ingress", "Egress"} and not policy.get("egress")


def check_tokens_come_from_a_read_only_secret(m):
    env = env_of(server(m))
    assert "SERVICE_API_TOKENS" not in env, "tokens inline in the manifest"
    path = env.get("SERVICE_API_TOKENS_FILE")
    assert path, "no SERVICE_API_TOKENS_FILE"
    mount = mount_holding(server(m), path)
    assert mount and mount.get("readOnly") is True, f"{path} is not on a read-only mount"
    secret = volume(m, mount["name"]).get("secret")
    assert secret and secret["secretName"] == m["Secret"]["metadata"]["name"] and not secret.get("optional")
    inside = str(PurePosixPath(path).relative_to(mount["mountPath"]))
    key = {i["path"]: i["key"] for i in secret["items"]}.get(inside) if "items" in secret else inside
    assert key in m["Secret"].get("data", {}) | m["Secret"].get("stringData", {}), f"no key for {inside}"
    assert secret.get("defaultMode", 0o644) & 0o007 == 0, "the tokens file is readable by any user"


def check_probes_hit_health_routes(m):
    c = server(m)
    for probe, path in {"livenessProbe": "/livez", "readinessProbe": "/readyz", "startupProbe": "/readyz"}.items():
        if "grpc" in c[probe]:  # grpc.health.v1 of the whole server (''): the state /readyz answers
            assert probe == "readinessProbe" and c[probe]["grpc"].get("service", "") == "", probe
            assert container_port(m, c[probe]["grpc"]["port"]) == settings(m).grpc_port, "gRPC probe on another port"
        else:
            assert c[probe]["httpGet"]["path"] == path and container_port(m, c[probe]["httpGet"]["port"]) == 3000, probe


def check_a_rolling_update_loses_nothing(m):
    """A new pod is ready before an old one stops; the old one leaves the Service within its drain and is given the
    drain plus the longest request to finish (docs/deploy.md)."""
    from service.service import ThermoDigits

    update = m["Deployment"]["spec"].get("strategy", {})
    assert update.get("type", "RollingUpdate") == "RollingUpdate"
    rolling = update.get("rollingUpdate", {})
    # Kubernetes' defaults are 25 % each: of 10 replicas, 2 could be out of service and 3 starting at once
    assert rolling.get("maxUnavailable") == 0 and rolling.get("maxSurge") == 1, "one new pod, then one old goes"
    drain = settings(m).drain_s
    probe = server(m)["readinessProbe"]
    unready_within = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3) + probe.get("timeoutSeconds", 1)
    assert unready_within < drain, f"readiness fails {unready_within} s after SIGTERM: not within the {drain}-s drain"
    longest = ThermoDigits.config["traffic"]["timeout"]
    grace = pod_spec(m).get("terminationGracePeriodSeconds") or 30
    assert grace >= drain + longest + 1, f"terminationGracePeriodSeconds {grace} < drain {drain} + {longest} + 1"


def check_pdb_and_hpa_point_at_the_deployment(m):
    pdb, hpa = m["PodDisruptionBudget"]["spec"], m["HorizontalPodAutoscaler"]["spec"]
    assert selects(pdb["selector"], m), "the PodDisruptionBudget selects none of the pods"
    fewest = min(m["Deployment"]["spec"]["replicas"], hpa["minReplicas"])
    assert 1 <= pdb.get("minAvailable", pdb.get("maxUnavailable")) < fewest, "protects no pod, or blocks every drain"
    target = hpa["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", m["Deployment"]["metadata"]["name"])
    assert "cpu" in server(m)["resources"].get("requests", {}), "a CPU utilisation target needs a CPU request"


# What each check must fail on: a copy of the manifests with a setting taken out ("path") or changed ("path", value).
SEC, SECRET, ROLL = "server.securityContext", "pod.volumes.api-tokens.secret", "Deployment.spec.strategy.rollingUpdate"
POLICY, PORTS, PDB = "NetworkPolicy.spec", "NetworkPolicy.spec.ingress.0.ports", "PodDisruptionBudget.spec"
MUTATIONS = {
    check_hardened: [
        "pod.securityContext.runAsNonRoot", "pod.securityContext.fsGroup", "pod.securityContext.seccompProfile",
        ("pod.securityContext.runAsUser", 0), "pod.automountServiceAccountToken", ("pod.hostNetwork", True),
        f"{SEC}.allowPrivilegeEscalation", f"{SEC}.readOnlyRootFilesystem", (f"{SEC}.privileged", True),
        (f"{SEC}.runAsUser", 0), (f"{SEC}.seccompProfile", {"type": "Unconfined"}), f"{SEC}.capabilities.drop",
        (f"{SEC}.capabilities.add", ["NET_ADMIN"]), ("pod.initContainers", [{"name": "init", "image": "busybox"}])],
    check_writable_paths_are_empty_dirs: [
        "server.volumeMounts.tmp", ("server.volumeMounts.tmp.readOnly", True), "server.env.ORT_DISABLE_TELEMETRY",
        ("pod.volumes.tmp", {"name": "tmp", "hostPath": {"path": "/var/tmp"}}), "server.env.BENTOML_HOME",
        ("server.env.BENTOML_HOME.value", "/var/lib/bentoml"), ("server.env.TMPDIR.value", "/var/tmp"),
        ("pod.volumes.cache.emptyDir", {})],
    check_env_vars_are_settings_of_the_service: [
        ("server.env.SERVICE_DRAIN_SECONDS.value", "5"), ("server.env.SERVICE_THREADS.value", "one"),
        ("server.env.SERVICE_BACKEND.value", "torchscript"), "server.env.SERVICE_DEVICE"],
    check_ports: [
        ("server.ports.http.containerPort", 8080), ("server.args", ["serve", "--port", "8080"]),
        ("server.ports.grpc.name", "rpc"), ("server.env.SERVICE_GRPC_PORT.value", "9001"),
        ("server.env.SERVICE_GRPC_PORT.value", "0"), ("Service.spec.selector", {"app": "other"}),
        ("Service.spec.ports.http.targetPort", 8080), "Service.spec.ports.grpc",
        (f"{POLICY}.podSelector", {"matchLabels": {"app": "other"}}), (f"{POLICY}.podSelector", {}), PORTS,
        (f"{PORTS}.2", {"port": 3001}), f"{PORTS}.1",
        (f"{PORTS}.0.endPort", 3100), (f"{PORTS}.0.protocol", "UDP"), (f"{POLICY}.policyTypes", ["Egress"]),
        (f"{POLICY}.policyTypes", ["Ingress"]), (f"{POLICY}.egress", [{}])],
    check_tokens_come_from_a_read_only_secret: [
        "server.env.SERVICE_API_TOKENS_FILE", ("server.env.SERVICE_API_TOKENS.value", "secret"),
        "server.volumeMounts.api-tokens.readOnly", ("server.env.SERVICE_API_TOKENS_FILE.value", "/tmp/tokens"),
        ("server.env.SERVICE_API_TOKENS_FILE.value", "/etc/thermo-digits/api-tokens/x"), f"{SECRET}.defaultMode",
        (f"{SECRET}.secretName", "other"), (f"{SECRET}.items", [{"key": "token", "path": "tokens"}]),
        (f"{SECRET}.optional", True), (f"{SECRET}.defaultMode", 0o444)],
    check_probes_hit_health_routes: [
        ("server.livenessProbe.httpGet.path", "/healthz"), ("server.startupProbe.httpGet.path", "/"),
        ("server.readinessProbe", {"httpGet": {"path": "/livez", "port": "http"}}),
        ("server.startupProbe.httpGet.port", "grpc"), ("server.readinessProbe.grpc.port", 3000),
        ("server.readinessProbe.grpc.service", "x")],
    check_a_rolling_update_loses_nothing: [
        f"{ROLL}.maxUnavailable", f"{ROLL}.maxSurge", (f"{ROLL}.maxUnavailable", 1), (f"{ROLL}.maxSurge", 0),
        ("Deployment.spec.strategy", {"type": "Recreate"}), "pod.terminationGracePeriodSeconds",
        ("pod.terminationGracePeriodSeconds", 35), "server.readinessProbe.periodSeconds",
        ("server.readinessProbe.periodSeconds", 5), ("server.readinessProbe.failureThreshold", 5),
        ("server.env.SERVICE_DRAIN_S.value", "0")],
    check_pdb_and_hpa_point_at_the_deployment: [
        (f"{PDB}.selector", {"matchLabels": {"app": "other"}}), (f"{PDB}.selector", {}), (f"{PDB}.minAvailable", 2),
        (f"{PDB}.minAvailable", 0), ("HorizontalPodAutoscaler.spec.scaleTargetRef.name", "other"),
        "server.resources.requests.cpu"],
}


@pytest.mark.parametrize("check", MUTATIONS, ids=lambda check: check.__name__.removeprefix("check_"))
def test_the_manifests_pass(manifests, check):
    check(manifests)


CHANGES = [(check, *(c if isinstance(c, tuple) else (c, DROP))) for check, cs in MUTATIONS.items() for c in cs]


@pytest.mark.parametrize("check,path,value", [
    pytest.param(check, path, value, id=f"{check.__name__.removeprefix('check_')}: {path}"
                 + ("" if value is DROP else f"={value!r}")) for check, path, value in CHANGES])
def test_each_check_fails_without_its_setting(manifests, check, path, value):
    with pytest.raises(AssertionError):
        check(mutated(manifests, path, value))


def test_what_kubectl_applies():
    kinds = sorted(d["kind"] for d in applied())  # never the example's placeholder Secret over the real tokens
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "NetworkPolicy", "PodDisruptionBudget", "Service"]


def test_probe_routes_answer_without_a_token(manifests, client):
    from service.api.access import scope_of

    probes = [server(manifests)[p] for p in ("livenessProbe", "readinessProbe", "startupProbe")]
    for path in {p["httpGet"]["path"] for p in probes if "httpGet" in p}:
        assert client.get(path).status_code == 200 and scope_of(path) is None, path


def test_the_bentos_pin_the_python_the_base_image_is_built_with():
    """deploy/container.sh builds one python:X-slim base: a Bento naming another Python needs a base it cannot build."""
    repo = K8S.parents[1]
    base = re.search(r"python:(\d+\.\d+)-slim", (repo / "deploy" / "container.sh").read_text())
    assert base, "deploy/container.sh names no python:X-slim base"
    for bentofile in ("bentofile.yaml", "bentofile.gpu.yaml"):
        pinned = yaml.safe_load((repo / bentofile).read_text())["docker"]["python_version"]
        assert str(pinned) == base.group(1), bentofile
