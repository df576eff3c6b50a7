"""The console in Debian's headless Chromium: an admin signs in, reads a cost chart whose totals
match the ledger, exports it, creates a user and a key and revokes it; a user signs in and sees
only their own tasks, with a video that plays. Screenshots go to `test-artifacts/`."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Page, async_playwright

from tests.conftest import ADMIN_TOKEN
from tests.e2e.conftest import Stack, follow
from tests.e2e.processes import ROOT

pytestmark = pytest.mark.e2e
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
TASKS = "/api/v3/contents/generations/tasks"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def seed(stack: Stack, gateway_url: str, name: str, tasks: int) -> tuple[str, list[str]]:
    """A user with a key and `tasks` finished tasks; returns the key and the task ids."""
    key = stack.new_key(stack.gateways[-1], name)
    bearer = {"Authorization": f"Bearer {key}"}
    ids = []
    with httpx.Client(base_url=gateway_url, headers=bearer) as client:
        for n in range(tasks):
            body = {
                "model": "seedance-1-0-pro-250528",
                "content": [{"type": "text", "text": f"fox {n}"}],
            }
            ids.append(client.post(TASKS, json=body).json()["id"])
        for task_id in ids:
            follow(lambda task_id=task_id: client.get(f"{TASKS}/{task_id}").json()["status"])
    return key, ids


async def sign_in(page: Page, url: str, credential: str) -> None:
    await page.goto(url + "/console")
    await page.fill("#credential", credential)
    await page.click("#sign-in")
    await page.wait_for_load_state()


async def test_an_admin_and_a_user_use_the_console(stack: Stack) -> None:
    gateway = stack.start_gateway(GATEWAY_POLL_INTERVAL_SECONDS="0.5")
    alice_key, alice_tasks = seed(stack, gateway.url, "console-alice", 3)
    _, bob_tasks = seed(stack, gateway.url, "console-bob", 1)
    report = httpx.get(f"{gateway.url}/admin/v1/usage", params={"group_by": "model"}, headers=ADMIN)
    ledger_total = sum(int(row["cost_micros"]) for row in report.json()["rows"]) / 1_000_000
    ARTIFACTS.mkdir(exist_ok=True)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            admin = await browser.new_page()
            await sign_in(admin, gateway.url, ADMIN_TOKEN)
            assert "Overview" in await admin.text_content("main") or ""
            await admin.screenshot(path=str(ARTIFACTS / "console-overview.png"), full_page=True)

            await admin.goto(gateway.url + "/console/costs?by=user")
            charted = await admin.evaluate(
                "Chart.getChart('chart').data.datasets"
                ".map(d => d.data.reduce((a, b) => a + b, 0)).reduce((a, b) => a + b, 0)"
            )
            labels = await admin.evaluate("Chart.getChart('chart').data.datasets.map(d => d.label)")
            await admin.screenshot(path=str(ARTIFACTS / "console-costs.png"), full_page=True)
            async with admin.expect_download() as download_info:
                await admin.click("#csv")
            exported = (await (await download_info.value).path()).read_text().splitlines()

            await admin.goto(gateway.url + "/console/users")
            await admin.fill("#new-user input[name=name]", "console-carol")
            await admin.click("#new-user button")
            await admin.wait_for_selector("#user-name")
            await admin.click("#new-key-form button")
            new_key = await admin.text_content("#new-key")
            await admin.click("button.revoke")
            await admin.wait_for_selector("#keys td.state")
            state = await admin.text_content("#keys td.state")
            await admin.screenshot(path=str(ARTIFACTS / "console-user.png"), full_page=True)
            await admin.click("#sign-out")

            user = await browser.new_page()
            await sign_in(user, gateway.url, alice_key)
            rows = await user.locator("#tasks tr td code").all_text_contents()
            await user.wait_for_function(
                "[...document.querySelectorAll('video')].every(v => v.readyState >= 1)",
                timeout=20_000,
            )
            await user.screenshot(path=str(ARTIFACTS / "console-my-tasks.png"), full_page=True)
        finally:
            await browser.close()

    assert abs(charted - ledger_total) < 1e-6 and ledger_total > 0
    assert {"console-alice", "console-bob"} <= set(labels)
    assert exported[0] == "day,user,name,currency,cost,cost_micros,tokens"
    assert sum(int(line.split(",")[5]) for line in exported[1:]) / 1_000_000 == pytest.approx(
        ledger_total
    )
    assert new_key and new_key.startswith("sgw-") and state == "revoked"
    assert sorted(rows) == sorted(alice_tasks) and not set(bob_tasks) & set(rows)
    audit = httpx.get(f"{gateway.url}/admin/v1/audit", headers=ADMIN).json()
    assert [entry["actor"] for entry in audit[:3]] == ["console:admin"] * 3  # revoke, key, user
