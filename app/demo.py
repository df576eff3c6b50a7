"""Demo mode: with no upstream key, the gateway runs against the built-in simulator.

`serve` then also starts the simulator, creates a demo user and a fresh key, and prints a banner
with the key and a curl line to paste.
"""

from __future__ import annotations

import json
import secrets
import socket

from fastapi import FastAPI
from pydantic import SecretStr
from sqlmodel import select

from app.config import DEMO_UPSTREAM_KEY, Settings
from app.db import create_engine, create_sessionmaker
from app.keys import service as keys
from app.keys.models import User
from app.simulator.app import create_simulator_app
from app.simulator.state import SimConfig
from app.tasks.states import expire_open_tasks

DEMO_USER = "demo"


def demo_settings(settings: Settings) -> Settings:
    """The settings with an admin token generated for this run when none is configured."""
    if settings.admin_token is not None:
        return settings
    return settings.model_copy(update={"admin_token": SecretStr(secrets.token_urlsafe(24))})


def demo_simulator(settings: Settings) -> FastAPI:
    """The simulator app the demo gateway talks to (short timings so tasks finish quickly)."""
    port = settings.demo_simulator_port
    return create_simulator_app(
        SimConfig(
            api_key=DEMO_UPSTREAM_KEY,
            queued_seconds=3,
            running_seconds=7,
            public_base_url=f"http://127.0.0.1:{port}",
        )
    )


def check_ports(host: str, port: int, simulator_port: int) -> None:
    """Exit with a clear message, before any banner, if a port demo mode needs is taken."""
    for what, bind_host, number, setting in (
        ("gateway", host, port, "PORT=…"),
        ("simulator", "127.0.0.1", simulator_port, "SIM_PORT=… (GATEWAY_DEMO_SIMULATOR_PORT)"),
    ):
        with socket.socket() as probe:
            # As the servers will: a port that only lingers after a restart is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((bind_host, number))
            except OSError:
                raise SystemExit(
                    f"error: the {what} port {bind_host}:{number} is in use; "
                    f"choose another with make run {setting}"
                ) from None


async def create_demo_key(settings: Settings) -> str:
    """Make sure the demo user exists and issue it a new key; returns the plaintext.

    The previous run's open tasks are expired first: the new simulator never heard of them.
    """
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            await expire_open_tasks(session, error_code="DemoSimulatorRestarted")
            user = (await session.exec(select(User).where(User.name == DEMO_USER))).first()
            if user is None:
                user = await keys.create_user(session, name=DEMO_USER)
            _, plaintext = await keys.create_key(session, user_id=user.id, name="demo")
            return plaintext
    finally:
        await engine.dispose()


DEMO_BODY = json.dumps(
    {
        "model": "seedance-1-0-pro-250528",
        "content": [{"type": "text", "text": "a red fox runs --dur 5"}],
    },
    separators=(",", ":"),
)


def banner(settings: Settings, *, host: str, port: int, key: str) -> str:
    """What demo mode prints at start-up."""
    base = f"http://{host}:{port}"
    admin = settings.admin_token.get_secret_value() if settings.admin_token else ""
    return f"""
==================== SEEDANCE GATEWAY: DEMO MODE ====================
No GATEWAY_UPSTREAM_API_KEY is set, so the upstream is the built-in
SIMULATOR (127.0.0.1:{settings.demo_simulator_port}); no real videos are made.
Database: {settings.database_url}

Demo key (shown once):   {key}
Admin token (this run):  {admin}

Try it:
curl -s {base}/api/v3/contents/generations/tasks \\
  -H 'Content-Type: application/json' -H 'Authorization: Bearer {key}' \\
  -d '{DEMO_BODY}'
Then:  curl -s {base}/api/v3/contents/generations/tasks/<id> -H 'Authorization: Bearer {key}'
=====================================================================
"""
