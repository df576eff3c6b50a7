"""Static checks of what CI cannot run here: .env.example, Dockerfile and deploy/ manifests."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from app.config import Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parents[1]
SETTING_NAMES = {f"GATEWAY_{name.upper()}" for name in Settings.model_fields}
MENTIONED = re.compile(r"GATEWAY_[A-Z0-9_]+")


def test_env_example_documents_every_setting_and_nothing_else() -> None:
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^(GATEWAY_[A-Z0-9_]+)=", example, re.M))
    assert documented == SETTING_NAMES


def test_deploy_files_use_only_real_settings() -> None:
    files = [ROOT / "Dockerfile", *sorted((ROOT / "deploy").rglob("*.y*ml"))]
    for path in files:
        unknown = set(MENTIONED.findall(path.read_text())) - SETTING_NAMES
        assert not unknown, f"{path.name} mentions unknown settings {unknown}"


def test_kubernetes_manifests_are_consistent() -> None:
    docs = [
        doc
        for path in sorted((ROOT / "deploy/k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    ]
    kinds = {doc["kind"]: doc for doc in docs}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "Job"} <= set(kinds)
    routes = set(create_app(Settings(_env_file=None)).openapi()["paths"])  # type: ignore[call-arg]
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["readinessProbe"]["httpGet"]["path"] in routes
    assert container["livenessProbe"]["httpGet"]["path"] in routes
    selector = kinds["Service"]["spec"]["selector"]
    assert selector.items() <= kinds["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    assert kinds["Job"]["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "migrate"
    for doc in docs:
        for ref in _env_from(doc):
            assert ref in {"seedance-gateway"}, ref


def _env_from(doc: dict) -> list[str]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    return [
        next(iter(source.values()))["name"]
        for container in pod.get("containers", [])
        for source in container.get("envFrom", [])
    ]


def test_compose_file_parses_and_runs_migrations_first() -> None:
    compose = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())
    services = compose["services"]
    assert services["migrate"]["command"][-1] == "migrate"
    assert (
        services["gateway"]["depends_on"]["migrate"]["condition"]
        == "service_completed_successfully"
    )


def test_dockerfile_is_non_root_frozen_and_copies_what_exists() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "uv sync --frozen" in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    for source in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for name in source.split():
            assert (ROOT / name).exists(), name
    assert "seedance-gateway migrate && exec seedance-gateway serve" in text
