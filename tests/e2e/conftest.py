"""Real processes: a simulator and gateway(s) started as the CLI starts them, on PostgreSQL."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, MASTER_KEY
from tests.e2e.processes import (
    QUEUED_SECONDS,
    RUNNING_SECONDS,
    Process,
    clean_env,
    free_port,
    issue_key,
    start,
    start_simulator,
)
from tests.scratch_db import scratch_postgres


@dataclass
class Stack:
    """A simulator process and a way to start gateway processes against it."""

    simulator: Process
    database_url: str
    tmp: Path
    gateways: list[Process] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        settings = {
            "GATEWAY_UPSTREAM_API_KEY": MASTER_KEY,
            "GATEWAY_UPSTREAM_BASE_URL": f"{self.simulator.url}/api/v3",
            "GATEWAY_DATABASE_URL": self.database_url,
            "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
            "GATEWAY_LOG_LEVEL": "DEBUG",
            "GATEWAY_REFRESH_STALE_SECONDS": "0",
        }
        return clean_env(**{**settings, **extra})

    def start_gateway(self, *args: str, **extra: str) -> Process:
        port = free_port()
        log = self.tmp / f"gateway-{len(self.gateways)}.log"
        command = ["serve", "--port", str(port), *args]
        process = start(command, env=self.env(**extra), port=port, log=log)
        self.gateways.append(process)
        return process

    def sim(self, method: str, path: str, **kwargs: Any) -> Any:
        return httpx.request(method, self.simulator.url + path, **kwargs).json()

    @contextmanager
    def timings(self, **knobs: float) -> Iterator[None]:
        """Change simulator knobs for a block; the default timings and no faults come back."""
        self.sim("PATCH", "/_sim/config", json=knobs)
        try:
            yield
        finally:
            self.sim("PATCH", "/_sim/config", json=DEFAULT_KNOBS)

    def new_key(self, gateway: Process, name: str) -> str:
        return issue_key(gateway.url, admin_token=ADMIN_TOKEN, user_name=name)


# Settings that keep the gateway's own limits out of a test that drives load, not refusals.
NO_LIMITS = {
    "GATEWAY_CREATE_RATE_LIMIT": "100000/minute",
    "GATEWAY_READ_RATE_LIMIT": "100000/minute",
    "GATEWAY_AUTH_FAILURE_LIMIT": "100000/minute",
    "GATEWAY_MAX_TASKS_IN_FLIGHT_PER_KEY": "100000",
    "GATEWAY_MAX_TASKS_IN_FLIGHT_PER_USER": "100000",
    "GATEWAY_MAX_TASKS_IN_FLIGHT_GLOBAL": "100000",
}
DEFAULT_KNOBS = {
    "queued_seconds": QUEUED_SECONDS,
    "running_seconds": RUNNING_SECONDS,
    "rate_limit_rate": 0,
    "create_error_rate": 0,
    "failure_rate": 0,
    "latency_seconds": 0,
    "timing_jitter": 0,
}
TERMINAL = {"succeeded", "failed", "expired", "cancelled"}


def follow(read_status: Callable[[], str], timeout: float = 30) -> list[str]:
    """Poll a task every 0.2 s until it ends; the statuses seen, in order, repeats dropped."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = read_status()
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in TERMINAL:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"task still {seen[-1]} after {timeout} s")


@pytest.fixture(scope="module")
async def e2e_database() -> Any:
    name = f"sgw_e2e_{os.getpid()}"
    async with scratch_postgres(name) as url:
        yield url


@pytest.fixture(scope="module")
def stack(e2e_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One simulator process for the module; gateways are started by the tests."""
    tmp = tmp_path_factory.mktemp("e2e")
    simulator = start_simulator(master_key=MASTER_KEY, log=tmp / "simulator.log")
    stack = Stack(simulator=simulator, database_url=e2e_database, tmp=tmp)
    yield stack
    logs = [process.stop() for process in stack.gateways] + [simulator.stop()]
    # The master key must appear in no log line of any process, even at DEBUG.
    for log in logs[:-1]:
        assert MASTER_KEY not in log
        assert "DEBUG" in log  # the check above really read DEBUG output
