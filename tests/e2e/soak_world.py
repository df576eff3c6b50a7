"""The soak test's world: a callback receiver, and clients doing a random mix against replicas.

Every answer is tallied by status and outcome code; what a client learns (task ids, idempotent
requests still to settle) is kept for the invariants checked afterwards.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

TASKS = "/api/v3/contents/generations/tasks"
MARKERS = [
    ("", 70),
    ("[sim:fail] ", 6),
    ("[sim:expire] ", 6),
    ("[sim:error-after-create] ", 6),
    ("[sim:hang] ", 4),
    ("[sim:reject] ", 4),
]
RETRY_LATER = {"IdempotencyKeyInUse", "IdempotencyKeyOutcomePending"}


class CallbackReceiver:
    """An HTTP server in a thread that records every callback: (arrival, task id, status)."""

    def __init__(self) -> None:
        self.received: list[tuple[float, str, str]] = []
        lock = threading.Lock()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    received.append((time.monotonic(), body["id"], body["status"]))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def by_task(self) -> dict[str, list[tuple[float, str]]]:
        """Each task's callbacks in arrival order."""
        tasks: dict[str, list[tuple[float, str]]] = {}
        for arrived, task_id, status in sorted(self.received):
            tasks.setdefault(task_id, []).append((arrived, status))
        return tasks


@dataclass
class Tally:
    """What all clients saw."""

    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    idempotent: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    answered_ids: dict[tuple[str, str], str] = field(default_factory=dict)

    def record(self, method: str, path: str, response: httpx.Response) -> None:
        self.statuses[response.status_code] += 1
        if response.status_code >= 400:
            try:
                code = response.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = "not Ark-shaped"
                self.unexpected.append(f"{method} {path} -> {response.text[:200]}")
            self.codes[f"{response.status_code} {code}"] += 1
        if response.status_code >= 500 and response.status_code not in (502, 504):
            self.unexpected.append(f"{method} {path} -> {response.status_code} {response.text}")


@dataclass
class Client:
    """One caller with one key, its tasks and its idempotent requests."""

    key: str
    user: str
    tally: Tally
    replicas: Callable[[], list[str]]
    callback_url: str
    rng: random.Random
    tasks: list[str] = field(default_factory=list)

    async def run(self, http: httpx.AsyncClient, until: float) -> None:
        actions = [self.create, self.retrieve, self.list, self.remove, self.retry_idempotent]
        weights = [35, 35, 12, 8, 10]
        while time.monotonic() < until:
            action = self.rng.choices(actions, weights)[0]
            try:
                await action(http)
            except httpx.TransportError as exc:  # a replica killed under the request
                self.tally.transport_errors[type(exc).__name__] += 1
            await asyncio.sleep(self.rng.uniform(0.05, 0.3))

    async def send(
        self, http: httpx.AsyncClient, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        base = self.rng.choice(self.replicas())
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        response = await http.request(method, base + path, headers=headers, **kwargs)
        self.tally.record(method, path, response)
        return response

    async def create(self, http: httpx.AsyncClient) -> None:
        marker = self.rng.choices(*zip(*MARKERS, strict=True))[0]
        body: dict[str, Any] = {
            "model": "seedance-1-0-pro-250528",
            "content": [{"type": "text", "text": f"{marker}fox no. {self.rng.randrange(10**6)}"}],
            "resolution": self.rng.choice(["480p", "720p"]),
            "duration": self.rng.choice([5, 10]),
            "ratio": "16:9",
        }
        if self.rng.random() < 0.4:
            body["callback_url"] = self.callback_url
        headers = {}
        if self.rng.random() < 0.3:
            headers["Idempotency-Key"] = f"{self.user}-{self.rng.randrange(10**9)}"
            self.tally.idempotent[(self.key, headers["Idempotency-Key"])] = body
        response = await self.send(http, "POST", TASKS, json=body, headers=headers)
        if response.status_code == 200:
            self._learn(response.json()["id"], headers.get("Idempotency-Key"))

    async def retry_idempotent(self, http: httpx.AsyncClient) -> None:
        """Resend one of this key's idempotent creates: the same task, or "retry later"."""
        mine = [k for k in self.tally.idempotent if k[0] == self.key]
        if not mine:
            return
        _, idempotency_key = self.rng.choice(mine)
        await self.resend(http, idempotency_key)

    async def resend(self, http: httpx.AsyncClient, idempotency_key: str) -> httpx.Response:
        body = self.tally.idempotent[(self.key, idempotency_key)]
        response = await self.send(
            http, "POST", TASKS, json=body, headers={"Idempotency-Key": idempotency_key}
        )
        if response.status_code == 200:
            self._learn(response.json()["id"], idempotency_key)
        return response

    def _learn(self, task_id: str, idempotency_key: str | None) -> None:
        if idempotency_key is not None:
            first = self.tally.answered_ids.setdefault((self.key, idempotency_key), task_id)
            if first != task_id:
                self.tally.unexpected.append(f"{idempotency_key}: {first} then {task_id}")
        if task_id not in self.tasks:
            self.tasks.append(task_id)

    async def retrieve(self, http: httpx.AsyncClient) -> None:
        if self.tasks:
            task_id = self.rng.choice(self.tasks[-10:])
            response = await self.send(http, "GET", f"{TASKS}/{task_id}")
            if response.status_code not in (200, 404):  # 404 once this client deleted it
                self.tally.unexpected.append(f"GET {task_id} -> {response.status_code}")

    async def list(self, http: httpx.AsyncClient) -> None:
        params = {"page_size": "10"}
        if self.rng.random() < 0.5:
            params["filter.status"] = self.rng.choice(["queued", "running", "succeeded"])
        await self.send(http, "GET", TASKS, params=params)

    async def remove(self, http: httpx.AsyncClient) -> None:
        """Cancel (queued) or delete (finished); a running task answers 409."""
        if self.tasks:
            await self.send(http, "DELETE", f"{TASKS}/{self.rng.choice(self.tasks)}")
