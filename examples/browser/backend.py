"""The example's backend: serves the page and mints a browser token for it with a gateway key.

Run beside a gateway (demo mode works, see README.md in this folder):

    GATEWAY_URL=http://127.0.0.1:8000 GATEWAY_KEY=sgw-... python examples/browser/backend.py

The key stays here; the page only ever sees short-lived tokens. Standard library only.
"""

from __future__ import annotations

import json
import os
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).parent
GATEWAY_URL = os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000").rstrip("/")
GATEWAY_KEY = os.environ.get("GATEWAY_KEY", "")
PORT = int(os.environ.get("PORT", "8080"))


def mint_token() -> bytes:
    """A token for one page: 15 minutes, at most 3 tasks."""
    request = urllib.request.Request(
        f"{GATEWAY_URL}/gateway/v1/tokens",
        data=json.dumps({"ttl_seconds": 900, "max_tasks": 3, "label": "example page"}).encode(),
        headers={"Authorization": f"Bearer {GATEWAY_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (our own gateway)
        return bytes(answer.read())


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path in ("/", "/index.html"):
            page = (HERE / "index.html").read_text().replace("{{GATEWAY_URL}}", GATEWAY_URL)
            self._send(200, "text/html; charset=utf-8", page.encode())
        else:
            self._send(404, "text/plain", b"not found")

    def do_POST(self) -> None:
        if self.path != "/token":
            self._send(404, "text/plain", b"not found")
            return
        # A real backend would check its own user's session here before minting.
        self._send(200, "application/json", mint_token())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    print(f"example page on http://127.0.0.1:{PORT} (gateway {GATEWAY_URL})", flush=True)
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
