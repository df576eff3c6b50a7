"""The deployments, checked without a Docker engine or a cluster: every Kubernetes overlay is
rendered by kustomize (`kubectl kustomize`), validated against the Kubernetes schemas offline
and against the rules of the restricted Pod Security profile, and its properties asserted; the
compose file is validated against the compose specification; the Dockerfile is linted."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from compose_spec import PyCompose
from fastapi.routing import APIRoute

from app.config import Settings
from app.main import create_app
from app.ops.router import router as ops_router

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = sorted(path.name for path in (ROOT / "deploy/k8s/overlays").iterdir())
KUBERNETES_VERSION = "1.30"  # the oldest release the manifests promise to run on
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

# What the probes and the scraper may reach: the documented paths and the ops routes (/metrics
# is left out of the API's schema).
ROUTES = set(create_app(Settings(_env_file=None)).openapi()["paths"]) | {  # type: ignore[call-arg]
    route.path for route in ops_router.routes if isinstance(route, APIRoute)
}


def render(overlay: str) -> list[dict[str, Any]]:
    """The overlay as kustomize renders it."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize) is installed by `make test`"
    rendered = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy/k8s/overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def pods(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Every pod template: (its owner's name, its spec)."""
    return [
        (doc["metadata"]["name"], doc["spec"]["template"]["spec"])
        for doc in docs
        if doc["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet")
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_is_valid_kubernetes(overlay: str) -> None:
    for doc in render(overlay):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_passes_the_restricted_pod_security_profile(overlay: str) -> None:
    """The rules of the `restricted` profile (Pod Security Standards, v1.30), per pod."""
    for owner, pod in pods(render(overlay)):
        where = f"{overlay}/{owner}"
        assert not any(pod.get(f) for f in ("hostNetwork", "hostPID", "hostIPC")), where
        assert all("hostPath" not in volume for volume in pod.get("volumes", [])), where
        context = pod.get("securityContext", {})
        assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        for container in pod["containers"] + pod.get("initContainers", []):
            own = container.get("securityContext", {})
            assert own.get("allowPrivilegeEscalation") is False, where
            assert own.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not own.get("capabilities", {}).get("add"), where
            assert own.get("runAsNonRoot", context.get("runAsNonRoot")) is True, where
            assert own.get("runAsUser", context.get("runAsUser", 1)) != 0, where
            assert not own.get("privileged"), where
            assert all("hostPort" not in port for port in container.get("ports", [])), where
            # Beyond the profile: nothing writes to the image; each pod says what it may use.
            assert own.get("readOnlyRootFilesystem") is True, where
            assert container["resources"]["requests"]["memory"], where
            assert container["resources"]["limits"]["memory"], where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_s_workloads_are_wired_as_the_app_expects(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(overlay)
    api = find(docs, "Deployment", "seedance-gateway-api")
    worker = find(docs, "Deployment", "seedance-gateway-worker")
    job = find(docs, "Job", f"seedance-gateway-migrate-{VERSION}")  # one Job per release
    (api_box,) = api["spec"]["template"]["spec"]["containers"]
    (worker_box,) = worker["spec"]["template"]["spec"]["containers"]
    (job_box,) = job["spec"]["template"]["spec"]["containers"]
    assert api_box["command"][:2] == ["seedance-gateway", "serve"]
    assert {"name": "GATEWAY_POLLER_ENABLED", "value": "false"} in api_box["env"]
    assert worker_box["command"][:2] == ["seedance-gateway", "worker"]
    assert job_box["command"] == ["seedance-gateway", "migrate"]
    # Probes reach real routes on real ports.
    assert api_box["readinessProbe"]["httpGet"]["path"] == "/readyz" in ROUTES
    assert api_box["livenessProbe"]["httpGet"]["path"] == "/healthz" in ROUTES
    metrics_port = worker_box["command"][worker_box["command"].index("--metrics-port") + 1]
    assert worker_box["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker_box["ports"] == [{"name": "metrics", "containerPort": int(metrics_port)}]
    assert "/metrics" in ROUTES
    # One image, set by the overlay: never `latest`, the release's tag, the same everywhere.
    images = {box["image"] for box in (api_box, worker_box, job_box)}
    assert len(images) == 1 and images.pop().endswith(f":{VERSION}")
    # Service, HPA and PDBs point at the API's pods; the pods' grace outlasts the gateway's.
    labels = api["spec"]["template"]["metadata"]["labels"]
    service = find(docs, "Service", "seedance-gateway")
    assert service["spec"]["selector"].items() <= labels.items()
    hpa = find(docs, "HorizontalPodAutoscaler", "seedance-gateway-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == api["metadata"]["name"]
    pdb = find(docs, "PodDisruptionBudget", "seedance-gateway-api")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    config = find(docs, "ConfigMap", "seedance-gateway")["data"]
    grace = api["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert int(config["GATEWAY_SHUTDOWN_GRACE_SECONDS"]) + 5 < grace  # 5: the preStop pause
    assert json.loads(config["GATEWAY_TRUSTED_PROXIES"])
    for name, value in config.items():  # the settings parse as the pods' environment
        monkeypatch.setenv(name, value)
    assert Settings(_env_file=None).trusted_proxies == ["10.0.0.0/8"]  # type: ignore[call-arg]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_inlined(overlay: str) -> None:
    docs = render(overlay)
    assert not [doc for doc in docs if doc["kind"] == "Secret"]
    secret_settings = {"upstream_api_key", "admin_token", "account_keys_secret", "metrics_token"}
    for _, pod in pods(docs):
        for container in pod["containers"]:
            for variable in container.get("env", []):
                name = variable["name"].removeprefix("GATEWAY_").lower()
                assert name not in secret_settings and "PASSWORD" not in variable["name"]
            if container["image"].startswith(("postgres", "redis")):
                continue
            assert {"secretRef": {"name": "seedance-gateway"}} in container["envFrom"]
    config = find(docs, "ConfigMap", "seedance-gateway")["data"]
    assert not set(config) & {f"GATEWAY_{name.upper()}" for name in secret_settings}


def test_production_exposes_the_api_through_an_ingress_and_only_it() -> None:
    docs = render("production")
    ingress = find(docs, "Ingress", "seedance-gateway")
    (rule,) = ingress["spec"]["rules"]
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "seedance-gateway"
    policy = find(docs, "NetworkPolicy", "seedance-gateway-api")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    sources = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    namespaces = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in sources
    }
    assert namespaces == {"ingress-nginx", "monitoring"}
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 5432, 6379, 443}
    assert not [
        doc for doc in docs if doc["kind"] == "Deployment" and "postgres" in doc["metadata"]["name"]
    ]


def compose_document() -> dict[str, Any]:
    """The compose file as `docker compose` reads it: variables interpolated (required ones
    given a value, defaults taken), anchors and merge keys resolved."""

    def interpolate(match: re.Match[str]) -> str:
        name, _, rest = match.group(1).partition(":")
        if rest.startswith("-"):
            return rest[1:]
        return f"value-of-{name.lower()}" if rest.startswith("?") else ""

    text = (ROOT / "deploy/compose/docker-compose.yml").read_text()
    return dict(yaml.safe_load(re.sub(r"\$\{([^}]+)\}", interpolate, text)))


def test_the_compose_file_follows_the_compose_specification() -> None:
    document = compose_document()
    spec = PyCompose.from_json(json.dumps(document)).to_spec()  # raises on any violation
    services = spec.services or {}
    assert set(services) == {"postgres", "redis", "migrate", "gateway", "worker", "balancer"}
    raw = document["services"]
    # One port for the stack: the balancer's; the replicas and the worker publish none.
    assert [name for name, service in raw.items() if service.get("ports")] == ["balancer"]
    assert raw["gateway"]["deploy"]["replicas"] >= 2
    assert raw["migrate"]["command"][-1] == "migrate"
    assert raw["worker"]["command"][:2] == ["seedance-gateway", "worker"]
    for name in ("gateway", "worker"):
        assert raw[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    nginx = (ROOT / "deploy/compose/nginx.conf").read_text()
    assert "proxy_pass $gateway" in nginx and "http://gateway:8000" in nginx
    trusted = json.loads(raw["gateway"]["environment"]["GATEWAY_TRUSTED_PROXIES"])
    subnet = document["networks"]["internal"]["ipam"]["config"][0]["subnet"]
    assert trusted == [subnet]


def test_the_dockerfile_passes_hadolint_and_keeps_build_tools_out() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    linted = subprocess.run(
        [str(hadolint), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) == 2  # build, then the image itself
    final = stages[-1]
    assert "uv" not in re.findall(r"^RUN (.+)$", final, re.M)[0] and "pip install" not in final
    assert re.findall(r"^USER (\S+)", final, re.M) == ["10001"]
    assert "HEALTHCHECK" in final and "/healthz" in final
    assert "uv sync --frozen" in stages[0]
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for name in source.split():
            assert (ROOT / name).exists(), name
