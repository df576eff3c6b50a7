"""price matrix and plans: prices by resolution, video input, audio and draft; what users are
charged; the reserved input video; the usage re-read after settlement

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 16:00:00

The seeded prices are public figures not yet confirmed on a live account (reference §10), so
they are marked approximate. History is kept: ledger rows written before charge existed are
charged at cost (multiplier 1).
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DIMENSIONS = ("resolution", "video_input", "audio", "draft")
# model, tier, {dimension: value}, USD per million tokens: where the upstream's price differs
# from the model's base price (reference §10; video input from resellers' published keys).
SPECIFIC_USD = (
    ("seedance-1-5-pro-251215", "default", {"audio": "off"}, "1.2"),
    ("seedance-1-5-pro-251215", "flex", {"audio": "off"}, "0.6"),
    ("dreamina-seedance-2-0-260128", "default", {"resolution": "1080p"}, "7.6"),
    ("dreamina-seedance-2-0-260128", "default", {"video_input": "yes"}, "4.3"),
    (
        "dreamina-seedance-2-0-260128",
        "default",
        {"resolution": "1080p", "video_input": "yes"},
        "4.6",
    ),
    ("dreamina-seedance-2-0-fast-260128", "default", {"video_input": "yes"}, "3.3"),
    ("dreamina-seedance-2-5-260628", "default", {"video_input": "yes"}, "6.4"),
)


def upgrade() -> None:
    op.create_table(
        "price_plans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("multiplier_ppm", sa.BigInteger(), nullable=False),
        sa.Column("created_at", app.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("prices") as batch:
        batch.drop_constraint("uq_prices_effective", type_="unique")
        for name in DIMENSIONS:
            batch.add_column(
                sa.Column(
                    name,
                    sa.String(length=8 if name == "resolution" else 4),
                    nullable=False,
                    server_default="*",
                )
            )
        batch.add_column(sa.Column("plan_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("plan_key", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("approximate", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_foreign_key("fk_prices_plan", "price_plans", ["plan_id"], ["id"])
        batch.create_unique_constraint(
            "uq_prices_effective",
            ["plan_key", "model", "service_tier", *DIMENSIONS, "effective_from"],
        )
    op.execute("UPDATE prices SET approximate = TRUE")
    _seed_specific_prices()

    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("plan_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_users_plan", "price_plans", ["plan_id"], ["id"])
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("input_video_seconds", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("generate_audio", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("draft", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("price_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("reread_tokens", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("reread_at", app.db.UTCDateTime(), nullable=True))
    op.create_index("ix_tasks_reread_due", "tasks", ["status", "reread_at", "updated_at"])
    with op.batch_alter_table("ledger") as batch:
        batch.add_column(
            sa.Column("charge_micros", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("charge_currency", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("charge_price_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("charge_ppm", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("plan_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_ledger_charge_price", "prices", ["charge_price_id"], ["id"])
        batch.create_foreign_key("fk_ledger_plan", "price_plans", ["plan_id"], ["id"])
    op.execute(
        "UPDATE ledger SET charge_micros = cost_micros, charge_currency = currency, "
        "charge_ppm = 1000000"
    )
    with op.batch_alter_table("budgets") as batch:
        batch.add_column(sa.Column("limit_charge_micros", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("daily_spend") as batch:
        batch.add_column(
            sa.Column("charge_micros", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute("UPDATE daily_spend SET charge_micros = cost_micros")


def _seed_specific_prices() -> None:
    since = datetime(2025, 1, 1, tzinfo=UTC)
    prices = sa.table(
        "prices",
        *(sa.column(name) for name in ("model", "service_tier", *DIMENSIONS, "currency")),
        sa.column("micros_per_million_tokens", sa.BigInteger()),
        sa.column("approximate", sa.Boolean()),
        sa.column("effective_from", app.db.UTCDateTime()),
        sa.column("created_at", app.db.UTCDateTime()),
    )
    rows = [
        {
            "model": model,
            "service_tier": tier,
            **{name: dims.get(name, "*") for name in DIMENSIONS},
            "currency": "USD",
            "micros_per_million_tokens": int(float(usd) * 1_000_000 + 0.5),
            "approximate": True,
            "effective_from": since,
            "created_at": since,
        }
        for model, tier, dims, usd in SPECIFIC_USD
    ]
    op.bulk_insert(prices, rows)


def downgrade() -> None:
    with op.batch_alter_table("daily_spend") as batch:
        batch.drop_column("charge_micros")
    with op.batch_alter_table("budgets") as batch:
        batch.drop_column("limit_charge_micros")
    with op.batch_alter_table("ledger") as batch:
        batch.drop_constraint("fk_ledger_plan", type_="foreignkey")
        batch.drop_constraint("fk_ledger_charge_price", type_="foreignkey")
        for name in (
            "plan_id",
            "charge_ppm",
            "charge_price_id",
            "charge_currency",
            "charge_micros",
        ):
            batch.drop_column(name)
    op.drop_index("ix_tasks_reread_due", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        for name in (
            "reread_at",
            "reread_tokens",
            "price_id",
            "draft",
            "generate_audio",
            "input_video_seconds",
        ):
            batch.drop_column(name)
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("fk_users_plan", type_="foreignkey")
        batch.drop_column("plan_id")
    op.execute(
        "DELETE FROM prices WHERE plan_key <> 0 OR resolution <> '*' OR video_input <> '*' "
        "OR audio <> '*' OR draft <> '*'"
    )
    with op.batch_alter_table("prices") as batch:
        batch.drop_constraint("uq_prices_effective", type_="unique")
        batch.drop_constraint("fk_prices_plan", type_="foreignkey")
        for name in ("approximate", "plan_key", "plan_id", *DIMENSIONS):
            batch.drop_column(name)
        batch.create_unique_constraint(
            "uq_prices_effective", ["model", "service_tier", "effective_from"]
        )
    op.drop_table("price_plans")
