"""`make run` with no upstream key: demo mode, its banner, and the curl line it prints."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import Process, clean_env, free_port, start


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[Process, str]]:
    """`seedance-gateway serve` with no upstream key; yields the process and its banner."""
    env = clean_env(
        GATEWAY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/gateway.db",
        GATEWAY_DEMO_SIMULATOR_PORT=str(free_port()),
    )
    port = free_port()
    process = start(["serve", "--port", str(port)], env=env, port=port, log=tmp_path / "demo.log")
    try:
        yield process, process.log.read_text()
    finally:
        process.stop()


def _curl_line(banner: str) -> str:
    """The command the banner prints under "Try it:", exactly as a user would paste it."""
    return banner.split("Try it:\n", 1)[1].split("\nThen:", 1)[0]


def test_demo_mode_prints_a_key_and_a_curl_line_that_work(demo: tuple[Process, str]) -> None:
    process, banner = demo
    assert "DEMO MODE" in banner and "SIMULATOR" in banner
    key = re.search(r"Demo key \(shown once\):\s+(\S+)", banner).group(1)  # type: ignore[union-attr]
    admin = re.search(r"Admin token \(this run\):\s+(\S+)", banner).group(1)  # type: ignore[union-attr]

    created = subprocess.run(
        ["bash", "-c", _curl_line(banner)], capture_output=True, text=True, check=True
    )
    task_id = json.loads(created.stdout)["id"]
    assert task_id.startswith("cgt-")

    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        task = httpx.get(
            f"{process.url}/api/v3/contents/generations/tasks/{task_id}", headers=headers
        ).json()
        if task["status"] == "succeeded":
            break
        time.sleep(0.5)
    assert task["status"] == "succeeded", task
    assert task["duration"] == 5 and task["usage"]["completion_tokens"] > 0

    users = httpx.get(f"{process.url}/admin/v1/users", headers={"Authorization": f"Bearer {admin}"})
    assert users.status_code == 200
    assert [user["name"] for user in users.json()] == ["demo"]


def test_busy_ports_stop_demo_mode_before_any_banner(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        env = clean_env(
            GATEWAY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/gateway.db",
            GATEWAY_DEMO_SIMULATOR_PORT=str(busy),
        )
        result = subprocess.run(
            [sys.executable, "-m", "app", "serve", "--port", str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode != 0
    assert "DEMO MODE" not in result.stdout and "sgw-" not in result.stdout
    assert f"simulator port 127.0.0.1:{busy} is in use" in result.stderr
    assert "SIM_PORT" in result.stderr


def test_a_restarted_demo_expires_the_forgotten_tasks(tmp_path: Path) -> None:
    env = clean_env(
        GATEWAY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/gateway.db",
        GATEWAY_DEMO_SIMULATOR_PORT=str(free_port()),
    )
    port = free_port()
    first = start(["serve", "--port", str(port)], env=env, port=port, log=tmp_path / "1.log")
    key = re.search(r"Demo key \(shown once\):\s+(\S+)", first.log.read_text()).group(1)  # type: ignore[union-attr]
    headers = {"Authorization": f"Bearer {key}"}
    task_id = httpx.post(
        f"{first.url}/api/v3/contents/generations/tasks",
        headers=headers,
        json={"model": "seedance-1-0-pro-250528", "content": [{"type": "text", "text": "fox"}]},
    ).json()["id"]
    first.stop()
    second = start(["serve", "--port", str(port)], env=env, port=port, log=tmp_path / "2.log")
    try:
        task = httpx.get(
            f"{second.url}/api/v3/contents/generations/tasks/{task_id}", headers=headers
        ).json()
        assert task["status"] == "expired"
    finally:
        second.stop()
