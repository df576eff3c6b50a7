"""Settings as files name them: .env.example, the Dockerfile and deploy/ (the deployments'
themselves are checked in tests/test_deploy.py)."""

from __future__ import annotations

import re
from pathlib import Path

from app.config import Settings

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
