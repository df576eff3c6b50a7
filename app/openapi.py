"""The OpenAPI document the gateway publishes: its two bearer schemes, and every error status an
operation can answer, each in the Ark envelope (so generated clients and fuzzers see the truth).

Built once, from the routes, when `/openapi.json` is first asked for; nothing per request.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.tasks.schemas import TaskCreate

SECURITY_SCHEMES = {
    "GatewayKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A gateway key (`sgw-…`) issued by an admin; never the upstream key.",
    },
    "AdminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The admin token (`GATEWAY_ADMIN_TOKEN`).",
    },
}
ARK_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "param", "type"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "param": {"type": "string"},
                "type": {"type": "string"},
            },
        }
    },
}
ERROR_MEANINGS = {
    400: "A parameter, the body or the path is not valid",
    401: "No valid credential",
    403: "Not allowed to this credential (a browser token, a link that expired, or a user whose "
    "keys its admin manages)",
    404: "No such resource (or one of another user's)",
    408: "The body came too slowly",
    409: "The resource's state, or an Idempotency-Key in use, forbids this now",
    410: "The upstream's link to this output has expired, and there is no archived copy",
    413: "The body is too large",
    416: "The Range is not one byte range within the output",
    431: "The request headers are too large",
    422: "An Idempotency-Key reused with another body",
    429: "A limit or a budget was reached (see Retry-After)",
    502: "The upstream failed or refused",
    503: "The database is unavailable (see Retry-After)",
    504: "The upstream did not answer in time",
}
WITH_BODY = {"post", "put", "patch"}
# What the routes accept beyond "a string": ids are ASCII letters, digits, '-' and '_' (anything
# else is a 400 or a 404), and report bounds are a date or a datetime.
ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"}
INSTANT = {
    "anyOf": [
        {"type": "string", "format": "date"},
        {"type": "string", "format": "date-time"},
        {"type": "string", "maxLength": 0},  # empty: no bound
    ]
}
# Bodies a route reads itself (for speed and Ark-shaped errors), published all the same.
TASKS = "/api/v3/contents/generations/tasks"
READ_BY_HAND = {(TASKS, "post"): TaskCreate, ("/gateway/v1/quote", "post"): TaskCreate}
QUERY_SCHEMAS = {"from": INSTANT, "to": INSTANT}
# One byte range: the only form the output routes serve (anything else is a 416).
RANGE = {"type": "string", "pattern": r"^bytes=([0-9]{1,15}-[0-9]{0,15}|-[0-9]{1,15})$"}
OUTPUTS = "/gateway/v1/outputs/"
# Bodies that name something else, which may not exist: a model (as the upstream answers), a plan.
NAMES_ANOTHER = ("/gateway/v1/quote", "/admin/v1/prices")
OUTPUT_TYPES = ("video/mp4", "image/jpeg", "image/png", "application/octet-stream")
# Any other text in a query: printable ASCII (the request middleware refuses the rest).
ASCII_TEXT = "^[ -~]*$"


def _errors_of(path: str, method: str) -> list[int]:
    if path in ("/healthz", "/readyz"):
        return [431, 503]
    codes = [400, 401, 429, 431, 503]
    if "{" in path or path.startswith("/api/") or path in NAMES_ANOTHER:
        codes.append(404)  # what it names does not exist (a model, a plan)
    if method in WITH_BODY:
        codes += [408, 413]
    if method != "get":
        codes += [409, 422]
    if path.startswith("/api/") or _is_output(path):
        codes += [502, 504]
    if _is_output(path):
        codes += [409, 410, 416]
    if path.startswith((OUTPUTS, "/gateway/v1/keys")) or path in (
        "/gateway/v1/tokens",
        "/gateway/v1/usage",
    ):
        codes.append(403)
    if path.startswith(OUTPUTS):
        codes.remove(401)  # the link is the credential
    return sorted(codes)


def _is_output(path: str) -> bool:
    return path.endswith("/content") or path.startswith(OUTPUTS)


def _declare_outputs(operation: dict[str, Any]) -> None:
    """An output is a video or an image, whole (200), in part (206) or unchanged (304)."""
    media = {kind: {"schema": {"type": "string", "format": "binary"}} for kind in OUTPUT_TYPES}
    responses = operation.setdefault("responses", {})
    responses["200"] = {"description": "The whole output", "content": media}
    responses["206"] = {"description": "One byte range of it (Content-Range)", "content": media}
    responses["304"] = {"description": "Unchanged since the ETag in If-None-Match"}


def _ascii_only(schema: dict[str, Any]) -> None:
    """Give free text in `schema` (and in its alternatives and items) the ASCII pattern."""
    if schema.get("type") == "string" and not {"enum", "pattern", "format"} & schema.keys():
        schema["pattern"] = ASCII_TEXT
    for part in [*schema.get("anyOf", []), *([schema["items"]] if "items" in schema else [])]:
        _ascii_only(part)


def _link_created_tasks(paths: dict[str, Any]) -> None:
    """Declare the create's `id` and that it is the `task_id` of retrieve and delete (OpenAPI
    links), so clients and fuzzers can follow a task they made."""
    created = paths[TASKS]["post"]["responses"]["200"]
    created["content"] = {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["id"],
                "properties": {"id": {"type": "string"}},
            }
        }
    }
    created["links"] = {
        f"{method.capitalize()}CreatedTask": {
            "operationId": paths[TASKS + "/{task_id}"][method]["operationId"],
            "parameters": {"task_id": "$response.body#/id"},
        }
        for method in ("get", "delete")
    }


def _scheme_of(path: str) -> str | None:
    if path.startswith("/admin/"):
        return "AdminToken"
    if path.startswith(OUTPUTS):
        return None  # a signed link: anyone holding it
    if path.startswith(("/api/", "/gateway/")):
        return "GatewayKey"
    return None


def gateway_openapi(app: FastAPI) -> dict[str, Any]:
    """The document, cached on the app as FastAPI's own is."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = schema.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    components.setdefault("schemas", {})["ArkError"] = ARK_ERROR
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, never answered here
        components["schemas"].pop(name, None)
    _link_created_tasks(schema["paths"])
    for (path, method), model in READ_BY_HAND.items():
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components["schemas"].update(body.pop("$defs", {}))
        components["schemas"][model.__name__] = body
        schema["paths"][path][method]["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if scheme := _scheme_of(path):
                operation["security"] = [{scheme: []}]
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and not {"enum", "$ref"} & parameter["schema"].keys():
                    parameter["schema"] = {**ID, "title": parameter["schema"].get("title", "")}
                elif parameter["in"] == "query" and parameter["name"] in QUERY_SCHEMAS:
                    parameter["schema"] = QUERY_SCHEMAS[parameter["name"]]
                elif parameter["in"] == "query":
                    _ascii_only(parameter["schema"])
                elif parameter["in"] == "header" and parameter["name"].lower() == "range":
                    parameter["schema"] = RANGE
            if _is_output(path):
                _declare_outputs(operation)
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for code in _errors_of(path, method):
                responses[str(code)] = {
                    "description": ERROR_MEANINGS[code],
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ArkError"}}
                    },
                }
    app.openapi_schema = schema
    return schema
