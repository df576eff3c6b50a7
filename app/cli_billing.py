"""`seedance-gateway` commands for money: prices, plans, quotes, budgets, usage."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from app.config import Settings
from app.errors import GatewayError
from app.keys import service as keys
from app.tasks.validation import validate_create
from app.ttl_cache import TtlCache
from app.usage import budgets, prices, reports
from app.usage.models import MICROS, PRICE_DIMENSIONS
from app.usage.quote import quote


def add_commands(commands: Any, with_session: Any) -> None:
    """Register the worker, prices, budgets and usage commands on the CLI's subparsers."""
    price_parser = commands.add_parser("prices", help="list or add prices")
    price_actions = price_parser.add_subparsers(required=True, metavar="ACTION")
    listing = price_actions.add_parser("list", help="every price, history included")
    listing.add_argument("--model", default=None)
    listing.set_defaults(handler=lambda a, s: _prices_list(a, s, with_session))
    add = price_actions.add_parser("set", help="add a price from now (or --from) on")
    add.add_argument("model")
    add.add_argument("per_million", type=Decimal, help="price per million tokens, e.g. 2.5")
    add.add_argument("--tier", default="default", choices=["default", "flex"])
    add.add_argument("--currency", default="USD")
    add.add_argument("--from", dest="effective_from", type=_utc, default=None)
    add.set_defaults(handler=lambda a, s: _prices_set(a, s, with_session))

    budget_parser = commands.add_parser("budgets", help="set a user's or a key's budget")
    budget_actions = budget_parser.add_subparsers(required=True, metavar="ACTION")
    set_budget = budget_actions.add_parser("set")
    scope = set_budget.add_mutually_exclusive_group(required=True)
    scope.add_argument("--user")
    scope.add_argument("--key")
    set_budget.add_argument("--period", default="monthly", choices=["daily", "monthly", "total"])
    set_budget.add_argument("--limit", type=Decimal, default=None, help="in currency units")
    set_budget.add_argument("--limit-tokens", type=int, default=None)
    set_budget.add_argument(
        "--limit-charge", type=Decimal, default=None, help="on what the user is charged"
    )
    set_budget.add_argument(
        "--alert-at", default=None, help="percentages that raise an alert, e.g. 80,100"
    )
    set_budget.set_defaults(handler=lambda a, s: _budgets_set(a, s, with_session))
    list_budgets = budget_actions.add_parser("list", help="every budget, or one user's")
    list_budgets.add_argument("--user", default=None)
    list_budgets.set_defaults(handler=lambda a, s: _budgets_list(a, s, with_session))
    delete_budget = budget_actions.add_parser("delete", help="remove a user's or a key's budget")
    delete_scope = delete_budget.add_mutually_exclusive_group(required=True)
    delete_scope.add_argument("--user")
    delete_scope.add_argument("--key")
    delete_budget.set_defaults(handler=lambda a, s: _budgets_delete(a, s, with_session))

    plan_parser = commands.add_parser("plans", help="price plans: what users are charged")
    plan_actions = plan_parser.add_subparsers(required=True, metavar="ACTION")
    create_plan = plan_actions.add_parser("create", help="a plan charging cost × multiplier")
    create_plan.add_argument("name")
    create_plan.add_argument("--multiplier", type=Decimal, default=Decimal(1))
    create_plan.set_defaults(handler=lambda a, s: _plans_create(a, s, with_session))
    assign = plan_actions.add_parser("assign", help="charge a user by a plan (or `none`)")
    assign.add_argument("user_id")
    assign.add_argument("plan_id", help="a plan id, or none for at cost")
    assign.set_defaults(handler=lambda a, s: _plans_assign(a, s, with_session))

    quote_parser = commands.add_parser(
        "quote", help="what a create body would reserve and cost (nothing is sent)"
    )
    quote_parser.add_argument("file", help="a create body, as JSON (- for standard input)")
    quote_parser.add_argument("--user", default=None, help="quote at this user's plan")
    quote_parser.set_defaults(handler=lambda a, s: _quote(a, s, with_session))

    usage = commands.add_parser("usage", help="usage and cost reports")
    usage_actions = usage.add_subparsers(required=True, metavar="ACTION")
    report = usage_actions.add_parser("report", help="tasks, tokens and cost per group")
    report.add_argument(
        "--by",
        default="user",
        choices=["user", "key", "model", "day", "task", "price", "account"],
    )
    report.add_argument("--since", type=_utc, default=None, help="ISO date or time (UTC)")
    report.add_argument("--until", type=_utc, default=None)
    report.add_argument("--csv", action="store_true")
    report.set_defaults(handler=lambda a, s: _usage_report(a, s, with_session))


def _plans_create(args: argparse.Namespace, settings: Settings, with_session: Any) -> None:
    ppm = int(args.multiplier * MICROS)
    plan = with_session(
        settings, lambda s: prices.create_plan(s, name=args.name, multiplier_ppm=ppm)
    )
    print(f"plan {plan.id}: {plan.name}, cost × {args.multiplier}")


def _plans_assign(args: argparse.Namespace, settings: Settings, with_session: Any) -> None:
    plan_id = None if args.plan_id == "none" else int(args.plan_id)
    with_session(settings, lambda s: prices.assign_plan(s, user_id=args.user_id, plan_id=plan_id))
    print(f"user {args.user_id}: plan {plan_id if plan_id is not None else 'none (at cost)'}")


def _quote(args: argparse.Namespace, settings: Settings, with_session: Any) -> None:
    raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    request = validate_create(raw, allowed_models=None, aliases=settings.model_aliases)

    async def work(session: Any) -> dict[str, Any]:
        user = await keys.get_user(session, user_id=args.user) if args.user else None
        return await quote(
            session,
            request=request,
            user_id=user.id if user else "",
            key_id="",
            plan_id=user.plan_id if user else None,
            cache=TtlCache(0),
        )

    print(json.dumps(with_session(settings, work), indent=2))


def _utc(text: str) -> datetime:
    try:
        moment = reports.parse_instant(text, param="date")
    except GatewayError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    assert moment is not None
    return moment


def _prices_list(args: argparse.Namespace, settings: Settings, with_session: Any) -> None:
    rows = with_session(settings, lambda s: prices.list_prices(s, model=args.model))
    for price in rows:
        per_million = Decimal(price.micros_per_million_tokens) / MICROS
        dims = " ".join(f"{name}={getattr(price, name)}" for name in PRICE_DIMENSIONS)
        print(
            f"{price.model}\t{price.service_tier}\t{dims}\t{per_million} {price.currency}/M tokens"
            f"{' (approximate)' if price.approximate else ''}"
            f"\tfrom {price.effective_from:%Y-%m-%d %H:%M}"
        )


def _prices_set(args: argparse.Namespace, settings: Settings, with_session: Any) -> None:
    price = with_session(
        settings,
        lambda s: prices.add_price(
            s,
            model=args.model,
            service_tier=args.tier,
            currency=args.currency,
            micros_per_million_tokens=int(args.per_million * MICROS),
            effective_from=args.effective_from,
        ),
    )
    print(
        f"price {price.id}: {args.model} {args.tier} {args.per_million} {price.currency}/M "
        f"from {price.effective_from:%Y-%m-%d %H:%M:%S} UTC"
    )


def _budgets_set(args: argparse.Namespace, settings: Settings, with_session: Any) -> None:
    limit = None if args.limit is None else int(args.limit * MICROS)
    budget = with_session(
        settings,
        lambda s: budgets.set_budget(
            s,
            user_id=args.user or "",
            key_id=args.key,
            period=args.period,
            limit_micros=limit,
            limit_tokens=args.limit_tokens,
            alert_percents=[int(p) for p in args.alert_at.split(",")] if args.alert_at else None,
            limit_charge_micros=None
            if args.limit_charge is None
            else int(args.limit_charge * MICROS),
        ),
    )
    print(
        f"budget {budget.scope}: {budget.period}, limit {args.limit or '-'}, "
        f"tokens {budget.limit_tokens or '-'}"
    )


def _budgets_list(args: argparse.Namespace, settings: Settings, with_session: Any) -> None:
    rows = with_session(settings, lambda s: budgets.list_budgets(s, user_id=args.user))
    for budget in rows:
        limit = "-" if budget.limit_micros is None else Decimal(budget.limit_micros) / MICROS
        print(
            f"{budget.scope}\t{budget.period}\tlimit {limit}\t"
            f"tokens {budget.limit_tokens if budget.limit_tokens is not None else '-'}"
        )


def _budgets_delete(args: argparse.Namespace, settings: Settings, with_session: Any) -> None:
    scope = f"user:{args.user}" if args.user else f"key:{args.key}"
    with_session(settings, lambda s: budgets.delete_budget(s, scope=scope))
    print(f"deleted budget {scope}")


def _usage_report(args: argparse.Namespace, settings: Settings, with_session: Any) -> None:
    rows = with_session(
        settings,
        lambda s: reports.usage_report(s, group_by=args.by, start=args.since, end=args.until),
    )
    if args.csv:
        print(reports.to_csv(rows, group_by=args.by), end="")
        return
    header = (
        args.by,
        "name",
        "currency",
        "tasks",
        "settled",
        "released",
        "open",
        "tokens",
        "cost",
        "reserved",
        "unpriced",
    )
    table = [header] + [
        (
            r.group,
            r.name or "-",
            r.currency or "-",
            r.tasks,
            r.settled_tasks,
            r.released_tasks,
            r.open_tasks,
            r.tokens,
            r.cost,
            str(Decimal(r.reserved_micros) / MICROS),
            r.unpriced_tasks,
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
