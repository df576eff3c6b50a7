"""Schemathesis against the gateway's own OpenAPI: every public and admin operation,
authenticated, on PostgreSQL. Every check on: no 5xx, every answer as the schema says, schema-valid
data accepted, invalid data refused (tests/fuzz/schemathesis.toml lists the few exceptions).

`FUZZ_EXAMPLES` sets the cases per operation and phase (a minute's worth by default);
`make fuzz` runs long.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.e2e.conftest import NO_LIMITS, Stack
from tests.e2e.processes import ROOT

pytestmark = pytest.mark.e2e
EXAMPLES = os.environ.get("FUZZ_EXAMPLES", "100")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def cases_per_operation(report_dir: Path) -> Counter[str]:
    """How many cases each operation got, from schemathesis's NDJSON event stream."""
    cases: Counter[str] = Counter()
    for report in report_dir.glob("*.ndjson"):
        for line in report.read_text().splitlines():
            event = json.loads(line)
            finished = event.get("ScenarioFinished")
            if finished and finished["status"] != "skip":
                recorder = finished["recorder"]
                for case in recorder.get("cases", {}).values():
                    value = case["value"]
                    cases[f"{value['method']} {value['path']}"] += 1
    return cases


def summary(stdout: str) -> str:
    """The failures or errors schemathesis reports (its exit code 2 may come from either), or,
    when it names neither, the end of its output."""
    starts = [at for at in (stdout.find("FAILURES"), stdout.find("ERRORS")) if at >= 0]
    return stdout[min(starts) :][:8000] if starts else stdout[-8000:]


def test_every_operation_survives_schemathesis(stack: Stack, tmp_path: Path) -> None:
    gateway = stack.start_gateway(
        **NO_LIMITS,
        GATEWAY_UPSTREAM_TIMEOUT_SECONDS="3",
        GATEWAY_ACCOUNT_KEYS_SECRET="fuzz-accounts-secret",
    )
    operations = {
        f"{method.upper()} {path}"
        for path, methods in httpx.get(f"{gateway.url}/openapi.json").json()["paths"].items()
        for method in methods
    }
    env = {
        **os.environ,
        "SGW_FUZZ_KEY": stack.new_key(gateway, "fuzz"),
        "SGW_FUZZ_ADMIN": ADMIN_TOKEN,
    }
    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--no-color",
            "--config-file",
            str(ROOT / "tests" / "fuzz" / "schemathesis.toml"),
            "run",
            f"{gateway.url}/openapi.json",
            "--max-examples",
            EXAMPLES,
            "--continue-on-failure",
            "--report",
            "ndjson",
            "--report-dir",
            str(tmp_path),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    cases = cases_per_operation(tmp_path)
    mine = {operation: cases[operation] for operation in sorted(operations)}
    print("fuzz cases per operation:", mine, "all cases, undeclared methods too:", cases.total())
    assert run.returncode == 0, summary(run.stdout)
    assert operations <= set(cases), operations - set(cases)  # every operation was exercised
    log = gateway.log.read_text()
    assert "Traceback" not in log and " ERROR " not in log
