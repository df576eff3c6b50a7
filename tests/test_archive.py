"""The archive: succeeded tasks' outputs copied into a local directory or S3 (a real S3 protocol
server, moto's, as a process), once, with retries, before the upstream's links expire; served
from there with byte ranges; deleted after the retention period."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import col

from app.db import utcnow
from app.lifespan import archiver_for, poller_for
from app.simulator.media import media_bytes
from app.simulator.state import SimulatorState
from app.tasks.models import TaskArchive
from tests.conftest import ADMIN_TOKEN, Gateway
from tests.e2e.processes import Process, clean_env, free_port, start
from tests.helpers import TASKS, body

VIDEO, FRAME = media_bytes("videos"), media_bytes("frames")
SECRET = "archive-test-link-secret-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server, with an empty bucket `videos`."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    server: Process = start(
        ["-p", str(port)],
        env=clean_env(),
        port=port,
        log=log,
        health="/moto-api/",
        module="moto.server",
    )
    httpx.put(f"{server.url}/videos").raise_for_status()
    yield server.url
    server.stop()


@pytest.fixture(params=["file", "s3"])
def archive_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Archive settings for each backend: a directory, or a fresh prefix in the S3 bucket."""
    if request.param == "file":
        return {"archive_url": f"file://{tmp_path}/archive"}
    endpoint = request.getfixturevalue("s3_server")
    return {
        "archive_url": f"s3://videos/run-{time.monotonic_ns()}",
        "archive_s3_endpoint_url": endpoint,
        "archive_s3_region": "us-east-1",
        "archive_s3_access_key_id": "test",
        "archive_s3_secret_access_key": "test-secret",
    }


async def archive_gateway(make_gateway, archive_settings: dict[str, Any], **extra: Any) -> Gateway:
    gateway: Gateway = await make_gateway(
        browser_token_secrets=[SECRET],
        upstream_refresh_rate="1000/second",  # each retrieve below sees its task finished
        **archive_settings,
        **extra,
    )
    return gateway


async def archive_round(gateway: Gateway) -> int:
    resources = gateway.app.state.resources
    return await archiver_for(resources, resources.store).run_once()


async def archive_row(gateway: Gateway, task_id: str) -> dict[str, Any]:
    answer = await gateway.client.get(f"/admin/v1/tasks/{task_id}", headers=ADMIN)
    assert answer.status_code == 200
    return dict(answer.json()["archive"] or {})


async def succeeded_task(client: httpx.AsyncClient, **fields: Any) -> str:
    task_id = str((await client.post(TASKS, json=body(**fields))).json()["id"])
    assert (await client.get(f"{TASKS}/{task_id}")).json()["status"] == "succeeded"
    return task_id


async def test_outputs_are_archived_and_served_from_the_archive_after_the_link_expires(
    make_gateway, archive_settings, sim_state: SimulatorState, sim_config
) -> None:
    sim_config.url_ttl_seconds = 3.0  # time enough to archive first, even on a busy machine
    gateway = await archive_gateway(make_gateway, archive_settings)
    client = await gateway.user_client("alice")
    task_id = await succeeded_task(client, return_last_frame=True)
    assert (await archive_row(gateway, task_id))["status"] == "pending"

    assert await archive_round(gateway) == 1
    row = await archive_row(gateway, task_id)
    assert row["status"] == "archived"
    assert (row["video_bytes"], row["frame_bytes"]) == (len(VIDEO), len(FRAME))
    assert row["attempts"] == 0
    await asyncio.sleep(3.05)  # the upstream's links are dead now
    fetched = sim_state.calls["download_videos"]

    whole = await client.get(f"{TASKS}/{task_id}/content")
    assert whole.status_code == 200
    assert whole.content == VIDEO
    assert whole.headers["content-length"] == str(len(VIDEO))
    assert whole.headers["content-type"] == "video/mp4"
    for header, (first, last) in {
        "bytes=0-0": (0, 0),
        "bytes=1000-2047": (1000, 2047),
        "bytes=-10": (len(VIDEO) - 10, len(VIDEO) - 1),
        "bytes=7000-": (7000, len(VIDEO) - 1),
    }.items():
        part = await client.get(f"{TASKS}/{task_id}/content", headers={"Range": header})
        assert part.status_code == 206, header
        assert part.content == VIDEO[first : last + 1], header
        assert part.headers["content-range"] == f"bytes {first}-{last}/{len(VIDEO)}", header
    beyond = await client.get(f"{TASKS}/{task_id}/content", headers={"Range": "bytes=99999-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(VIDEO)}"
    again = await client.get(
        f"{TASKS}/{task_id}/content", headers={"If-None-Match": whole.headers["etag"]}
    )
    assert again.status_code == 304
    frame = await client.get(f"{TASKS}/{task_id}/content", params={"variant": "last_frame"})
    assert frame.content == FRAME
    assert frame.headers["content-type"] == "image/jpeg"
    assert sim_state.calls["download_videos"] == fetched  # all served from the archive


async def test_task_objects_link_to_the_gateway_and_the_links_work_without_a_key(
    make_gateway, archive_settings, sim_state: SimulatorState
) -> None:
    gateway = await archive_gateway(make_gateway, archive_settings)
    client = await gateway.user_client("alice")
    task_id = await succeeded_task(client, return_last_frame=True)
    await archive_round(gateway)
    task = (await client.get(f"{TASKS}/{task_id}")).json()
    listed = (await client.get(TASKS)).json()["items"][0]
    assert listed["content"].keys() == task["content"].keys() == {"video_url", "last_frame_url"}
    for url in (*task["content"].values(), *listed["content"].values()):
        assert url.startswith("http://gateway.test/gateway/v1/outputs/" + task_id)
        assert "_sim" not in url and "X-Tos" not in url  # nothing of the upstream's

    anonymous = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway.app), base_url="http://gateway.test"
    )
    video = await anonymous.get(task["content"]["video_url"], headers={"Range": "bytes=0-99"})
    assert video.status_code == 206
    assert video.content == VIDEO[:100]
    assert (await anonymous.get(task["content"]["last_frame_url"])).content == FRAME

    path = urlsplit(task["content"]["video_url"]).path
    signer = gateway.app.state.resources.token_signer
    expired = signer.sign_link(path, expires_at=int(time.time()) - 1)
    for query in (expired, {**signer.sign_link(path, expires_at=2**40), "signature": "0" * 64}):
        refused = await anonymous.get(path, params=query)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "LinkExpired"
    other_variant = path.replace("/video", "/last_frame")
    borrowed = dict(httpx.URL(task["content"]["video_url"]).params)
    assert (await anonymous.get(other_variant, params=borrowed)).status_code == 403


async def test_a_failed_copy_is_retried_with_back_off_and_an_expired_link_is_given_up(
    make_gateway, archive_settings, sim_state: SimulatorState, sim_config
) -> None:
    gateway = await archive_gateway(make_gateway, archive_settings)
    client = await gateway.user_client("alice")
    task_id = await succeeded_task(client)
    sim_config.download_error_rate = 1.0
    await archive_round(gateway)
    row = await archive_row(gateway, task_id)
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert "502" in row["last_error"] or "UpstreamFailure" in row["last_error"]
    assert await archive_round(gateway) == 0  # backing off: not due yet

    sim_config.download_error_rate = 0.0
    await due_now(gateway, task_id)
    await archive_round(gateway)
    assert (await archive_row(gateway, task_id))["status"] == "archived"
    assert (await client.get(f"{TASKS}/{task_id}/content")).content == VIDEO

    sim_config.url_ttl_seconds = 0.0
    late = await succeeded_task(client, seed=7)
    await asyncio.sleep(1.05)
    await archive_round(gateway)
    row = await archive_row(gateway, late)
    assert row["status"] == "failed"
    assert "expired" in row["last_error"]


async def due_now(gateway: Gateway, task_id: str) -> None:
    async with gateway.app.state.resources.sessionmaker() as session:
        await session.exec(
            update(TaskArchive)
            .where(col(TaskArchive.task_id) == task_id)
            .values(next_attempt_at=utcnow())
        )
        await session.commit()


async def test_two_replicas_archive_each_task_once(
    make_pg_gateway, archive_settings, sim_state: SimulatorState
) -> None:
    replicas = [await archive_gateway(make_pg_gateway, archive_settings) for _ in range(2)]
    client = await replicas[0].user_client("alice")
    ids = [await succeeded_task(client, seed=n) for n in range(12)]
    rounds = await asyncio.gather(
        *(archive_round(replica) for replica in replicas for _ in range(2))
    )
    assert sum(rounds) == 12
    assert sim_state.calls["download_videos"] == 12  # each video fetched once
    for task_id in ids:
        assert (await archive_row(replicas[1], task_id))["status"] == "archived"


async def test_copies_are_deleted_after_the_retention_period(
    make_gateway, archive_settings, sim_config
) -> None:
    sim_config.url_ttl_seconds = 3.0  # time enough to archive first, even on a busy machine
    gateway = await archive_gateway(make_gateway, archive_settings, archive_retention_days=30)
    client = await gateway.user_client("alice")
    task_id = await succeeded_task(client)
    await archive_round(gateway)
    row = await archive_row(gateway, task_id)
    assert row["status"] == "archived"
    kept_for = (_stamp(row["delete_after"]) - _stamp(row["archived_at"])).total_seconds()
    assert kept_for == timedelta(days=30).total_seconds()

    async with gateway.app.state.resources.sessionmaker() as session:
        await session.exec(
            update(TaskArchive)
            .where(col(TaskArchive.task_id) == task_id)
            .values(delete_after=utcnow() - timedelta(seconds=1))
        )
        await session.commit()
    await archive_round(gateway)
    assert (await archive_row(gateway, task_id))["status"] == "deleted"
    await asyncio.sleep(3.05)  # and the upstream's link is gone too
    gone = await client.get(f"{TASKS}/{task_id}/content")
    assert gone.status_code == 410
    if archive_settings["archive_url"].startswith("file://"):
        folder = Path(archive_settings["archive_url"].removeprefix("file://"))
        assert not (folder / task_id / "video").exists()


def _stamp(value: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(value)


async def test_callbacks_carry_the_gateways_links_too(make_gateway, tmp_path: Path) -> None:
    from tests.test_callbacks import HOOK, Receiver

    receiver = Receiver()
    gateway: Gateway = await make_gateway(
        browser_token_secrets=[SECRET],
        archive_url=f"file://{tmp_path}/archive",
        public_base_url="https://videos.example.com/",
        callbacks=receiver.transport(),
    )
    client = await gateway.user_client("alice")
    task_id = await succeeded_task(client, callback_url=HOOK)
    await poller_for(gateway.app.state.resources).run_once()
    (succeeded,) = [p for p in receiver.received if p["status"] == "succeeded"]
    link = succeeded["content"]["video_url"]
    assert link.startswith(f"https://videos.example.com/gateway/v1/outputs/{task_id}/video?")
    local = httpx.URL(link).copy_with(scheme="http", host="gateway.test")
    answer = await gateway.client.get(str(local))
    assert answer.content == VIDEO


async def test_the_usage_report_by_task_shows_each_archive_copy(
    make_gateway, archive_settings, sim_config
) -> None:
    gateway = await archive_gateway(make_gateway, archive_settings)
    client = await gateway.user_client("alice")
    archived = await succeeded_task(client)
    await archive_round(gateway)
    sim_config.download_error_rate = 1.0
    pending = await succeeded_task(client, seed=3)
    await archive_round(gateway)
    report = await gateway.client.get("/admin/v1/usage", params={"group_by": "task"}, headers=ADMIN)
    rows = {row["group"]: row for row in report.json()["rows"]}
    assert rows[archived]["archive"] == "archived"
    assert rows[pending]["archive"] == "pending"
    assert rows[archived]["user_name"] == "alice" and rows[archived]["settled_tasks"] == 1
    csv = await gateway.client.get(
        "/admin/v1/usage", params={"group_by": "task", "format": "csv"}, headers=ADMIN
    )
    assert csv.text.splitlines()[0].startswith("task,name,user_name,archive,currency,")
    assert f"{archived},seedance-1-0-pro-250528,alice,archived," in csv.text
