"""The simulator's in-memory upstream: tasks that age through their states, and fault knobs.

A task's state follows from its age (`queued_seconds`, then `running_seconds`), so nothing runs
in the background. Prompt markers force outcomes in tests and demos:
`[sim:fail]`, `[sim:expire]`, `[sim:reject]` (create refused, 400), `[sim:error-after-create]`
(created, then a 500), `[sim:hang]` (no answer for `hang_seconds`), `[sim:hold]` (queued until
cancelled, whatever the timings), `[sim:usage-revised]` (its usage grows by a tenth
`usage_revision_seconds` after it succeeded, as upstream usage sometimes is corrected).
"""

from __future__ import annotations

import random
import string
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from app.simulator.media import signed_url
from app.simulator.tables import MODELS, SimModel, output_of

_UTC8 = timezone(timedelta(hours=8))
OPEN = ("queued", "running")

_FAILURE = {
    "code": "OutputVideoSensitiveContentDetected.PolicyViolation",
    "message": "The request failed because the output video may be related to copyright "
    "restrictions.",
}


@dataclass
class SimConfig:
    """Timings and fault knobs, changeable at run time through `PATCH /_sim/config`."""

    api_key: str
    queued_seconds: float = 1.0
    running_seconds: float = 2.0
    failure_rate: float = 0.0  # share of tasks that end `failed`
    create_error_rate: float = 0.0  # share of creates answered 500 (without creating)
    rate_limit_rate: float = 0.0  # share of requests answered 429
    latency_seconds: float = 0.0  # added to every answer
    hang_seconds: float = 30.0
    # Each task queues and runs for the timings above times its own factor, drawn at create
    # from [1 - jitter, 1 + jitter]: real tasks do not all move at the same moment.
    timing_jitter: float = 0.0
    max_queued: int = 120  # the account's queue limit: beyond it, 429 QuotaExceeded
    # The account's creates per minute (0: none): beyond it in any 60 s, 429.
    creates_per_minute: int = 0
    # The models the account serves, by its own names, comma-separated ("": every known one).
    models: str = ""
    # The account's non-inference QPS (BytePlus): beyond it in any second, 429.
    get_qps: int = 20
    list_qps: int = 1
    delete_qps: int = 20
    public_base_url: str = "http://127.0.0.1:8001"
    # A finished task's output URLs stop working this long after it finished (upstream: 24 h).
    url_ttl_seconds: float = 86_400.0
    download_error_rate: float = 0.0  # share of output downloads answered 500
    usage_revision_seconds: float = 5.0  # after success, when `[sim:usage-revised]` usage grows

    def update(self, changes: dict[str, Any]) -> None:
        """Apply known knobs from `changes`; unknown names are ignored."""
        for name, value in changes.items():
            if name in SimConfig.__dataclass_fields__ and name != "api_key":
                setattr(self, name, type(getattr(self, name))(value))

    def public(self) -> dict[str, Any]:
        """The knobs, without the key."""
        return {k: v for k, v in asdict(self).items() if k != "api_key"}


@dataclass
class SimTask:
    """One upstream task and what it will become."""

    id: str
    spec: SimModel
    body: dict[str, Any]
    created_at: float
    outcome: str  # succeeded | failed | expired | held (queued for good)
    cancelled_at: float | None = None
    deleted: bool = False
    pace: float = 1.0  # this task's factor on the configured timings
    usage_revised: bool = False  # its usage is corrected upwards after it succeeded

    def billed_tokens(self, config: SimConfig, now: float) -> int:
        """The usage the upstream reports for it now (succeeded), corrections included."""
        tokens = output_of(self.spec, self.body).tokens
        revised_at = self.finished_at(config) + config.usage_revision_seconds
        if self.usage_revised and now >= revised_at:
            tokens += tokens // 10
        return tokens

    def started_at(self, config: SimConfig) -> float:
        """When it leaves `queued` (unless cancelled first)."""
        return self.created_at + config.queued_seconds * self.pace

    def finished_at(self, config: SimConfig) -> float:
        """When it reaches its outcome (unless cancelled first)."""
        return self.started_at(config) + config.running_seconds * self.pace

    def status(self, config: SimConfig, now: float) -> str:
        """The state this task is in at `now`."""
        if self.cancelled_at is not None:
            return "cancelled"
        if self.outcome == "held" or now < self.started_at(config):
            return "queued"
        if now < self.finished_at(config):
            return "running"
        return self.outcome


@dataclass
class SimulatorState:
    """All tasks and call counters of one simulator instance."""

    config: SimConfig
    tasks: dict[str, SimTask] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    peak_open: int = 0
    open_ids: set[str] = field(default_factory=set)  # tasks not yet seen ended
    rng: random.Random = field(default_factory=random.Random)

    recent: dict[str, list[float]] = field(default_factory=dict)
    # The most calls of each kind answered within any one second: what the account saw.
    peak_per_second: Counter[str] = field(default_factory=Counter)

    def count(self, call: str) -> None:
        """Count one call by its name (`create`, `get`, `list`, `delete`, `unauthorized`...)."""
        self.calls[call] += 1

    def over_qps(self, call: str, now: float) -> bool:
        """Whether this call exceeds the account's per-second limit for its kind (and so is
        refused, and counted under `<call>_refused`)."""
        limit = getattr(self.config, f"{call}_qps", None)
        if limit is None:
            return False
        window = [at for at in self.recent.get(call, []) if at > now - 1.0]
        if len(window) >= limit:
            self.recent[call] = window
            self.calls[f"{call}_refused"] += 1
            return True
        self.recent[call] = [*window, now]
        self.peak_per_second[call] = max(self.peak_per_second[call], len(window) + 1)
        return False

    def over_rpm(self, now: float) -> bool:
        """Whether a create exceeds the account's creates per minute (counted under
        `create_rpm_refused` when it does)."""
        limit = self.config.creates_per_minute
        if not limit:
            return False
        window = [at for at in self.recent.get("create_rpm", []) if at > now - 60.0]
        if len(window) >= limit:
            self.recent["create_rpm"] = window
            self.calls["create_rpm_refused"] += 1
            return True
        self.recent["create_rpm"] = [*window, now]
        peak = self.peak_per_second
        peak["create_per_minute"] = max(peak["create_per_minute"], len(window) + 1)
        return False

    def serves(self, model: object) -> bool:
        """Whether the account has access to the model (by its name for it)."""
        served = {name.strip() for name in self.config.models.split(",") if name.strip()}
        return not served or model in served

    def open_tasks(self, now: float) -> int:
        """Tasks queued or running now (what the account's concurrency and queue limits see).

        A task that has ended never opens again, so only the ones still open are looked at:
        a create costs the same after a million tasks as after ten.
        """
        for task_id in list(self.open_ids):
            task = self.tasks.get(task_id)
            if task is None or task.deleted or task.status(self.config, now) not in OPEN:
                self.open_ids.discard(task_id)
        return len(self.open_ids)

    def create(self, body: dict[str, Any], spec: SimModel, now: float) -> SimTask:
        """Record a new task and decide its outcome."""
        prompt = " ".join(
            str(item.get("text", "")) for item in body.get("content", []) if isinstance(item, dict)
        )
        outcome = "succeeded"
        if "[sim:fail]" in prompt or self.rng.random() < self.config.failure_rate:
            outcome = "failed"
        elif "[sim:expire]" in prompt:
            outcome = "expired"
        elif "[sim:hold]" in prompt:
            outcome = "held"
        jitter = self.config.timing_jitter
        task = SimTask(
            id=self._new_id(now),
            spec=spec,
            body=body,
            created_at=now,
            outcome=outcome,
            pace=self.rng.uniform(1 - jitter, 1 + jitter) if jitter else 1.0,
            usage_revised="[sim:usage-revised]" in prompt,
        )
        self.tasks[task.id] = task
        self.open_ids.add(task.id)
        self.peak_open = max(self.peak_open, self.open_tasks(now))
        return task

    def _new_id(self, now: float) -> str:
        """An upstream-shaped id: creation time in UTC+8 and a 5-character [a-z0-9] suffix."""
        stamp = datetime.fromtimestamp(now, UTC).astimezone(_UTC8).strftime("%Y%m%d%H%M%S")
        suffix = "".join(self.rng.choices(string.ascii_lowercase + string.digits, k=5))
        return f"cgt-{stamp}-{suffix}"

    def view(self, task: SimTask, now: float) -> dict[str, Any]:
        """The task object as the upstream's retrieve returns it."""
        status = task.status(self.config, now)
        body = task.body
        view: dict[str, Any] = {
            "id": task.id,
            "model": body["model"],
            "status": status,
            "created_at": int(task.created_at),
            "updated_at": int(min(now, self._changed_at(task, now))),
            "service_tier": body.get("service_tier") or "default",
            "execution_expires_after": body.get("execution_expires_after") or 172800,
        }
        if status in ("queued", "running", "cancelled"):
            return view
        output = output_of(task.spec, body)
        seed = body.get("seed")
        view.update(
            {
                "seed": 44457 if seed in (None, -1) else seed,
                "resolution": output.resolution,
                "ratio": output.ratio,
                "framespersecond": 24,
                "draft": bool(body.get("draft")),
            }
        )
        if output.frames is not None:
            view["frames"] = output.frames
        else:
            view["duration"] = output.duration
        if status == "succeeded":
            tokens = task.billed_tokens(self.config, now)
            view["content"] = self._outputs(task)
            view["usage"] = {"completion_tokens": tokens, "total_tokens": tokens}
        elif status == "failed":
            view["error"] = dict(_FAILURE)
        return view

    def _outputs(self, task: SimTask) -> dict[str, str]:
        """Presigned URLs of a succeeded task's video (and last frame, when asked for)."""
        expires_at = int(task.finished_at(self.config) + self.config.url_ttl_seconds)
        paths = {"video_url": f"/_sim/videos/{task.id}.mp4"}
        if task.body.get("return_last_frame") is True:
            paths["last_frame_url"] = f"/_sim/frames/{task.id}.jpg"
        base, secret = self.config.public_base_url, self.config.api_key
        return {
            name: signed_url(base, path, expires_at=expires_at, secret=secret)
            for name, path in paths.items()
        }

    def _changed_at(self, task: SimTask, now: float) -> float:
        if task.cancelled_at is not None:
            return task.cancelled_at
        status = task.status(self.config, now)
        if status == "queued":
            return task.created_at
        if status == "running":
            return task.started_at(self.config)
        return task.finished_at(self.config)

    def billing(self, now: float) -> list[dict[str, Any]]:
        """Every task the account ever made and the tokens billed for it (succeeded ones only),
        deleted tasks included: the oracle a test checks the gateway's ledger against."""
        return [
            {
                "id": task.id,
                "status": (status := task.status(self.config, now)),
                "billed_tokens": task.billed_tokens(self.config, now)
                if status == "succeeded"
                else 0,
                "deleted": task.deleted,
                "seed": task.body.get("seed"),
                "created_at": task.created_at,
                # When it moved (unix seconds, exact): the oracle for how stale an answer was.
                "started_at": task.started_at(self.config),
                "finished_at": task.finished_at(self.config),
                "cancelled_at": task.cancelled_at,
            }
            for task in self.tasks.values()
        ]

    def find(self, task_id: str) -> SimTask | None:
        """A task the account can still see."""
        task = self.tasks.get(task_id)
        return None if task is None or task.deleted else task


def supported_model(model: Any) -> SimModel | None:
    """The models the simulator serves (its own table, not the gateway's catalog)."""
    return MODELS.get(model) if isinstance(model, str) else None


def now() -> float:
    """Wall-clock seconds (upstream timestamps are unix seconds)."""
    return time.time()
