"""The `seedance-gateway` command: migrate, serve, simulate, users and keys."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from app.admin.audit import audited
from app.admin.schemas import LimitOverrides
from app.cli_accounts import add_commands as add_account_commands
from app.cli_billing import add_commands as add_billing_commands
from app.cli_keys import add_commands as add_key_lifecycle_commands
from app.config import Settings
from app.db import create_engine, create_sessionmaker
from app.errors import GatewayError
from app.keys import service as keys
from app.logs import configure_logging

Handler = Callable[[argparse.Namespace, Settings], None]


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    settings = Settings()
    configure_logging(
        settings.log_level, secrets=settings.secrets(), log_format=settings.log_format
    )
    try:
        args.handler(args, settings)
    except GatewayError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seedance-gateway", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    migrate = commands.add_parser(
        "migrate", help="apply database migrations (Alembic upgrade head)"
    )
    migrate.set_defaults(handler=_running("migrate"))

    serve = commands.add_parser("serve", help="run the gateway (demo mode without an upstream key)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(handler=_running("serve"))

    simulate = commands.add_parser("simulate", help="run the fake Seedance upstream on its own")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8001)
    simulate.add_argument(
        "--api-key",
        default=None,
        help="master key it accepts (default: GATEWAY_UPSTREAM_API_KEY or the demo key)",
    )
    simulate.add_argument("--queued-seconds", type=float, default=1.0)
    simulate.add_argument("--running-seconds", type=float, default=2.0)
    simulate.set_defaults(handler=_running("simulate"))

    users = commands.add_parser("users", help="manage users").add_subparsers(
        required=True, metavar="ACTION"
    )
    create_user = users.add_parser("create", help="create a user")
    create_user.add_argument("name")
    create_user.add_argument("--allowed-models", default=None, help="comma-separated model ids")
    create_user.set_defaults(handler=_users_create)
    users.add_parser("list", help="list users").set_defaults(handler=_users_list)
    user_limits = users.add_parser("limits", help="override a user's limits")
    user_limits.add_argument("user_id")
    _limit_options(user_limits)
    user_limits.set_defaults(handler=_users_limits)

    keys_parser = commands.add_parser("keys", help="manage gateway keys")
    key_actions = keys_parser.add_subparsers(required=True, metavar="ACTION")
    create_key = key_actions.add_parser("create", help="issue a key (printed once)")
    create_key.add_argument("--user", required=True, help="user id")
    create_key.add_argument("--name", default="")
    create_key.set_defaults(handler=_keys_create)
    list_keys = key_actions.add_parser("list", help="list a user's keys")
    list_keys.add_argument("--user", required=True, help="user id")
    list_keys.set_defaults(handler=_keys_list)
    revoke = key_actions.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=_keys_revoke)
    key_limits = key_actions.add_parser("limits", help="override a key's limits")
    key_limits.add_argument("key_id")
    _limit_options(key_limits)
    key_limits.set_defaults(handler=_keys_limits)
    add_key_lifecycle_commands(key_actions, _with_session)
    worker = commands.add_parser(
        "worker", help="run only the poller and archiver (HTTP only for /metrics and /healthz)"
    )
    worker.add_argument(
        "--metrics-port", type=int, default=None, help="serve /metrics and /healthz on this port"
    )
    worker.add_argument("--host", default="127.0.0.1", help="address of the metrics port")
    worker.set_defaults(handler=_running("worker"))
    add_billing_commands(commands, _with_session)
    add_account_commands(commands, _with_session)
    return parser


def _running(name: str) -> Handler:
    """Command `name` of `app.cli_servers`, imported only when it runs: the web stack is slow."""

    def handler(args: argparse.Namespace, settings: Settings) -> None:
        from app import cli_servers

        getattr(cli_servers, name)(args, settings)

    return handler


def _limit_options(parser: argparse.ArgumentParser) -> None:
    hint = " ('default' restores the gateway default)"
    parser.add_argument("--create-rate", help="e.g. 30/minute" + hint)
    parser.add_argument("--read-rate", help="e.g. 600/minute" + hint)
    parser.add_argument(
        "--max-in-flight", type=_count_or_default, help="tasks in flight at once" + hint
    )


def _count_or_default(text: str) -> int | str:
    if text == "default":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _limit_changes(args: argparse.Namespace) -> dict[str, object]:
    """The overrides given on the command line, validated as the admin API validates them."""
    given = {
        "create_rate_limit": args.create_rate,
        "read_rate_limit": args.read_rate,
        "max_tasks_in_flight": args.max_in_flight,
    }
    changes = {
        name: None if value == "default" else value
        for name, value in given.items()
        if value is not None
    }
    try:
        return LimitOverrides.model_validate(changes).model_dump(include=set(changes))
    except ValidationError as exc:
        raise SystemExit(f"error: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None


def _users_limits(args: argparse.Namespace, settings: Settings) -> None:
    changes = _limit_changes(args)
    user = _with_session(
        settings, lambda s: keys.update_user(s, user_id=args.user_id, changes=changes)
    )
    _print({"id": user.id, **{name: getattr(user, name) for name in LimitOverrides.model_fields}})


def _keys_limits(args: argparse.Namespace, settings: Settings) -> None:
    changes = _limit_changes(args)
    key = _with_session(settings, lambda s: keys.update_key(s, key_id=args.key_id, changes=changes))
    _print({"id": key.id, **{name: getattr(key, name) for name in LimitOverrides.model_fields}})


def _with_session(settings: Settings, work: Any) -> Any:
    async def run() -> Any:
        engine = create_engine(settings.database_url)
        try:
            async with create_sessionmaker(engine)() as session:
                # Changes made from here are the admin's too: audited, as `cli:<os user>`.
                return await work(
                    audited(session, actor=f"cli:{getpass.getuser()}", address="local")
                )
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _users_create(args: argparse.Namespace, settings: Settings) -> None:
    models = [m.strip() for m in args.allowed_models.split(",")] if args.allowed_models else None
    user = _with_session(
        settings, lambda s: keys.create_user(s, name=args.name, allowed_models=models)
    )
    _print({"id": user.id, "name": user.name, "allowed_models": user.allowed_models})


def _users_list(_args: argparse.Namespace, settings: Settings) -> None:
    for user in _with_session(settings, keys.list_users):
        print(f"{user.id}\t{user.name}\t{'disabled' if user.disabled else 'active'}")


def _keys_create(args: argparse.Namespace, settings: Settings) -> None:
    key, plaintext = _with_session(
        settings, lambda s: keys.create_key(s, user_id=args.user, name=args.name)
    )
    _print({"id": key.id, "user_id": key.user_id, "prefix": key.prefix, "key": plaintext})
    print("Store this key now: it is not shown again.", file=sys.stderr)


def _keys_list(args: argparse.Namespace, settings: Settings) -> None:
    for key in _with_session(settings, lambda s: keys.list_keys(s, user_id=args.user)):
        state = "revoked" if key.revoked_at else "active"
        print(f"{key.id}\t{key.prefix}…\t{key.name}\t{state}\tlast used {key.last_used_at or '-'}")


def _keys_revoke(args: argparse.Namespace, settings: Settings) -> None:
    key = _with_session(settings, lambda s: keys.revoke_key(s, key_id=args.key_id))
    print(f"revoked {key.id} at {key.revoked_at}")


def _print(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2, default=str))
