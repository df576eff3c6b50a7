"""Start gateway and simulator processes as the CLI starts them (e2e tests and benchmarks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up:\n{log.read_text()[-3000:]}")


@dataclass
class Process:
    """A started process and its log file."""

    popen: subprocess.Popen[bytes]
    log: Path
    url: str

    def stop(self) -> str:
        """Stop the process (SIGTERM, then SIGKILL) and return its whole log."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.log.read_text()


def start(
    args: list[str],
    *,
    env: dict[str, str],
    port: int,
    log: Path,
    health: str = "/healthz",
    module: str = "app",
) -> Process:
    """Run `python -m module args…` (the gateway's CLI by default) until `health` answers."""
    handle = log.open("wb")
    popen = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url + health, popen, log)
    return Process(popen=popen, log=log, url=url)


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any GATEWAY_* variable, plus `settings`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return {**base, **settings}


# Tasks queue and run for seconds, compressed but never instant, so that every client sees a
# task while it stands still and while it moves.
QUEUED_SECONDS = 1.0
RUNNING_SECONDS = 2.0


def start_simulator(
    *,
    master_key: str,
    log: Path,
    queued_seconds: float = QUEUED_SECONDS,
    running_seconds: float = RUNNING_SECONDS,
) -> Process:
    """A simulator process on a free port (benchmarks pass 0 and 0 for tasks done at once)."""
    port = free_port()
    timings = ["--queued-seconds", str(queued_seconds), "--running-seconds", str(running_seconds)]
    return start(
        ["simulate", "--port", str(port), "--api-key", master_key, *timings],
        env=clean_env(),
        port=port,
        log=log,
        health="/_sim/stats",
    )


def issue_key(gateway_url: str, *, admin_token: str, user_name: str) -> str:
    """Create a user through the admin API and return a new plaintext key of theirs."""
    admin = {"Authorization": f"Bearer {admin_token}"}
    user = httpx.post(f"{gateway_url}/admin/v1/users", json={"name": user_name}, headers=admin)
    user.raise_for_status()
    key = httpx.post(
        f"{gateway_url}/admin/v1/users/{user.json()['id']}/keys", json={}, headers=admin
    )
    key.raise_for_status()
    return str(key.json()["key"])
