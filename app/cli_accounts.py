"""`seedance-gateway accounts`: the pool of upstream accounts, as the admin API manages it.

A master key is read from standard input (never from the command line, where `ps` would show
it) and stored encrypted under `GATEWAY_ACCOUNT_KEYS_SECRET`; no command prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import ValidationError

from app.admin.accounts_schemas import AccountCreate, AccountKey, AccountUpdate
from app.config import Settings
from app.upstream import accounts
from app.upstream.accounts import KeyBox

LIMITS = (
    "weight",
    "max_queued",
    "creates_per_minute",
    "retrieves_per_second",
    "lists_per_second",
    "running_per_model",
)


def add_commands(commands: Any, with_session: Any) -> None:
    """Register `accounts list|add|set|drain|disable|activate|rotate-key`."""
    parser = commands.add_parser("accounts", help="upstream accounts: the pool creates go to")
    actions = parser.add_subparsers(required=True, metavar="ACTION")
    actions.add_parser("list", help="every account, its state, health and limits").set_defaults(
        handler=lambda a, s: _list(a, s, with_session)
    )
    add = actions.add_parser("add", help="add an account; its master key is read from stdin")
    add.add_argument("id")
    add.add_argument("base_url", help="e.g. https://ark.ap-southeast.bytepluses.com/api/v3")
    _limit_options(add)
    add.set_defaults(handler=lambda a, s: _add(a, s, with_session))
    change = actions.add_parser("set", help="change an account's weight, limits or models")
    change.add_argument("id")
    _limit_options(change)
    change.set_defaults(handler=lambda a, s: _update(a, s, with_session, state=None))
    for state, text in (
        ("drain", "no new creates; its tasks finish on it"),
        ("disable", "no new creates (its tasks are still refreshed on it)"),
        ("activate", "take creates again"),
    ):
        command = actions.add_parser(state, help=text)
        command.add_argument("id")
        named = {"drain": "draining", "disable": "disabled", "activate": "active"}[state]
        command.set_defaults(handler=lambda a, s, n=named: _update(a, s, with_session, state=n))
    rotate = actions.add_parser("rotate-key", help="replace the master key (read from stdin)")
    rotate.add_argument("id")
    rotate.set_defaults(handler=lambda a, s: _rotate(a, s, with_session))


def _limit_options(parser: argparse.ArgumentParser) -> None:
    for name in LIMITS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=None)
    parser.add_argument(
        "--models",
        default=None,
        help="served models as GATEWAY_ID[=ACCOUNT_NAME],…; 'all' for every model",
    )


def _given(args: argparse.Namespace) -> dict[str, Any]:
    given: dict[str, Any] = {name: getattr(args, name) for name in LIMITS}
    given = {name: value for name, value in given.items() if value is not None}
    if args.models is not None:
        given["models"] = None if args.models == "all" else _model_map(args.models)
    return given


def _model_map(text: str) -> dict[str, str]:
    pairs = [item.strip().partition("=") for item in text.split(",") if item.strip()]
    return {gateway: (own or gateway) for gateway, _, own in pairs}


def _read_key() -> str:
    if sys.stdin.isatty():
        print("master key (then Enter): ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip()


def _valid(shape: Any, data: dict[str, Any]) -> Any:
    try:
        return shape.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "input"
        raise SystemExit(f"error: {where}: {error['msg']}") from None


def _list(_args: argparse.Namespace, settings: Settings, with_session: Any) -> None:
    for account in with_session(settings, accounts.list_accounts):
        health = "healthy" if account.healthy else f"OUT ({account.health_detail})"
        limits = " ".join(f"{name}={getattr(account, name)}" for name in LIMITS)
        served = "all" if account.models is None else ",".join(sorted(account.models))
        print(f"{account.id}\t{account.state}\t{health}\t{account.base_url}\t{limits}\t{served}")


def _add(args: argparse.Namespace, settings: Settings, with_session: Any) -> None:
    body = _valid(
        AccountCreate,
        {"id": args.id, "base_url": args.base_url, "api_key": _read_key(), **_given(args)},
    )
    box = KeyBox(settings.account_keys_secret_value())
    fields = body.model_dump(exclude={"id", "api_key"}, exclude_none=True)
    key = body.api_key.get_secret_value()
    account = with_session(
        settings,
        lambda s: accounts.add_account(s, box=box, account_id=body.id, api_key=key, **fields),
    )
    _print(account.public())


def _update(
    args: argparse.Namespace, settings: Settings, with_session: Any, *, state: str | None
) -> None:
    changes = _given(args) if state is None else {"state": state}
    _valid(AccountUpdate, changes)
    account = with_session(
        settings, lambda s: accounts.update_account(s, account_id=args.id, changes=changes)
    )
    _print(account.public())


def _rotate(args: argparse.Namespace, settings: Settings, with_session: Any) -> None:
    key = _valid(AccountKey, {"api_key": _read_key()}).api_key.get_secret_value()
    box = KeyBox(settings.account_keys_secret_value())
    account = with_session(
        settings, lambda s: accounts.rotate_key(s, box=box, account_id=args.id, api_key=key)
    )
    _print(account.public())


def _print(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2, default=str))
