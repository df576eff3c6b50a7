"""A real headless Chromium (Debian's, driven by Playwright) runs the example page from its own
origin: it gets a token from the example's backend, creates a task through the gateway, follows
it while it queues and runs, and plays the video from the gateway's signed link, seeking in it
(a 206 is served). The screenshot is kept in `test-artifacts/`."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Response, async_playwright

from tests.e2e.conftest import Stack
from tests.e2e.processes import ROOT, Process, free_port, wait_until_up

pytestmark = pytest.mark.e2e
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture
def example_backend(stack: Stack, tmp_path: Path) -> Iterator[tuple[str, Process, str]]:
    """A gateway with CORS for the example's origin and the archive on, and the example's
    backend holding a key of it: (page URL, the gateway, the key)."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    gateway = stack.start_gateway(
        GATEWAY_CORS_ORIGINS=f'["{origin}"]',
        GATEWAY_ARCHIVE_URL=f"file://{tmp_path}/archive",
        GATEWAY_POLL_INTERVAL_SECONDS="0.5",
        GATEWAY_REFRESH_STALE_SECONDS="1",
    )
    key = stack.new_key(gateway, "browser-page")
    log = tmp_path / "backend.log"
    env = {"PORT": str(port), "GATEWAY_URL": gateway.url, "GATEWAY_KEY": key, "PATH": "/usr/bin"}
    with log.open("wb") as handle:
        backend = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "browser" / "backend.py")],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_up(origin + "/", backend, log)
        yield origin, gateway, key
    finally:
        backend.terminate()
        backend.wait(timeout=10)


async def test_a_page_creates_follows_and_plays_a_video_through_the_gateway(
    example_backend: tuple[str, Process, str],
) -> None:
    page_url, gateway, key = example_backend
    gateway_url = gateway.url
    answers: list[tuple[str, int]] = []
    statuses: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
        )
        try:
            page = await browser.new_page()

            def seen(response: Response) -> None:
                answers.append((response.url, response.status))

            page.on("response", seen)
            await page.goto(page_url)
            assert key not in await page.content()  # the page never holds the key
            await page.click("#create")
            for _ in range(60):  # the status the page shows, as it moves
                status = await page.text_content("#status") or ""
                if not statuses or statuses[-1] != status:
                    statuses.append(status)
                if status == "succeeded":
                    break
                await page.wait_for_timeout(250)
            await page.wait_for_function(
                "document.getElementById('video').readyState >= 2", timeout=20_000
            )
            duration = await page.evaluate("document.getElementById('video').duration")
            await page.evaluate(
                """() => new Promise((done) => {
                    const video = document.getElementById('video');
                    video.addEventListener('seeked', done, { once: true });
                    video.currentTime = video.duration * 0.8;
                })"""
            )
            position = await page.evaluate("document.getElementById('video').currentTime")
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "browser-video.png"), full_page=True)
        finally:
            await browser.close()

    assert "running" in statuses and statuses[-1] == "succeeded", statuses
    assert 2.5 < duration < 3.5  # the simulator's 3 s clip, decoded
    assert position > 2.0
    tasks = [(url, code) for url, code in answers if url.startswith(gateway_url + "/api/v3")]
    assert tasks and all(code == 200 for _, code in tasks), tasks  # cross-origin, allowed
    video = [code for url, code in answers if "/gateway/v1/outputs/" in url]
    assert 206 in video, answers  # the player asked for byte ranges, and got them
    assert not any("_sim/" in url for url, _ in answers)  # nothing of the upstream's reached it
    assert httpx.get(page_url).status_code == 200
    # The token and the links' signatures went through its access log: blanked there.
    log = gateway.log.read_text()
    assert "/gateway/v1/outputs/" in log and "signature=***" in log
    assert not re.search(r"signature=[0-9a-f]{8}|eyJ[\w-]{4,}\.[\w-]+\.[\w-]+", log)


async def test_the_docs_render_offline_and_take_a_bearer_key(stack: Stack) -> None:
    gateway = stack.start_gateway()
    failed: list[str] = []
    elsewhere: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            page.on("requestfailed", lambda request: failed.append(request.url))
            page.on(
                "request",
                lambda request: (
                    elsewhere.append(request.url)
                    if not request.url.startswith(gateway.url)
                    else None
                ),
            )
            await page.goto(gateway.url + "/docs")
            await page.wait_for_selector("button.authorize", timeout=20_000)
            operations = await page.locator(".opblock").count()
            await page.click("button.authorize")
            await page.wait_for_selector("text=GatewayKey", timeout=5_000)
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "docs.png"))
        finally:
            await browser.close()
    assert not failed and not elsewhere, (failed, elsewhere)
    assert operations >= 20  # every operation is listed
