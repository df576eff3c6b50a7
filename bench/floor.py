"""The floor: a bare FastAPI app that answers a finished task's bytes from memory.

What the gateway's finished-task retrieve would cost if it did nothing but be a FastAPI app.
"""

from __future__ import annotations

from fastapi import FastAPI, Response

TASK = (
    b'{"id":"cgt-20261125000000-floor","model":"seedance-1-0-pro-250528","status":"succeeded",'
    b'"content":{"video_url":"http://127.0.0.1/v.mp4"},"usage":{"completion_tokens":246840,'
    b'"total_tokens":246840},"created_at":1795500000,"updated_at":1795500003}'
)
app = FastAPI()


@app.get("/api/v3/contents/generations/tasks/{task_id}")
async def retrieve(task_id: str) -> Response:
    return Response(TASK, media_type="application/json")
