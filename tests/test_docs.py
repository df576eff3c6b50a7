"""`/docs` works offline: the page and every asset it loads come from the gateway."""

from __future__ import annotations

import re

from tests.conftest import Gateway


async def test_the_docs_page_loads_nothing_from_elsewhere(gateway: Gateway) -> None:
    page = await gateway.client.get("/docs")
    assert page.status_code == 200
    loaded = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", page.text)
    urls = [first or second for first, second in loaded]
    assert urls and not [url for url in urls if "://" in url or url.startswith("//")]
    for url in urls:
        asset = await gateway.client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    assert "persistAuthorization" in page.text
    schemes = (await gateway.client.get("/openapi.json")).json()["components"]["securitySchemes"]
    assert {scheme["scheme"] for scheme in schemes.values()} == {"bearer"}


async def test_the_root_leads_to_the_console(gateway: Gateway) -> None:
    answer = await gateway.client.get("/")
    assert answer.status_code == 307
    assert answer.headers["location"] == "/console"
