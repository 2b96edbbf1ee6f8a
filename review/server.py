"""The review console's HTTP server: the standard library's ``http.server``, on loopback only.

Why no web framework: the page is one HTML file, one script and one style sheet, and the API is
three JSON calls; ``ThreadingHTTPServer`` serves that with no new dependency (nothing more to pin,
audit or keep patched) and every security rule is visible in this one file:

* **Host check**: requests must name the address the server is bound to (or ``localhost``), so a
  web page elsewhere cannot reach it through DNS rebinding.
* **CSRF**: every state-changing request (POST) carries the page's token in ``X-CSRF-Token``
  (compared in constant time) with a JSON body; a cross-site form can set neither. ``Origin``,
  when the browser sends it, must be this server.
* **No markup from data**: the page builds its DOM with ``textContent`` only, and the
  Content-Security-Policy allows scripts and images from this server alone (no inline script), so
  a key or label with HTML in it stays text.
* **Loopback only.** The server refuses to bind anything but a loopback address: it has no login
  of its own. A reviewer on another machine reaches it through SSH port forwarding
  (``ssh -L 8765:127.0.0.1:8765 host``), which authenticates with SSH keys, a mechanism far better
  kept than anything this file could add; on the machine itself, whoever can run the console has
  the operator's AWS credentials anyway.
* **Photos** are the console's own JPEG previews of photos it holds, by an opaque id; no route
  signs or fetches a key a caller names, and images come from this server alone.
* **Requests a browser would never send** (no or a bad ``Content-Length``, a body over 16 KiB,
  JSON nested deeper than a few levels) get a 4xx answer, and every connection has a timeout, so
  a slow or broken client cannot hold a thread.
* Nothing is cached; the page cannot be framed; no referrer leaves it.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import logging
import threading
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Final
from urllib.parse import urlsplit

from contracts.image import ImageRejected
from review.console import BadRequest, Console, NotHeld

LOOPBACK: Final[str] = "127.0.0.1"
DEFAULT_PORT: Final[int] = 8765
CSRF_HEADER: Final[str] = "X-CSRF-Token"
_MAX_BODY: Final[int] = 16 * 1024
# The page's JSON is an object of strings and booleans: two levels are plenty.
_MAX_DEPTH: Final[int] = 4
# Seconds a connection may sit idle mid-request (socket timeout of each handler).
CONNECTION_TIMEOUT: Final[float] = 15.0
_STATIC: Final[dict[str, tuple[str, str]]] = {
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}
logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_body(raw: bytes) -> Any:
    """The JSON of a request; ``ValueError`` for anything that is not small, flat JSON."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:  # nesting is checked before json.loads can recurse into it
        if in_string:
            escaped = not escaped and byte == 0x5C
            in_string = escaped or byte != 0x22
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    if deepest > _MAX_DEPTH:
        raise ValueError("JSON nested too deep")
    return json.loads(raw)


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
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        if not is_loopback(host):
            raise ValueError(
                f"the review console serves loopback only, not {host}: reach it from another "
                "machine with `ssh -L 8765:127.0.0.1:8765 <host>`"
            )
        super().__init__((host, port), ReviewHandler)
        self.console = console
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
    timeout = CONNECTION_TIMEOUT

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
            self._json(HTTPStatus.OK, self.server.console.queue())
        elif url.path.startswith("/api/photo/"):
            try:
                preview = self.server.console.photo(url.path.removeprefix("/api/photo/"))
            except NotHeld as error:
                self._json(HTTPStatus.NOT_FOUND, {"error": str(error)})
            except ImageRejected as error:
                self._json(HTTPStatus.UNPROCESSABLE_ENTITY, {"error": error.reason})
            else:
                self._send(HTTPStatus.OK, preview, "image/jpeg")
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
            # Also what a tab from before a console restart gets: the page stops and says reload.
            self._json(
                HTTPStatus.FORBIDDEN, {"error": "missing or wrong CSRF token", "reload": True}
            )
            return
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc not in self.server.allowed_hosts:
            self._json(HTTPStatus.FORBIDDEN, {"error": "cross-origin request"})
            return
        if self.headers.get_content_type() != "application/json":
            self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "send JSON"})
            return
        declared = self.headers.get("Content-Length", "")
        if not declared.isdigit():
            self.close_connection = True  # the body's end is unknown: nothing more to read
            self._json(HTTPStatus.LENGTH_REQUIRED, {"error": "a Content-Length is required"})
            return
        length = int(declared)
        if not 0 < length <= _MAX_BODY:
            self.close_connection = True
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body size"})
            return
        try:
            body = parse_body(self.rfile.read(length))
            self._json(HTTPStatus.OK, action(body))
        except NotHeld as error:
            # A page older than this console (a restart): it must reload, not go on.
            self._json(HTTPStatus.CONFLICT, {"error": str(error), "reload": True})
        except (ValueError, BadRequest) as error:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
        except Exception as error:  # an AWS error: answered, logged, the page says so
            logger.exception("review request failed")
            self._json(HTTPStatus.BAD_GATEWAY, {"error": f"{type(error).__name__}: {error}"})

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
            "img-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'",
        )
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the page went away (a preload cut short): nothing to do

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)
