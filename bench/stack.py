"""A simulator process and a gateway process in front of it, for the benchmarks."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.e2e.processes import Process, clean_env, free_port, issue_key, start, start_simulator

MODEL = "seedance-1-0-pro-250528"
TASKS = "/api/v3/contents/generations/tasks"
CREATE_BODY = {"model": MODEL, "content": [{"type": "text", "text": "a red fox runs in snow"}]}
ADMIN_TOKEN = secrets.token_urlsafe(24)
MASTER_KEY = "bench-" + secrets.token_urlsafe(24)
# Limits out of the way: the benchmark measures the request path, not the refusals.
UNLIMITED = {
    "GATEWAY_CREATE_RATE_LIMIT": "1000000/minute",
    "GATEWAY_READ_RATE_LIMIT": "1000000/minute",
    "GATEWAY_MAX_TASKS_IN_FLIGHT_PER_KEY": "1000000",
    "GATEWAY_MAX_TASKS_IN_FLIGHT_PER_USER": "1000000",
    "GATEWAY_MAX_TASKS_IN_FLIGHT_GLOBAL": "1000000",
}


@dataclass
class BenchStack:
    """The running pair and a gateway key for one user."""

    simulator: Process
    gateway: Process
    key: str

    @property
    def auth_header(self) -> str:
        """The key as a header line, as wrk takes it."""
        return f"Authorization: Bearer {self.key}"

    @property
    def gateway_pid(self) -> int:
        """The gateway's process id, for its memory readings."""
        return self.gateway.popen.pid


def instant_simulator(log: Path) -> Process:
    """A simulator whose tasks finish at once and whose account limits are out of the way: the
    benchmarks measure request paths, not the upstream's per-second refusals."""
    simulator = start_simulator(master_key=MASTER_KEY, log=log, queued_seconds=0, running_seconds=0)
    unlimited = {"get_qps": 10**9, "list_qps": 10**9, "delete_qps": 10**9}
    httpx.patch(f"{simulator.url}/_sim/config", json=unlimited).raise_for_status()
    return simulator


@contextmanager
def bench_stack(
    database_url: str, workdir: Path, *serve_args: str, **settings: str
) -> Iterator[BenchStack]:
    """Start a simulator (tasks finish at once) and a gateway on `database_url` (`serve_args`
    such as `--workers 2` go to its `serve`); stop both after."""
    gw_port = free_port()
    simulator = instant_simulator(workdir / "simulator.log")
    env = clean_env(
        **UNLIMITED,
        GATEWAY_UPSTREAM_API_KEY=MASTER_KEY,
        GATEWAY_UPSTREAM_BASE_URL=f"{simulator.url}/api/v3",
        GATEWAY_DATABASE_URL=database_url,
        GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN,
        GATEWAY_LOG_LEVEL="WARNING",
        GATEWAY_POLLER_ENABLED="false",
        **settings,
    )
    gateway = None
    try:
        gateway = start(
            ["serve", "--port", str(gw_port), *serve_args],
            env=env,
            port=gw_port,
            log=workdir / "gw.log",
        )
        yield BenchStack(
            simulator=simulator,
            gateway=gateway,
            key=issue_key(
                gateway.url, admin_token=ADMIN_TOKEN, user_name=f"bench-{secrets.token_hex(4)}"
            ),
        )
    finally:
        if gateway is not None:
            gateway.stop()
        simulator.stop()


def rss_kib(pid: int) -> int:
    """Resident memory of a process, in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")
