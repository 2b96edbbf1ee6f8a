"""The review console's HTTP server: the standard library's ``http.server``, on loopback.

Why no web framework: the page is one HTML file, one script and one style sheet, and the API is
three JSON calls; ``ThreadingHTTPServer`` serves that with no new dependency (nothing more to pin,
audit or keep patched) and every security rule is visible in this one file:

* **Host check**: requests must name the address the server is bound to (or ``localhost``), so a
  web page elsewhere cannot reach it through DNS rebinding.
* **CSRF**: every state-changing request (POST) carries the page's token in ``X-CSRF-Token``
  (compared in constant time) with a JSON body; a cross-site form can set neither. ``Origin``,
  when the browser sends it, must be this server.
* **No markup from data**: the page builds its DOM with ``textContent`` only, and the
  Content-Security-Policy allows scripts from this server alone (no inline script) and images only
  from the S3 endpoint the presigned URLs point at, so a key or label with HTML in it stays text.
* Nothing is cached; the page cannot be framed; no referrer leaves it.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import threading
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from review.console import BadRequest, Console

LOOPBACK: Final[str] = "127.0.0.1"
DEFAULT_PORT: Final[int] = 8765
CSRF_HEADER: Final[str] = "X-CSRF-Token"
_MAX_BODY: Final[int] = 16 * 1024
_STATIC: Final[dict[str, tuple[str, str]]] = {
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}
logger = logging.getLogger(__name__)


def _asset(name: str) -> bytes:
    return resources.files("review").joinpath("static", name).read_bytes()


class ReviewServer(ThreadingHTTPServer):
    """A threading HTTP server bound to ``host:port`` that serves one :class:`Console`."""

    daemon_threads = True

    def __init__(
        self,
        console: Console,
        *,
        host: str = LOOPBACK,
        port: int = DEFAULT_PORT,
        image_origin: str,
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        super().__init__((host, port), ReviewHandler)
        self.console = console
        self.image_origin = image_origin
        bound_port = self.server_address[1]
        self.allowed_hosts = {
            f"{name}:{bound_port}" for name in (host, "127.0.0.1", "localhost", "[::1]")
        } | {f"{name}:{bound_port}" for name in allowed_hosts}
        self.page = (
            _asset("index.html")
            .decode()
            .replace("{{csrf_token}}", html.escape(console.csrf_token, quote=True))
            .encode()
        )

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="review-console", daemon=True)
        thread.start()
        return thread


class ReviewHandler(BaseHTTPRequestHandler):
    server: ReviewServer
    server_version = "momee-review"
    sys_version = ""

    # -------------------------------------------------------------------------------- GET ---

    def do_GET(self) -> None:
        if not self._host_allowed():
            return
        url = urlsplit(self.path)
        if url.path == "/":
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif url.path in _STATIC:
            name, content_type = _STATIC[url.path]
            self._send(HTTPStatus.OK, _asset(name), content_type)
        elif url.path == "/api/queue":
            limit = parse_qs(url.query).get("limit", ["12"])[0]
            try:
                self._json(HTTPStatus.OK, self.server.console.queue(int(limit)))
            except ValueError:
                self._json(HTTPStatus.BAD_REQUEST, {"error": "limit is a number"})
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    # ------------------------------------------------------------------------------- POST ---

    def do_POST(self) -> None:
        if not self._host_allowed():
            return
        actions = {"/api/decide": self.server.console.decide, "/api/undo": self.server.console.undo}
        action = actions.get(urlsplit(self.path).path)
        if action is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        token = self.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(token.encode(), self.server.console.csrf_token.encode()):
            self._json(HTTPStatus.FORBIDDEN, {"error": "missing or wrong CSRF token"})
            return
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc not in self.server.allowed_hosts:
            self._json(HTTPStatus.FORBIDDEN, {"error": "cross-origin request"})
            return
        if self.headers.get_content_type() != "application/json":
            self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "send JSON"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= _MAX_BODY:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "body size"})
            return
        try:
            body = json.loads(self.rfile.read(length))
            self._json(HTTPStatus.OK, action(body))
        except (ValueError, BadRequest, AttributeError) as error:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(error)})

    # ---------------------------------------------------------------------------- helpers ---

    def _host_allowed(self) -> bool:
        if self.headers.get("Host", "") in self.server.allowed_hosts:
            return True
        self._json(HTTPStatus.MISDIRECTED_REQUEST, {"error": "unexpected Host header"})
        return False

    def _json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        # "<", ">" and "&" as \u escapes too: the JSON is inert even if something sniffs it as HTML.
        text = json.dumps(payload, ensure_ascii=True)
        body = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()
        self._send(status, body, "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            f"img-src {self.server.image_origin}; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'",
        )
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)
