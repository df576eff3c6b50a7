"""Small helpers shared by the tests."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from sqlalchemy import text

from app.models import metadata

TASKS = "/api/v3/contents/generations/tasks"
MODEL = "seedance-1-0-pro-250528"


def body(text_prompt: str = "a red fox runs through snow", **fields: Any) -> dict[str, Any]:
    """A valid create body with optional extra fields."""
    return {"model": MODEL, "content": [{"type": "text", "text": text_prompt}], **fields}


async def database_rows(app: FastAPI) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to prove a request changed nothing."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    async with app.state.resources.engine.connect() as connection:
        for table in metadata.sorted_tables:
            result = await connection.execute(text(f"SELECT * FROM {table.name} ORDER BY 1"))
            rows[table.name] = [tuple(row) for row in result.all()]
    return rows
