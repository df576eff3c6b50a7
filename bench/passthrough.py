"""The pass-through baseline: a bare FastAPI app that forwards a retrieve or a create to the
upstream with the gateway's own upstream client, and does nothing else (no key, limit, ledger).

What an open-task retrieve or a create would cost if the gateway only relayed it. Configured
by `PASS_UPSTREAM_URL` and `PASS_UPSTREAM_KEY`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from app.upstream.client import UpstreamClient, create_http_client


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    http = create_http_client(
        base_url=os.environ["PASS_UPSTREAM_URL"],
        api_key=os.environ["PASS_UPSTREAM_KEY"],
        timeout=30,
        connect_timeout=5,
        max_connections=100,
    )
    app.state.upstream = UpstreamClient(http)
    yield
    await http.aclose()


app = FastAPI(lifespan=lifespan)


@app.get("/api/v3/contents/generations/tasks/{task_id}")
async def retrieve(task_id: str, request: Request) -> dict[str, Any]:
    upstream: UpstreamClient = request.app.state.upstream
    return await upstream.get_task(task_id, request_id="pass")


@app.post("/api/v3/contents/generations/tasks")
async def create(request: Request) -> dict[str, Any]:
    upstream: UpstreamClient = request.app.state.upstream
    return await upstream.create_task(await request.json(), request_id="pass")
