"""`seedance-gateway keys rotate|expire|expiring|networks`: a key's life after issue."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from app.admin.schemas import KeyCreated, KeyPublic, KeyUpdate
from app.config import Settings
from app.keys import lifecycle, service


def add_commands(key_actions: Any, with_session: Any) -> None:
    """Register the lifecycle actions under `keys`."""
    rotate = key_actions.add_parser("rotate", help="a new secret, same key (printed once)")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace", type=int, default=0, help="seconds the former secret works")
    rotate.set_defaults(handler=lambda a, s: _rotate(a, s, with_session))
    expire = key_actions.add_parser("expire", help="set or clear a key's expiry")
    expire.add_argument("key_id")
    when = expire.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", help="ISO 8601 with a zone, e.g. 2027-01-01T00:00:00Z")
    when.add_argument("--never", action="store_true")
    expire.set_defaults(handler=lambda a, s: _change(a, s, with_session, "expires_at"))
    networks = key_actions.add_parser("networks", help="where a key may be used from")
    networks.add_argument("key_id")
    networks.add_argument("cidrs", help="CIDRs or addresses, comma-separated; 'any' for anywhere")
    networks.set_defaults(handler=lambda a, s: _change(a, s, with_session, "allowed_networks"))
    expiring = key_actions.add_parser("expiring", help="keys that expire soon")
    expiring.add_argument("--days", type=int, default=7)
    expiring.set_defaults(handler=lambda a, s: _expiring(a, s, with_session))


def _rotate(args: argparse.Namespace, settings: Settings, with_session: Any) -> None:
    grace = timedelta(seconds=max(0, args.grace))
    key, plaintext = with_session(
        settings, lambda s: lifecycle.rotate_key(s, key_id=args.key_id, grace=grace)
    )
    _print(KeyCreated.shown_once(key, plaintext).model_dump(mode="json"))
    print("Store this key now: it is not shown again.", file=sys.stderr)


def _change(args: argparse.Namespace, settings: Settings, with_session: Any, field: str) -> None:
    if field == "expires_at":
        value: Any = None if args.never else args.at
    else:
        value = None if args.cidrs == "any" else [c for c in args.cidrs.split(",") if c]
    try:
        changes = KeyUpdate.model_validate({field: value}).model_dump(include={field})
    except ValidationError as exc:
        raise SystemExit(f"error: {field}: {exc.errors()[0]['msg']}") from None
    if field == "expires_at" and value is not None and changes[field] <= datetime.now(UTC):
        raise SystemExit("error: expires_at: must be in the future")
    key = with_session(
        settings, lambda s: service.update_key(s, key_id=args.key_id, changes=changes)
    )
    _print(KeyPublic.model_validate(key).model_dump(mode="json"))


def _expiring(args: argparse.Namespace, settings: Settings, with_session: Any) -> None:
    within = timedelta(days=args.days)
    for key in with_session(settings, lambda s: lifecycle.expiring_keys(s, within=within)):
        ends = key.expires_at or key.previous_valid_until
        print(f"{key.id}\t{key.prefix}…\t{key.name}\tuser {key.user_id}\tends {ends}")


def _print(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2, default=str))
