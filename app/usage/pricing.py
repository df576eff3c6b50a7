"""What a task costs and what its user is charged: the price matrix, plans and the estimate.

A price row is keyed by model, service tier and four dimensions (resolution, video input,
audio, draft), each a value or `*`; of the rows in force at create, the most specific matching
one wins (then the newest). Cost rows have no plan: they are what the upstream charges the
account. A plan charges its users at its own matching row if it has one, else at cost times its
multiplier. Both are fixed at reserve: later price or plan changes re-price nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.tasks.catalog import ModelSpec
from app.tasks.models import Task
from app.ttl_cache import TtlCache
from app.usage.models import ANY, MICROS, PRICE_DIMENSIONS, Price, PricePlan


@dataclass(frozen=True, slots=True)
class PriceDims:
    """The values of a task that choose its price row."""

    resolution: str
    video_input: str  # yes | no
    audio: str  # on | off
    draft: str  # yes | no

    @classmethod
    def of(cls, task: Task, spec: ModelSpec) -> PriceDims:
        """A task's dimensions, as recorded at create."""
        return cls(
            resolution=task.resolution or spec.default_resolution,
            video_input="yes" if task.input_video_seconds else "no",
            audio="on" if task.generate_audio else "off",
            draft="yes" if task.draft else "no",
        )

    def as_dict(self) -> dict[str, str]:
        """By dimension name."""
        return {name: getattr(self, name) for name in PRICE_DIMENSIONS}


@dataclass(frozen=True, slots=True)
class PriceRow:
    """A price as creates use it: kept for a second in the process (`Resources.prices`)."""

    id: int | None
    currency: str
    micros_per_million_tokens: int
    effective_from: datetime
    dims: tuple[str, ...] = (ANY, ANY, ANY, ANY)  # in PRICE_DIMENSIONS order
    approximate: bool = False

    def matches(self, dims: PriceDims) -> bool:
        """Whether every dimension is `*` or the task's value."""
        wanted = (dims.resolution, dims.video_input, dims.audio, dims.draft)
        return all(mine in (ANY, theirs) for mine, theirs in zip(self.dims, wanted, strict=True))

    @property
    def specificity(self) -> int:
        """How many dimensions it names."""
        return sum(value != ANY for value in self.dims)


def cost_micros(tokens: int, price: Price | PriceRow | None) -> int:
    """Cost of `tokens` at `price`, in micro-units, rounded half up; 0 when unpriced."""
    if price is None:
        return 0
    return (tokens * price.micros_per_million_tokens + MICROS // 2) // MICROS


def scaled(micros: int, ppm: int) -> int:
    """`micros` × `ppm` / 1,000,000, rounded half up."""
    return (micros * ppm + MICROS // 2) // MICROS


@dataclass(frozen=True, slots=True)
class Estimate:
    """The tokens a create reserves, and how they were counted."""

    tokens: int
    width: int
    height: int
    output_frames: int
    input_video_seconds: int
    input_frames: int
    draft_percent: int

    @classmethod
    def of(cls, task: Task, spec: ModelSpec) -> Estimate:
        """W×H×(24·d+1)/1024 from the effective resolution, ratio and length, with the input
        video's frames (at least the output's where the model bills a minimum) and a draft's
        share: never less than the upstream bills for what the request declares."""
        resolution = task.resolution or spec.default_resolution
        ratio = task.ratio or "adaptive"
        frames = spec.frame_count(duration=task.duration, frames=task.frames)
        seconds = task.input_video_seconds or 0
        width, height = spec.size(resolution, ratio)
        return cls(
            tokens=spec.tokens(
                resolution=resolution,
                ratio=ratio,
                frame_count=frames,
                input_seconds=seconds,
                draft=task.draft,
            ),
            width=width,
            height=height,
            output_frames=frames,
            input_video_seconds=seconds,
            input_frames=spec.input_frames(seconds, frame_count=frames),
            draft_percent=spec.draft_percent if task.draft else 100,
        )


async def price_in_force(
    session: AsyncSession,
    *,
    models: list[str],
    service_tier: str,
    dims: PriceDims,
    at: datetime,
    cache: TtlCache[Any],
    plan_id: int | None = None,
) -> PriceRow | None:
    """The most specific matching price (then the newest) effective at `at`, for the first of
    `models` that has one: a cost price, or with `plan_id` that plan's own.

    Every row of a model and tier is read at most once a second per process (`cache`): a new
    price reaches every replica within that second, and a scheduled one takes effect at its
    exact moment.
    """
    for model in dict.fromkeys(models):
        in_force = [
            price
            for price in await _price_rows(session, plan_id, model, service_tier, cache)
            if price.effective_from <= at and price.matches(dims)
        ]
        if in_force:
            return max(in_force, key=lambda price: (price.specificity, price.effective_from))
    return None


async def _price_rows(
    session: AsyncSession,
    plan_id: int | None,
    model: str,
    service_tier: str,
    cache: TtlCache[Any],
) -> tuple[PriceRow, ...]:
    key = f"{plan_id or 0}\n{model}\n{service_tier}"
    rows: tuple[PriceRow, ...] | None = cache.get(key)
    if rows is None:
        found = await session.exec(
            select(Price).where(
                Price.plan_key == (plan_id or 0),
                Price.model == model,
                Price.service_tier == service_tier,
            )
        )
        rows = tuple(
            PriceRow(
                p.id,
                p.currency,
                p.micros_per_million_tokens,
                p.effective_from,
                tuple(getattr(p, name) for name in PRICE_DIMENSIONS),
                p.approximate,
            )
            for p in found.all()
        )
        cache.put(key, rows)
    return rows


@dataclass(frozen=True, slots=True)
class Charge:
    """What a user is charged for a task, and the terms it was worked out by."""

    micros: int
    currency: str | None
    plan_id: int | None
    price: PriceRow | None  # the plan's own price, when it has a matching one
    ppm: int | None  # else: the multiplier on cost


async def plan_multiplier(session: AsyncSession, plan_id: int, cache: TtlCache[Any]) -> int:
    """A plan's multiplier on cost (parts per million), read at most once a second."""
    key = f"plan\n{plan_id}"
    ppm: int | None = cache.get(key)
    if ppm is None:
        found = (
            await session.exec(select(PricePlan.multiplier_ppm).where(col(PricePlan.id) == plan_id))
        ).first()
        ppm = MICROS if found is None else int(found)
        cache.put(key, ppm)
    return ppm


@dataclass(frozen=True, slots=True)
class Terms:
    """The prices a new task is reserved (and later settled) at."""

    dims: PriceDims
    price: PriceRow | None  # its cost price; None: unpriced
    plan_id: int | None
    charge_price: PriceRow | None  # the plan's own price, if one matches
    charge_ppm: int | None  # else the multiplier on cost


async def terms_for(
    session: AsyncSession,
    *,
    task: Task,
    spec: ModelSpec,
    plan_id: int | None,
    cache: TtlCache[Any],
) -> Terms:
    """The cost price in force for the task's dimensions, and its user's plan terms: the
    plan's own matching price, else its multiplier (at cost without a plan)."""
    dims = PriceDims.of(task, spec)
    find = partial(
        price_in_force,
        session,
        models=[task.model, spec.name],
        service_tier=task.service_tier,
        dims=dims,
        at=task.created_at,
        cache=cache,
    )
    price = await find()
    if plan_id is None:
        return Terms(dims, price, None, None, MICROS)
    own = await find(plan_id=plan_id)
    if own is not None:
        return Terms(dims, price, plan_id, own, None)
    return Terms(dims, price, plan_id, None, await plan_multiplier(session, plan_id, cache))


def priced(
    tokens: int,
    *,
    price: Price | PriceRow | None,
    plan_id: int | None,
    charge_price: Price | PriceRow | None,
    ppm: int | None,
) -> tuple[int, Charge]:
    """The cost of `tokens` at `price`, and their charge by fixed terms: at the plan's own
    price if it has one, else cost × `ppm` / 1,000,000."""
    cost = cost_micros(tokens, price)
    if charge_price is not None:
        own = charge_price if isinstance(charge_price, PriceRow) else None
        charge = Charge(
            cost_micros(tokens, charge_price), charge_price.currency, plan_id, own, None
        )
        return cost, charge
    multiplier = MICROS if ppm is None else ppm
    currency = price.currency if price else None
    return cost, Charge(scaled(cost, multiplier), currency, plan_id, None, multiplier)
