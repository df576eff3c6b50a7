"""A fake Seedance upstream speaking the reference's wire protocol, for demo, tests and benchmarks.

Besides the four task endpoints it serves `/_sim/stats` (call counters, peak open tasks),
`PATCH /_sim/config` (timings and fault knobs), `POST /_sim/reset`, and tiny fake videos.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from app.simulator.media import KINDS, access_denied, serve, valid_signature
from app.simulator.state import SimConfig, SimulatorState, now, supported_model
from app.simulator.tables import input_video_refusal

TASKS = "/api/v3/contents/generations/tasks"


def new_request_id() -> str:
    """An upstream-shaped request id: '021', a 13-digit ms timestamp, 37 hex digits."""
    return f"021{int(time.time() * 1000):013d}{secrets.token_hex(19)[:37]}"


def _error(
    status: int,
    code: str,
    message: str,
    *,
    param: str = "",
    kind: str = "BadRequest",
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {
        "error": {
            "code": code,
            "message": f"{message} Request id: {new_request_id()}",
            "param": param,
            "type": kind,
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def create_simulator_app(config: SimConfig) -> FastAPI:
    """A simulator app with its own state (no lifespan needed, so ASGI transports can call it)."""
    app = FastAPI(title="Seedance simulator", docs_url=None, redoc_url=None, openapi_url=None)
    state = SimulatorState(config=config)
    app.state.sim = state

    async def gate(request: Request, call: str) -> JSONResponse | None:
        """Latency, the master-key check and injected 429s, common to the four endpoints."""
        if config.latency_seconds:
            await asyncio.sleep(config.latency_seconds)
        presented = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(presented.encode(), config.api_key.encode()):
            state.count("unauthorized")
            return _error(
                401,
                "AuthenticationError",
                "The API key in the request is missing or invalid.",
                kind="Unauthorized",
            )
        state.count(call)
        if state.over_qps(call, time.monotonic()):
            return _error(
                429,
                "AccountRateLimitExceeded",
                f"The account's {call} requests per second limit is exceeded.",
                kind="TooManyRequests",
                headers={"Retry-After": "1"},
            )
        if config.rate_limit_rate and state.rng.random() < config.rate_limit_rate:
            return _error(
                429,
                "ModelAccountRpmRateLimitExceeded",
                "RPM (Requests Per Minute) limit of the model is exceeded.",
                kind="TooManyRequests",
                headers={"Retry-After": "2"},
            )
        return None

    @app.post(TASKS)
    async def create(request: Request) -> Response:
        if (refused := await gate(request, "create")) is not None:
            return refused
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "InvalidParameter", "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _error(400, "InvalidParameter", "The request body must be an object.")
        spec = supported_model(body.get("model")) if state.serves(body.get("model")) else None
        if spec is None:
            return _error(
                404,
                "InvalidEndpointOrModel.NotFound",
                f"The model or endpoint "
                f"{body.get('model')} does not exist or you do not have access to it.",
                param="model",
                kind="NotFound",
            )
        prompt = json.dumps(body.get("content"))
        if (refusal := input_video_refusal(spec, body.get("content"))) is not None:
            return _error(400, "InvalidParameter", refusal, param="content")
        if "[sim:reject]" in prompt:
            return _error(
                400,
                "InputTextSensitiveContentDetected",
                "The request failed because the input text may contain sensitive information.",
                param="content",
            )
        if "[sim:hang]" in prompt:
            await asyncio.sleep(config.hang_seconds)
        if config.create_error_rate and state.rng.random() < config.create_error_rate:
            return _error(
                500,
                "InternalServiceError",
                "The service encountered an unexpected internal error.",
                kind="InternalServerError",
            )
        if state.over_rpm(time.monotonic()):
            return _error(
                429,
                "RateLimitExceeded.EndpointRPMExceeded",
                "The Requests Per Minute (RPM) limit of the associated endpoint is exceeded.",
                kind="TooManyRequests",
                headers={"Retry-After": "5"},
            )
        if state.open_tasks(now()) >= config.max_queued:
            state.count("create_quota_refused")
            return _error(
                429, "QuotaExceeded", "The request has exceeded the quota.", kind="TooManyRequests"
            )
        task = state.create(body, spec, now())
        if "[sim:error-after-create]" in prompt:
            return _error(
                500,
                "InternalServiceError",
                "The service encountered an unexpected internal error.",
                kind="InternalServerError",
            )
        return JSONResponse({"id": task.id})

    @app.get(TASKS + "/{task_id}")
    async def retrieve(task_id: str, request: Request) -> Response:
        if (refused := await gate(request, "get")) is not None:
            return refused
        task = state.find(task_id)
        if task is None:
            state.count("unknown_task")  # a pooled gateway asked the wrong account?
            return _not_found(task_id)
        return JSONResponse(state.view(task, now()))

    @app.get(TASKS)
    async def list_tasks(request: Request) -> Response:
        if (refused := await gate(request, "list")) is not None:
            return refused
        query = request.query_params
        paging = {
            "page_num": query.get("page_num") or "1",
            "page_size": query.get("page_size") or "20",
        }
        for name, value in paging.items():  # the upstream's bounds: [1, 500] each
            if not value.isdigit() or not 1 <= int(value) <= 500:
                return _error(
                    400, "InvalidParameter", f"{name} must be within [1, 500].", param=name
                )
        page_num, page_size = int(paging["page_num"]), int(paging["page_size"])
        ids = set(query.getlist("filter.task_ids"))
        state.calls["unknown_task"] += sum(1 for task_id in ids if state.find(task_id) is None)
        tier = query.get("filter.service_tier") or "default"
        at = now()
        items = [
            state.view(task, at)
            for task in sorted(state.tasks.values(), key=lambda t: t.created_at, reverse=True)
            if not task.deleted
        ]
        items = [
            item
            for item in items
            if item["service_tier"] == tier
            and (not ids or item["id"] in ids)
            and (not query.get("filter.status") or item["status"] == query["filter.status"])
            and (not query.get("filter.model") or item["model"] == query["filter.model"])
        ]
        page = items[(page_num - 1) * page_size : page_num * page_size]
        return JSONResponse({"total": len(items), "items": page})

    @app.delete(TASKS + "/{task_id}")
    async def delete(task_id: str, request: Request) -> Response:
        if (refused := await gate(request, "delete")) is not None:
            return refused
        task = state.find(task_id)
        if task is None:
            state.count("unknown_task")  # a pooled gateway asked the wrong account?
            return _not_found(task_id)
        status = task.status(config, now())
        if status == "queued":
            task.cancelled_at = now()
        elif status in ("running", "cancelled"):
            return _error(
                409,
                "InvalidAction.TaskStatus",
                f"The task {task_id} cannot be deleted in status {status}.",
                param="task_id",
                kind="Conflict",
            )
        else:
            task.deleted = True
        return JSONResponse({})

    @app.get("/_sim/stats")
    async def stats() -> dict[str, Any]:
        return {
            "calls": dict(state.calls),
            "tasks": len(state.tasks),
            "open": state.open_tasks(now()),
            "peak_open": state.peak_open,
            "peak_per_second": dict(state.peak_per_second),
        }

    @app.get("/_sim/tasks")
    async def billing() -> list[dict[str, Any]]:
        return state.billing(now())

    @app.patch("/_sim/config")
    async def update_config(request: Request) -> dict[str, Any]:
        config.update(await request.json())
        return config.public()

    @app.post("/_sim/reset")
    async def reset() -> dict[str, str]:
        state.tasks.clear()
        state.open_ids.clear()
        state.calls.clear()
        state.peak_per_second.clear()
        state.peak_open = 0
        return {"status": "reset"}

    @app.get("/_sim/{kind}/{name}")
    async def output(kind: str, name: str, request: Request) -> Response:
        """A task's video or last frame, as object storage serves it (presigned, ranged)."""
        query = request.query_params
        valid = kind in KINDS and valid_signature(
            request.url.path,
            expires=query.get("X-Tos-Expires", ""),
            signature=query.get("X-Tos-Signature", ""),
            secret=config.api_key,
            now=now(),
        )
        state.count(f"download_{kind}" if valid else "download_refused")
        if "authorization" in request.headers:  # a presigned URL needs none: a leak
            state.count("download_with_credentials")
        if not valid:
            return access_denied()
        if state.rng.random() < config.download_error_rate:
            state.count("download_failed")
            return Response("storage failure", status_code=500)
        return serve(
            kind,
            range_header=request.headers.get("range"),
            if_none_match=request.headers.get("if-none-match"),
        )

    return app


def _not_found(task_id: str) -> JSONResponse:
    return _error(
        404,
        "ResourceNotFound",
        f"The specified task {task_id} is not found.",
        param="task_id",
        kind="NotFound",
    )
