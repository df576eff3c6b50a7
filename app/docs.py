"""`/docs`: Swagger UI served entirely by the gateway (its assets come with the package, in
`app/static/swagger-ui`), so it works on a network without internet; its Authorize button takes
a gateway key or the admin token (the schemes `app.openapi` declares). `/` leads to the
console, whose header links here."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

ASSETS = "/docs/assets"
SWAGGER_UI = Path(__file__).parent / "static" / "swagger-ui"
router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def docs() -> HTMLResponse:
    """Swagger UI for `/openapi.json`, from the gateway's own assets."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Seedance Gateway",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        swagger_ui_parameters={"persistAuthorization": True},
    )


@router.get("/")
async def home() -> RedirectResponse:
    """Where a person landing on the gateway can start: the console."""
    return RedirectResponse("/console", status_code=307)


def install_docs(app: FastAPI) -> None:
    """The docs page, its assets and the redirect from `/`."""
    app.include_router(router)
    app.mount(ASSETS, StaticFiles(directory=SWAGGER_UI), name="docs-assets")
